//! Pointwise ops of the Hugging Face decoders: SiLU, the gate × up product of a gated MLP,
//! Gemma's embedding scale, and the head views around attention whose backward copies.
//!
//! No autocast rule covers these: their output dtype is PyTorch's type promotion of the inputs.

use super::{save, Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// PyTorch's type promotion of two floating dtypes: equal stays, anything mixed is fp32
/// (bf16 with fp16 promotes to fp32 as well).
pub fn promote(a: DType, b: DType) -> DType {
    if a == b {
        a
    } else {
        DType::F32
    }
}

/// `F.silu(x)`: SiluBackward keeps its input; the output has the input's dtype.
pub fn silu(e: &mut Engine, x: V, name: Name) -> V {
    super::basic::activation(e, x, name)
}

/// SiLU of a chunk of `x` (Phi-3's `gate` half of gate_up_proj's output), shaped `shape`.
pub fn silu_as(e: &mut Engine, x: V, shape: Shape, name: Name) -> V {
    super::basic::activation_as(e, x, shape, name)
}

/// `torch.tanh(x)` (Gemma 2's soft-capping): TanhBackward keeps its *result*
/// (tools/autograd/derivatives.yaml, `self: tanh_backward(grad, result)`) and allocates a
/// gradient of x's shape and dtype. Not on autocast's lists: the output has x's dtype.
pub fn tanh(e: &mut Engine, x: V, name: Name) -> V {
    result_saving(e, x, name)
}

/// `F.sigmoid(x)` (Qwen2-MoE's shared expert gate): SigmoidBackward0 keeps its result
/// (derivatives.yaml `self: sigmoid_backward(grad, result)`), as tanh does; not on autocast's
/// lists either.
pub fn sigmoid(e: &mut Engine, x: V, name: Name) -> V {
    result_saving(e, x, name)
}

/// A pointwise op whose backward reads its output: the output in x's shape and dtype, kept;
/// the backward allocates one gradient of that shape.
fn result_saving(e: &mut Engine, x: V, name: Name) -> V {
    let r = *e.record(x.t);
    let t = e.alloc(name, r.shape, r.dtype, Category::Activations);
    let kept = save(e, t);
    let edge = e.push_node(
        Op::Activation(super::basic::ActivationSaved {
            x: kept,
            shape: r.shape,
            name: Name {
                what: "grad",
                ..name
            },
        }),
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// What `a * b` kept: each input is saved for the other's gradient when that one needs it.
#[derive(Debug, Clone, Copy)]
pub struct MulSaved {
    pub a: Option<T>,
    pub b: Option<T>,
    pub a_dtype: DType,
    pub b_dtype: DType,
    pub shape: Shape,
    pub name: Name,
}

impl Backward for MulSaved {
    /// MulBackward0: self's gradient (grad × other), then other's (grad × self), each in its
    /// input's dtype.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let (shape, name) = (self.shape, self.name);
        let ga = self
            .b
            .map(|_| e.alloc(name, shape, self.a_dtype, Category::Activations));
        let gb = self
            .a
            .map(|_| e.alloc(name, shape, self.b_dtype, Category::Activations));
        e.release(g);
        self.release_saved(e);
        [ga, gb, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [self.a, self.b, None]
    }
}

/// `a * b` for tensors of one shape (the SwiGLU product `act_fn(gate) * up`).
pub fn mul(e: &mut Engine, a: V, b: V, name: Name) -> V {
    let shape = e.record(a.t).shape;
    mul_as(e, a, b, shape, name)
}

/// `a * b` where the operands are viewed as `shape` (one may be a chunk of a larger storage,
/// Phi-3's `up` half).
pub fn mul_as(e: &mut Engine, a: V, b: V, shape: Shape, name: Name) -> V {
    let (ra, rb) = (*e.record(a.t), *e.record(b.t));
    let t = e.alloc(
        name,
        shape,
        promote(ra.dtype, rb.dtype),
        Category::Activations,
    );
    // MulBackward0 saves `other` when self needs a gradient, `self` when other does.
    let sa = (b.edge != Edge::None).then(|| save(e, a.t));
    let sb = (a.edge != Edge::None).then(|| save(e, b.t));
    let saved = MulSaved {
        a: sa.filter(|_| e.grad_mode),
        b: sb.filter(|_| e.grad_mode),
        a_dtype: ra.dtype,
        b_dtype: rb.dtype,
        shape,
        name: Name {
            what: "grad",
            ..name
        },
    };
    let edge = e.push_node(Op::Mul(saved), [a.edge, b.edge, Edge::None]);
    V { t, edge }
}

/// `x * s` with `s` a 0-dim tensor that needs no gradient (Gemma's `inputs_embeds *
/// normalizer`): MulBackward0 keeps the scalar only.
pub fn scale(e: &mut Engine, x: V, name: Name) -> V {
    let r = *e.record(x.t);
    let s = e.alloc(
        Name {
            what: "normalizer",
            ..name
        },
        Shape::scalar(),
        r.dtype,
        Category::Other,
    );
    let t = e.alloc(name, r.shape, r.dtype, Category::Activations);
    let ss = save(e, s);
    let edge = e.push_node(
        Op::Scale(ScaleSaved {
            s: ss,
            shape: r.shape,
            dtype: r.dtype,
            name: Name {
                what: "grad",
                ..name
            },
        }),
        [x.edge, Edge::None, Edge::None],
    );
    // `normalizer` is a local of the model's forward: it goes when the multiply is done.
    e.release(s);
    V { t, edge }
}

/// The multiply by a scalar tensor keeps the scalar.
#[derive(Debug, Clone, Copy)]
pub struct ScaleSaved {
    s: T,
    shape: Shape,
    dtype: DType,
    name: Name,
}

impl Backward for ScaleSaved {
    /// The input's gradient; the scale goes.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let gx = e.alloc(self.name, self.shape, self.dtype, Category::Activations);
        e.release(g);
        e.release(self.s);
        [Some(gx), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.s), None, None]
    }
}

/// `linear(x).view(B, T, h, d).transpose(1, 2)`: a view in the forward (same storage, one more
/// reference). The gradient that comes back is contiguous in (B, h, T, d) order (rotary's
/// slice backward allocates it so), so ViewBackward's `reshape` to (B, T, h·d) copies it.
pub fn heads_view(e: &mut Engine, x: V, name: Name) -> V {
    e.retain(x.t);
    let edge = like_input_grad(e, x, name);
    V { t: x.t, edge }
}

/// transformers' `repeat_kv(x, n_rep)` on (B, nkv, T, hd): `expand` then `reshape` to
/// (B, nkv·n_rep, T, hd) = `shape`, a copy (the expanded view is not contiguous). Its
/// backward sums the gradient over each group: one tensor shaped like `x`.
pub fn repeat_kv(e: &mut Engine, x: V, shape: Shape, name: Name) -> V {
    copy_reshaped(e, x, shape, name)
}

/// An op that writes a new activation of `shape` in `x`'s dtype (an expand or a sum, copied by
/// a reshape) and whose backward allocates one gradient shaped like `x`, keeping nothing.
pub fn copy_reshaped(e: &mut Engine, x: V, shape: Shape, name: Name) -> V {
    let r = *e.record(x.t);
    let t = e.alloc(name, shape, r.dtype, Category::Activations);
    let edge = like_input_grad(e, x, name);
    V { t, edge }
}

/// The node of an op whose backward allocates one gradient shaped like its input `x` (named
/// `name` with `grad`) and keeps nothing.
fn like_input_grad(e: &mut Engine, x: V, name: Name) -> Edge {
    let r = *e.record(x.t);
    e.push_node(
        Op::Pointwise(PointwiseSaved {
            shape: r.shape,
            dtype: r.dtype,
            name: Name {
                what: "grad",
                ..name
            },
        }),
        [x.edge, Edge::None, Edge::None],
    )
}

/// A node that keeps nothing and whose backward allocates one gradient of `shape` in `dtype`.
#[derive(Debug, Clone, Copy)]
pub struct PointwiseSaved {
    pub(crate) shape: Shape,
    pub(crate) dtype: DType,
    pub(crate) name: Name,
}

impl Backward for PointwiseSaved {
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let gx = e.alloc(self.name, self.shape, self.dtype, Category::Activations);
        e.release(g);
        [Some(gx), None, None]
    }
}

/// `x.to(dtype)` / `x.float()`: a copy in x's category (ToCopyBackward casts the gradient
/// back), or x itself when it has the dtype already.
pub fn to_dtype(e: &mut Engine, x: V, to: DType, name: Name) -> V {
    let r = *e.record(x.t);
    if r.dtype == to {
        e.retain(x.t);
        return x;
    }
    let t = e.alloc(name, r.shape, to, r.category);
    let edge = e.push_node(
        Op::ToCopy(ToCopySaved {
            from: r.dtype,
            shape: r.shape,
            name: Name {
                what: "grad",
                ..name
            },
            category: r.category,
        }),
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// ToCopyBackward keeps the input's dtype, shape and category.
#[derive(Debug, Clone, Copy)]
pub struct ToCopySaved {
    pub(super) from: DType,
    pub(super) shape: Shape,
    pub(super) name: Name,
    pub(super) category: Category,
}

impl Backward for ToCopySaved {
    /// The gradient cast back to the input's dtype (fused compiled).
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let (name, shape, from) = (self.name, self.shape, self.from);
        let gx = super::fusion::pointwise_out(e, name, shape, from, self.category, &[g]);
        e.release(g);
        [Some(gx), None, None]
    }
}

/// `x * scaling` with a Python float (LoRA's `alpha / r`): MulBackward1 keeps nothing.
pub fn mul_scalar(e: &mut Engine, x: V, name: Name) -> V {
    let r = *e.record(x.t);
    let t = e.alloc(name, r.shape, r.dtype, Category::Activations);
    let edge = like_input_grad(e, x, name);
    V { t, edge }
}

/// `x.requires_grad_(True)` in a forward hook (transformers' `enable_input_require_grads`, which
/// `gradient_checkpointing_enable` calls for PEFT models): a frozen embedding's output becomes
/// something autograd computes a gradient for, so that checkpointed layers recompute.
pub fn requires_grad(e: &mut Engine, x: V) -> V {
    if !e.grad_mode || x.edge != Edge::None {
        return x;
    }
    e.tape.push(crate::sim::autograd::Node {
        op: Op::Sink(SinkSaved),
        edges: [Edge::None; 3],
        grad: None,
    });
    V {
        t: x.t,
        edge: Edge::Node((e.tape.len() - 1) as u32),
    }
}

/// The gradient of a tensor made to require one is computed by the ops that use it, then
/// dropped: nothing flows further.
#[derive(Debug, Clone, Copy)]
pub struct SinkSaved;

impl Backward for SinkSaved {
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        e.release(g);
        [None; 3]
    }
}

/// `x[..., :-1, :].contiguous()` of (B, T, V): a (B, T-1, V) copy. CloneBackward hands the
/// gradient on; SliceBackward (`slice_backward`, aten/src/ATen/native/TensorShape.cpp) writes it
/// into new zeros of the full (B, T, V) shape, in the gradient's dtype.
pub fn shifted_copy(e: &mut Engine, x: V, name: Name) -> V {
    let r = *e.record(x.t);
    let d = r.shape.dims();
    let shifted = match d {
        [b, t, v] => Shape::new(&[*b, t.saturating_sub(1), *v]),
        _ => r.shape,
    };
    let t = e.alloc(name, shifted, r.dtype, r.category);
    let edge = e.push_node(
        Op::Pointwise(PointwiseSaved {
            shape: r.shape,
            dtype: r.dtype,
            name: Name {
                what: "grad",
                ..name
            },
        }),
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// `x.clone()`: a copy whose backward hands the gradient on unchanged.
pub fn clone(e: &mut Engine, x: V, name: Name) -> V {
    let r = *e.record(x.t);
    let t = e.alloc(name, r.shape, r.dtype, r.category);
    let edge = e.push_node(Op::Clone(CloneSaved), [x.edge, Edge::None, Edge::None]);
    V { t, edge }
}

/// CloneBackward keeps nothing and passes the gradient on as it is.
#[derive(Debug, Clone, Copy)]
pub struct CloneSaved;

impl Backward for CloneSaved {
    fn backward(self, _: &mut Engine, g: T) -> [Option<T>; 3] {
        [Some(g), None, None]
    }
}
