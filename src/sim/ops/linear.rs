//! `nn.Linear` as `addmm` (with bias) or `mm` (without), under CUDA autocast or in fp32.
//!
//! Autocast casts the input, the weight and the bias to the half dtype, in that order. Casts
//! of parameters are cached until the autocast region ends (so a weight's bf16 copy lives
//! through the whole forward); the input's cast is a temporary that only the backward keeps.

use super::pointwise::ToCopySaved;
use super::{save, Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::sac::SacOp;
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone, Copy)]
pub struct LinearSaved {
    /// The matmul's input as it was multiplied (the bf16 cast under autocast); saved only
    /// when the weight needs a gradient (a frozen weight's matmul keeps no input).
    pub x: Option<T>,
    /// The weight as it was multiplied (the cached cast, or the parameter itself); saved only
    /// when the input needs a gradient.
    pub w: Option<T>,
    pub m: u64,
    pub k: u64,
    pub n: u64,
    pub dtype: DType,
    pub bias: bool,
    /// Weight gradients of a weight used as stored (fp32 without autocast, bf16 under bf16
    /// autocast) come out of mm as transposed views: autograd adds into them out of place.
    pub direct_param_grad: bool,
    /// Which gradients the backward computes (PyTorch's task_should_compute_output).
    pub need_x: bool,
    pub need_w: bool,
    pub need_b: bool,
    pub name: Name,
}

/// Cast a tensor under autocast; the cast of a parameter goes into the region's cache —
/// only a leaf that requires grad (autocast's `cached_cast` rule): a frozen fp32 weight (QLoRA's
/// lm_head) is cast again at each use, a temporary like an input's cast.
pub(super) fn cast(e: &mut Engine, x: V, to: DType, param: Option<usize>, name: Name) -> V {
    // Compiled graphs trace each cast as a node of their own: no cache keeps the copy (fusion.rs).
    let cached = param.filter(|&p| e.params[p].requires_grad && !e.compiled());
    if let Some(p) = cached {
        if let Some(t) = e.cached_cast(p) {
            e.retain(t);
            // A cache hit still records a ToCopy node in PyTorch only on the first cast;
            // reuse the edge of the cached cast by recording a pass-through.
            return V { t, edge: x.edge };
        }
    }
    let r = *e.record(x.t);
    let category = if param.is_some() {
        Category::AutocastCopies
    } else {
        Category::Activations
    };
    let t = super::fusion::pointwise_out(e, name, r.shape, to, category, &[x.t]);
    if let Some(p) = cached {
        e.cache_insert(p, t);
    }
    let grad_category = if param.is_some() {
        Category::Gradients
    } else {
        r.category
    };
    let edge = e.push_node(
        Op::ToCopy(ToCopySaved {
            from: r.dtype,
            shape: r.shape,
            name: Name {
                what: "grad",
                ..r.name
            },
            category: grad_category,
        }),
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// The matmul's operands as autocast hands them over: the input cast to the half dtype (a
/// temporary), the weight and bias through the region's cache, or as stored when already half
/// (a frozen bf16 base); without autocast the tensors themselves. Each comes with a reference
/// of the caller's, and the dtype the matmul runs in.
fn operands(
    e: &mut Engine,
    x: V,
    (w, wv): (usize, V),
    bias: Option<(usize, V)>,
    name: impl Fn(&'static str) -> Name,
) -> (V, V, Option<V>, DType) {
    let Some(half) = e.autocast else {
        e.retain(x.t);
        e.retain(wv.t);
        let bm = bias.map(|(_, bv)| bv);
        if let Some(bv) = bm {
            e.retain(bv.t);
        }
        return (x, wv, bm, e.dtype(x.t));
    };
    let xm = if e.dtype(x.t) == half {
        e.retain(x.t);
        x
    } else {
        cast(e, x, half, None, name("input_cast"))
    };
    let param_cast = |e: &mut Engine, v: V, p: usize, what| {
        if e.dtype(v.t) == half {
            e.retain(v.t);
            v
        } else {
            cast(e, v, half, Some(p), name(what))
        }
    };
    let wm = param_cast(e, wv, w, "weight_cast");
    let bm = bias.map(|(b, bv)| param_cast(e, bv, b, "bias_cast"));
    (xm, wm, bm, half)
}

/// nn.Linear keeps the input's leading dims: (B, T, K) -> (B, T, N); the matmul itself works
/// on the (M, K) view. Compiled, the buffer is inductor's 2-D mm output
/// (`empty_strided_cuda((M, N), ...)`), which the graph reinterprets as (B, T, N): the shape an
/// OOM in it prints.
fn out_shape(e: &Engine, x: T, [m, k, n]: [u64; 3]) -> Shape {
    match e.shape(x).dims() {
        [b, t, kk] if *kk == k && !e.compiled() => Shape::new(&[*b, *t, n]),
        _ => Shape::new(&[m, n]),
    }
}

/// The matmul's output (the lm_head's is the logits). Under torchtitan's op policy
/// (sim::sac) a kept matmul's output comes back from the checkpoint's storage in the
/// recomputation. With a bias, F.linear is addmm (aten/src/ATen/native/Linear.cpp `linear`,
/// `_flatten_nd_linear` for 3-D inputs).
fn alloc_out(
    e: &mut Engine,
    shape: Shape,
    dtype: DType,
    (bias, output): (bool, Output),
    name: impl Fn(&'static str) -> Name,
) -> T {
    let sac_op = if bias {
        SacOp::ComputeIntensive
    } else {
        SacOp::Mm
    };
    let (what, category) = match output {
        Output::Logits => ("logits", Category::Logits),
        Output::Activation => ("out", Category::Activations),
    };
    e.sac_output(sac_op, |e| e.alloc(name(what), shape, dtype, category))
}

/// What a linear's output is, as the report groups memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Activation,
    /// The lm_head's: the logits, which the loss chain reads.
    Logits,
}

/// y = x W^T + b for x of shape (..., K) viewed as (M, K); the output is (M, N).
pub fn linear(
    e: &mut Engine,
    x: V,
    w: usize,
    b: Option<usize>,
    layer: Option<u32>,
    module: &'static str,
) -> V {
    linear_to(e, x, (w, b), (layer, module), Output::Activation)
}

/// The lm_head: `linear` on the weight `w` (no bias) whose output is the logits
/// (`lm_head.logits`).
pub fn lm_head(e: &mut Engine, x: V, w: usize) -> V {
    linear_to(e, x, (w, None), (None, "lm_head"), Output::Logits)
}

fn linear_to(
    e: &mut Engine,
    x: V,
    (w, b): (usize, Option<usize>),
    (layer, module): (Option<u32>, &'static str),
    output: Output,
) -> V {
    // The input is viewed as (M, in_features): e.g. attention's (B, nh, T, hs) output.
    let (n, k) = (e.params[w].shape.dims()[0], e.params[w].shape.dims()[1]);
    let m = e.shape(x.t).numel().unwrap_or(0) / k.max(1);
    let wv = e.param(w);
    let bv = b.map(|b| e.param(b));

    let name = |what| Name::at(layer, module, what);
    let (xm, wm, bm, dtype) = operands(e, x, (w, wv), b.zip(bv), name);
    let out_shape = out_shape(e, x.t, [m, k, n]);
    // The kernel's operands: fused casts are written into buffers for it (fusion.rs). The
    // backward's matmuls need the same operands, so those buffers are what autograd saves —
    // AOTAutograd's partitioner too: it will not recompute a value its backward would have to
    // materialise anyway (partitioners.py, `should_ban_recomputation`,
    // `ban_recompute_materialized_backward`).
    let (xo, wo) = (e.materialise(xm.t), e.materialise(wm.t));
    let bo = bm.map(|b| e.materialise(b.t));
    let out = alloc_out(e, out_shape, dtype, (b.is_some(), output), name);
    e.matmul_workspace();
    let (need_x, need_w) = (xm.edge != Edge::None, wm.edge != Edge::None);
    let saved = LinearSaved {
        x: need_w.then(|| save(e, xo)),
        w: need_x.then(|| save(e, wo)),
        m,
        k,
        n,
        dtype,
        bias: b.is_some(),
        direct_param_grad: wm.t == wv.t,
        need_x,
        need_w,
        need_b: bm.is_some_and(|v| v.edge != Edge::None),
        name: Name::at(layer, module, "grad"),
    };
    let edge = e.push_node(
        Op::Linear(saved),
        [xm.edge, wm.edge, bm.map_or(Edge::None, |v| v.edge)],
    );
    // The operands and the casts were temporaries of this call (the cache and the saved
    // tensors keep theirs).
    for t in [Some(xo), Some(wo), bo].into_iter().flatten() {
        e.release(t);
    }
    e.release(xm.t);
    e.release(wm.t);
    if let Some(bm) = bm {
        e.release(bm.t);
    }
    V { t: out, edge }
}

impl Backward for LinearSaved {
    /// AddmmBackward: grad input, grad weight, grad bias. MmBackward: grad weight first.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        // The incoming gradient is the matmuls' operand: a fused one (a cast of the residual
        // stream's gradient, compiled) is written into a buffer first.
        let g_op = e.materialise(g);
        e.release(g);
        let g = g_op;
        let wcat = if self.direct_param_grad {
            Category::Gradients
        } else {
            Category::Activations
        };
        let name = |what| Name { what, ..self.name };
        let x_shape = Shape::new(&[self.m, self.k]);
        let w_shape = Shape::new(&[self.n, self.k]);
        let (gx, gw, gb);
        let alloc = |e: &mut Engine, need: bool, what, shape, cat| {
            need.then(|| e.alloc(name(what), shape, self.dtype, cat))
        };
        if self.bias {
            gx = alloc(e, self.need_x, "input.grad", x_shape, Category::Activations);
            e.matmul_workspace();
            gw = alloc(e, self.need_w, "weight.grad", w_shape, wcat);
            gb = alloc(e, self.need_b, "bias.grad", Shape::new(&[1, self.n]), wcat);
        } else {
            gw = alloc(e, self.need_w, "weight.grad", w_shape, wcat);
            e.matmul_workspace();
            gx = alloc(e, self.need_x, "input.grad", x_shape, Category::Activations);
            gb = None;
        }
        if let Some(gw) = gw.filter(|_| self.direct_param_grad) {
            e.mark_no_inplace(gw);
        }
        e.release(g);
        // AddmmBackward lets go of mat1 then mat2; MmBackward of the weight first.
        let order = if self.bias {
            [self.x, self.w]
        } else {
            [self.w, self.x]
        };
        for t in order.into_iter().flatten() {
            e.release(t);
        }
        [gx, gw, gb]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [self.x, self.w, None]
    }
}
