//! RMSNorm as Hugging Face writes it in eager PyTorch: not a fused kernel but five ops, each
//! with its own saved tensors. Autocast has no rule for any of them (pow and rsqrt are on its
//! fp32 list, and their inputs are fp32 already), so dtypes follow type promotion.
//!
//! LlamaRMSNorm (Llama, Mistral, Qwen2):
//! ```python
//! input_dtype = hidden_states.dtype
//! hidden_states = hidden_states.to(torch.float32)          # a copy unless already fp32
//! variance = hidden_states.pow(2).mean(-1, keepdim=True)   # PowBackward saves the fp32 input
//! hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
//!                                                          # saves the input and rsqrt's result
//! return self.weight * hidden_states.to(input_dtype)       # saves the normalized cast
//! ```
//! GemmaRMSNorm: `output = self._norm(x.float()); output = output * (1.0 + self.weight.float());
//! return output.type_as(x)` — the weight multiplies in fp32, so the fp32 normalized tensor and
//! `1 + weight` are what the last multiply keeps.
//!
//! So with an fp32 input an RMSNorm keeps its input (shared with the residual), the (B, T, 1)
//! rsqrt and a full (B, T, C) fp32 normalized tensor — one more full tensor than
//! `F.layer_norm`, which keeps only input, mean and rstd.

use super::pointwise::promote;
use super::{Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmsStyle {
    /// `weight * x.to(input_dtype)` (LlamaRMSNorm).
    Llama,
    /// `(x * (1 + weight)).type_as(x)` in fp32 (GemmaRMSNorm).
    Gemma,
    /// `(weight * x).to(input_dtype)` in fp32 (Olmo2RMSNorm, modeling_olmo2.py): Gemma's
    /// tensors without `1 + weight` (the fp32 weight multiplies as it is).
    Olmo2,
}

/// What the norm's nodes keep, and what the backward needs to replay them.
#[derive(Debug, Clone, Copy)]
pub struct RmsSaved {
    style: RmsStyle,
    /// Where the input's gradient goes: the two parts (through the multiply, through pow)
    /// arrive at different times.
    x_edge: Edge,
    x32: T,
    rstd: T,
    /// Llama: the normalized tensor cast back to the input dtype; Gemma: the fp32 one. Kept
    /// for the weight's gradient only.
    normed: Option<T>,
    /// Gemma: `1 + weight` (C,) in fp32.
    wplus: Option<T>,
    in_dtype: DType,
    out_dtype: DType,
    w_dtype: DType,
    shape: Shape,
    c: u64,
    name: Name,
}

fn stat_shape(shape: Shape) -> Shape {
    let d = shape.dims();
    let mut s = [1u64; 4];
    s[..d.len()].copy_from_slice(d);
    s[d.len() - 1] = 1;
    Shape::new(&s[..d.len()])
}

/// RMSNorm over the last dimension with weight parameter `w`.
pub fn rms_norm(e: &mut Engine, x: V, w: usize, style: RmsStyle, name: Name) -> V {
    let shape = e.record(x.t).shape;
    rms_norm_as(e, x, shape, w, style, name)
}

/// RMSNorm of `x` viewed as `shape` (the same elements: Qwen3 normalizes `q.view(B, T, nh, hd)`
/// over head_dim), over that shape's last dimension.
pub fn rms_norm_as(e: &mut Engine, x: V, shape: Shape, w: usize, style: RmsStyle, name: Name) -> V {
    let d = e.record(x.t).dtype;
    let c = *shape.dims().last().unwrap_or(&1);
    let stat = stat_shape(shape);
    let wv = e.param(w);
    let w_dtype = e.dtype(wv.t);
    let record = e.grad_mode && (x.edge != Edge::None || wv.edge != Edge::None);
    let w_grad = record && wv.edge != Edge::None;
    let act = Category::Activations;
    let nm = |what| Name { what, ..name };

    // x.to(torch.float32): the input itself when it is fp32 already.
    let x32 = if d == DType::F32 {
        e.retain(x.t);
        x.t
    } else {
        e.alloc(nm("input_fp32"), shape, DType::F32, act)
    };
    let pow = e.alloc(nm("pow"), shape, DType::F32, act);
    let var = e.alloc(nm("variance"), stat, DType::F32, act);
    e.release(pow);
    let var_eps = e.alloc(nm("variance_eps"), stat, DType::F32, act);
    let rstd = e.alloc(nm("rstd"), stat, DType::F32, act);
    e.release(var_eps);
    let normed = e.alloc(nm("normed"), shape, DType::F32, act);
    if !record {
        e.release(rstd);
        e.release(x32);
    }
    let (out, kept, wplus, out_dtype) = match style {
        RmsStyle::Llama => llama_affine(e, name, shape, (d, w_dtype), [normed, var], w_grad),
        RmsStyle::Gemma | RmsStyle::Olmo2 => gemma_affine(
            e,
            name,
            (shape, c),
            style,
            d,
            [normed, var],
            [record, w_grad],
        ),
    };
    if !record {
        return V {
            t: out,
            edge: Edge::None,
        };
    }
    let saved = RmsSaved {
        style,
        x_edge: x.edge,
        x32,
        rstd,
        normed: kept,
        wplus,
        in_dtype: d,
        out_dtype,
        w_dtype,
        shape,
        c,
        name: nm("grad"),
    };
    // The input's gradient is delivered by the node itself (in two parts); the edge is kept
    // here so that the node counts as needing a gradient.
    let edge = e.push_node(Op::RmsNorm(saved), [x.edge, wv.edge, Edge::None]);
    V { t: out, edge }
}

/// What an RMSNorm's affine part returns: the output, the normalised input kept for the
/// weight's gradient, Gemma's kept `1 + weight`, the output's dtype.
type Affine = (T, Option<T>, Option<T>, DType);

/// LlamaRMSNorm: `hidden_states.to(input_dtype)`, then `weight * that`.
fn llama_affine(
    e: &mut Engine,
    name: Name,
    shape: Shape,
    (d, w_dtype): (DType, DType),
    [normed, var]: [T; 2],
    w_grad: bool,
) -> Affine {
    let nm = |what| Name { what, ..name };
    let cast = if d == DType::F32 {
        e.retain(normed);
        normed
    } else {
        e.alloc(nm("normed_cast"), shape, d, Category::Activations)
    };
    let out_dtype = promote(w_dtype, d);
    let out = e.alloc(name, shape, out_dtype, Category::Activations);
    let kept = if w_grad {
        Some(cast)
    } else {
        e.release(cast);
        None
    };
    // `variance` and the rebound `hidden_states` are locals until the return.
    e.release(normed);
    e.release(var);
    (out, kept, None, out_dtype)
}

/// Gemma's and Olmo2's: `_norm` returns; then `output * (1.0 + self.weight.float())` (Olmo2:
/// `self.weight * output`), then `.type_as(x)` (Olmo2: `.to(input_dtype)`).
fn gemma_affine(
    e: &mut Engine,
    name: Name,
    (shape, c): (Shape, u64),
    style: RmsStyle,
    d: DType,
    [normed, var]: [T; 2],
    [record, w_grad]: [bool; 2],
) -> Affine {
    let act = Category::Activations;
    let nm = |what| Name { what, ..name };
    e.release(var);
    let wplus = (style == RmsStyle::Gemma)
        .then(|| e.alloc(nm("weight_plus_one"), Shape::new(&[c]), DType::F32, act));
    let out32 = e.alloc(nm("out_fp32"), shape, DType::F32, act);
    let wplus = if record {
        wplus
    } else {
        if let Some(w) = wplus {
            e.release(w);
        }
        None
    };
    let kept = if w_grad {
        Some(normed)
    } else {
        e.release(normed);
        None
    };
    let out = if d == DType::F32 {
        out32
    } else {
        let o = e.alloc(name, shape, d, act);
        e.release(out32);
        o
    };
    (out, kept, wplus, d)
}

impl RmsSaved {
    fn named(&self, what: &'static str) -> Name {
        Name { what, ..self.name }
    }
}

impl Backward for RmsSaved {
    /// The backward of the five ops, in autograd's order (last op first).
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let (gh, gw) = match self.style {
            RmsStyle::Llama => llama_affine_backward(e, g, self),
            RmsStyle::Gemma | RmsStyle::Olmo2 => gemma_affine_backward(e, g, self),
        };
        let gx = input_backward(e, gh, self);
        [gx, gw, None]
    }

    fn release_saved(self, e: &mut Engine) {
        for t in [Some(self.x32), Some(self.rstd), self.normed, self.wplus]
            .into_iter()
            .flatten()
        {
            e.release(t);
        }
    }
}

/// The broadcast weight's gradient, reduced to (C,) after the node returns, in the dtype of
/// the full-size gradient (the weight's for Llama, fp32 for Gemma's `weight.float()`).
fn weight_grad(e: &mut Engine, s: &RmsSaved, full: T) -> T {
    let gw = e.alloc(
        s.named("weight.grad"),
        Shape::new(&[s.c]),
        e.dtype(full),
        Category::Gradients,
    );
    e.release(full);
    gw
}

/// `weight * cast`: the weight's full-size gradient, then the cast's (grad * weight, promoted,
/// then back to the cast's dtype), then ToCopyBackward of `.to(input_dtype)` back to fp32.
/// Returns (the normalised input's gradient, the weight's).
fn llama_affine_backward(e: &mut Engine, g: T, s: RmsSaved) -> (T, Option<T>) {
    let act = Category::Activations;
    let gw_full = s
        .normed
        .map(|_| e.alloc(s.named("weight.grad"), s.shape, s.w_dtype, act));
    let mut gc = e.alloc(
        s.named("normed.grad"),
        s.shape,
        promote(s.out_dtype, s.w_dtype),
        act,
    );
    if s.in_dtype != e.dtype(gc) {
        let c = e.alloc(s.named("normed.grad"), s.shape, s.in_dtype, act);
        e.release(gc);
        gc = c;
    }
    let gw = gw_full.map(|full| weight_grad(e, &s, full));
    e.release(g);
    if let Some(t) = s.normed {
        e.release(t);
    }
    if s.in_dtype != DType::F32 {
        let c = e.alloc(s.named("normed.grad"), s.shape, DType::F32, act);
        e.release(gc);
        gc = c;
    }
    (gc, gw)
}

/// Gemma's and Olmo2's: ToCopyBackward of `.type_as(x)`, the multiply's two gradients in fp32,
/// then ToCopyBackward of `self.weight.float()` back to a half weight's dtype (pure).
fn gemma_affine_backward(e: &mut Engine, mut g: T, s: RmsSaved) -> (T, Option<T>) {
    let (act, f32) = (Category::Activations, DType::F32);
    if s.out_dtype != f32 {
        let c = e.alloc(s.named("out.grad"), s.shape, f32, act);
        e.release(g);
        g = c;
    }
    let gn = e.alloc(s.named("normed.grad"), s.shape, f32, act);
    let gw_full = s
        .normed
        .map(|_| e.alloc(s.named("weight.grad"), s.shape, f32, act));
    let mut gw = gw_full.map(|full| weight_grad(e, &s, full));
    if let Some(w32) = gw.filter(|_| s.w_dtype != f32) {
        let w = e.alloc(
            s.named("weight.grad"),
            Shape::new(&[s.c]),
            s.w_dtype,
            Category::Gradients,
        );
        e.release(w32);
        gw = Some(w);
    }
    e.release(g);
    for t in [s.normed, s.wplus].into_iter().flatten() {
        e.release(t);
    }
    (gn, gw)
}

/// `x32 * rsqrt(pow(x32, 2).mean(-1) + eps)` backward, then the input cast's: the gradient
/// through the multiply is delivered first, the one through pow is returned.
fn input_backward(e: &mut Engine, gh: T, s: RmsSaved) -> Option<T> {
    let act = Category::Activations;
    let f32 = DType::F32;
    let stat = stat_shape(s.shape);
    // MulBackward0: x32's part (grad * rstd), then rstd's (grad * x32, reduced to (B, T, 1)).
    let ga = e.alloc(s.named("input.grad"), s.shape, f32, act);
    let gr_full = e.alloc(s.named("rstd.grad"), s.shape, f32, act);
    let gr = e.alloc(s.named("rstd.grad"), stat, f32, act);
    e.release(gr_full);
    e.release(gh);
    // Into x32's gradient buffer: the input's own when it was fp32, else the cast's.
    let mut acc = None;
    if s.in_dtype == f32 {
        e.deliver(s.x_edge, ga);
    } else {
        acc = Some(ga);
    }
    // RsqrtBackward (keeps its result), AddBackward, MeanBackward (expand / C).
    let gv = e.alloc(s.named("variance.grad"), stat, f32, act);
    e.release(gr);
    e.release(s.rstd);
    let gm = e.alloc(s.named("pow.grad"), s.shape, f32, act);
    e.release(gv);
    // PowBackward: grad * (2 * x32.pow(1)).
    let p1 = e.alloc(s.named("pow_backward"), s.shape, f32, act);
    let p2 = e.alloc(s.named("pow_backward"), s.shape, f32, act);
    e.release(p1);
    let gb = e.alloc(s.named("input.grad"), s.shape, f32, act);
    e.release(p2);
    e.release(gm);
    e.release(s.x32);
    match acc {
        None => Some(gb),
        Some(ga) => {
            // Added in place into the buffer, then ToCopyBackward of `.to(float32)`.
            e.release(gb);
            let gx = e.alloc(s.named("input.grad"), s.shape, s.in_dtype, act);
            e.release(ga);
            Some(gx)
        }
    }
}
