//! Pointwise ops of the Hugging Face decoders: SiLU, the gate × up product of a gated MLP,
//! Gemma's embedding scale, and the head views around attention whose backward copies.
//!
//! No autocast rule covers these: their output dtype is PyTorch's type promotion of the inputs.

use super::{save, Op};
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
        Op::Activation {
            x: kept,
            shape: r.shape,
            name: Name {
                what: "grad",
                ..name
            },
        },
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

/// MulBackward0: self's gradient (grad × other), then other's (grad × self), each in its
/// input's dtype.
pub(super) fn mul_backward(e: &mut Engine, g: T, s: MulSaved) -> [Option<T>; 3] {
    let ga =
        s.b.map(|_| e.alloc(s.name, s.shape, s.a_dtype, Category::Activations));
    let gb =
        s.a.map(|_| e.alloc(s.name, s.shape, s.b_dtype, Category::Activations));
    e.release(g);
    for t in [s.a, s.b].into_iter().flatten() {
        e.release(t);
    }
    [ga, gb, None]
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
        Op::Scale {
            s: ss,
            shape: r.shape,
            dtype: r.dtype,
            name: Name {
                what: "grad",
                ..name
            },
        },
        [x.edge, Edge::None, Edge::None],
    );
    // `normalizer` is a local of the model's forward: it goes when the multiply is done.
    e.release(s);
    V { t, edge }
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
        Op::Pointwise {
            shape: r.shape,
            dtype: r.dtype,
            name: Name {
                what: "grad",
                ..name
            },
        },
        [x.edge, Edge::None, Edge::None],
    )
}

/// GPT-NeoX's `qkv.view(B, T, h, 3d).transpose(1, 2).chunk(3, dim=-1)`: three views of one
/// storage. SplitBackward has one input slot per chunk and runs once all three have arrived:
/// it concatenates them (B, h, T, 3d), and the reshape back to (B, T, 3C) copies.
///
/// Modelled as three nodes created in order q, k, v; the last one (the first to run in the
/// backward) collects its siblings' gradients from the tape.
pub fn split3(e: &mut Engine, x: V, name: Name) -> [V; 3] {
    let r = *e.record(x.t);
    let mut out = [V {
        t: x.t,
        edge: Edge::None,
    }; 3];
    let first = e.tape.len() as u32;
    for (i, o) in out.iter_mut().enumerate() {
        e.retain(x.t);
        let op = if i < 2 {
            Op::SplitPart
        } else {
            Op::SplitCat {
                parts: [Some(first), Some(first + 1)],
                shape: r.shape,
                dtype: r.dtype,
                name: Name {
                    what: "grad",
                    ..name
                },
                copy: true,
            }
        };
        o.edge = e.push_node(op, [x.edge, Edge::None, Edge::None]);
    }
    out
}

/// SplitBackward: cat(dq, dk, dv) along the last dim, then (`copy`) the reshape's copy.
pub(super) fn split_backward(
    e: &mut Engine,
    g: T,
    parts: [Option<u32>; 2],
    (shape, dtype): (Shape, DType),
    name: Name,
    copy: bool,
) -> T {
    let mut grads = vec![g];
    for p in parts.into_iter().flatten() {
        if let Some(t) = e.tape.get_mut(p as usize).and_then(|n| n.grad.take()) {
            grads.push(t);
        }
    }
    let cat = e.alloc(name, shape, dtype, Category::Activations);
    for t in grads {
        e.release(t);
    }
    if !copy {
        return cat;
    }
    let copied = e.alloc(name, shape, dtype, Category::Activations);
    e.release(cat);
    copied
}

/// `x.chunk(2, dim=-1)` of a contiguous tensor (Phi-3's gate_up_proj output): two views of one
/// storage; SplitBackward concatenates their gradients, with no copy after it. The views'
/// own shapes are the caller's to pass to the ops that read them (`silu_as`, `mul_as`).
pub fn split2(e: &mut Engine, x: V, name: Name) -> [V; 2] {
    let r = *e.record(x.t);
    let first = e.tape.len() as u32;
    e.retain(x.t);
    let gate_edge = e.push_node(Op::SplitPart, [x.edge, Edge::None, Edge::None]);
    e.retain(x.t);
    let up_edge = e.push_node(
        Op::SplitCat {
            parts: [Some(first), None],
            shape: r.shape,
            dtype: r.dtype,
            name: Name {
                what: "grad",
                ..name
            },
            copy: false,
        },
        [x.edge, Edge::None, Edge::None],
    );
    [
        V {
            t: x.t,
            edge: gate_edge,
        },
        V {
            t: x.t,
            edge: up_edge,
        },
    ]
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
        Op::ToCopy {
            from: r.dtype,
            shape: r.shape,
            name: Name {
                what: "grad",
                ..name
            },
            category: r.category,
        },
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
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
        op: Op::Sink,
        edges: [Edge::None; 3],
        grad: None,
    });
    V {
        t: x.t,
        edge: Edge::Node((e.tape.len() - 1) as u32),
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
        Op::Pointwise {
            shape: r.shape,
            dtype: r.dtype,
            name: Name {
                what: "grad",
                ..name
            },
        },
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// `x.clone()`: a copy whose backward hands the gradient on unchanged.
pub fn clone(e: &mut Engine, x: V, name: Name) -> V {
    let r = *e.record(x.t);
    let t = e.alloc(name, r.shape, r.dtype, r.category);
    let edge = e.push_node(Op::Clone, [x.edge, Edge::None, Edge::None]);
    V { t, edge }
}

/// ToCopyBackward: the gradient cast back to the input's dtype (fused compiled).
pub(super) fn to_copy_backward(
    e: &mut Engine,
    g: T,
    (shape, from): (Shape, DType),
    name: Name,
    category: Category,
) -> [Option<T>; 3] {
    let gx = super::fusion::pointwise_out(e, name, shape, from, category, &[g]);
    e.release(g);
    [Some(gx), None, None]
}

/// A multiply by a saved scale: the input's gradient; the scale goes.
pub(super) fn scale_backward(
    e: &mut Engine,
    g: T,
    scale: T,
    (shape, dtype): (Shape, DType),
    name: Name,
) -> [Option<T>; 3] {
    let gx = e.alloc(name, shape, dtype, Category::Activations);
    e.release(g);
    e.release(scale);
    [Some(gx), None, None]
}

/// A pointwise op that keeps nothing: a gradient of `shape` in `dtype`.
pub(super) fn pointwise_backward(
    e: &mut Engine,
    g: T,
    (shape, dtype): (Shape, DType),
    name: Name,
) -> [Option<T>; 3] {
    let gx = e.alloc(name, shape, dtype, Category::Activations);
    e.release(g);
    [Some(gx), None, None]
}
