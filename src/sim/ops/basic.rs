//! Embedding, residual adds, dropout, layer_norm, GELU, scaling of the loss.

use super::{save, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// `nn.Embedding`: rows gathered from the table, in its dtype (autocast leaves it alone).
pub fn embedding(e: &mut Engine, p: usize, idx: T, out: Shape, name: Name) -> V {
    let w = e.param(p);
    let dtype = e.dtype(w.t);
    // Compiled, the gather is inlined into the kernel that adds the position embedding.
    let t = super::fusion::pointwise_out(e, name, out, dtype, Category::Activations, &[idx]);
    let weight = e.params[p].shape;
    let idx = save(e, idx);
    let edge = e.push_node(
        Op::Embedding {
            idx,
            weight,
            dtype,
            name,
        },
        [w.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// `tok_emb + pos_emb`: pos_emb (T, C) broadcasts over the batch.
pub fn add_broadcast(e: &mut Engine, tok: V, pos: V, name: Name) -> V {
    let shape = e.shape(tok.t);
    // fp32 embeddings in training; a model loaded in bf16 adds in bf16.
    let dtype = super::promote(e.dtype(tok.t), e.dtype(pos.t));
    let t = e.alloc(name, shape, dtype, Category::Activations);
    let d = shape.dims();
    let pos_shape = Shape::new(&[1, d[1], d[2]]);
    let edge = e.push_node(
        Op::AddBroadcast {
            pos: pos_shape,
            name: Name {
                what: "pos_grad",
                ..name
            },
        },
        [tok.edge, pos.edge, Edge::None],
    );
    V { t, edge }
}

/// The residual add: fp32 stream + branch (bf16 under autocast) promotes to fp32.
pub fn add(e: &mut Engine, a: V, b: V, name: Name) -> V {
    let (da, db) = (e.dtype(a.t), e.dtype(b.t));
    let out = if da == DType::F32 || db == DType::F32 {
        DType::F32
    } else {
        da
    };
    let shape = e.shape(a.t);
    let t = e.alloc(name, shape, out, Category::Activations);
    let edge = e.push_node(
        Op::Add {
            a: da,
            b: db,
            shape,
            name: Name {
                what: "grad",
                ..name
            },
        },
        [a.edge, b.edge, Edge::None],
    );
    V { t, edge }
}

/// AddBackward: the gradient passes through, cast to an input's dtype where it differs.
pub(super) fn add_backward(
    e: &mut Engine,
    g: T,
    a: DType,
    b: DType,
    shape: Shape,
    name: Name,
) -> [Option<T>; 3] {
    let out = e.dtype(g);
    let mut grads = [None; 3];
    for (i, dt) in [a, b].into_iter().enumerate() {
        grads[i] = Some(if dt == out {
            e.retain(g);
            g
        } else {
            super::fusion::pointwise_out(e, name, shape, dt, Category::Activations, &[g])
        });
    }
    e.release(g);
    grads
}

/// `F.dropout` in training with p > 0: `native_dropout` returns the output and a bool mask.
/// With p == 0 or in eval mode PyTorch returns the input itself.
pub fn dropout(e: &mut Engine, x: V, p: f64, name: Name) -> V {
    if p == 0.0 || !e.training {
        e.retain(x.t);
        return x;
    }
    let (shape, dtype) = (e.shape(x.t), e.dtype(x.t));
    let mask_name = Name {
        what: "mask",
        ..name
    };
    let (t, mask) = if e.compiled() {
        // Inductor's RNG draws the mask into a bool buffer (saved: random ops are never
        // recomputed); the multiply is fused into the consumer.
        let mask = e.alloc(mask_name, shape, DType::Bool, Category::Activations);
        let t = e.alloc_fused(name, shape, dtype, Category::Activations, &[x.t, mask]);
        (t, mask)
    } else {
        let t = e.alloc(name, shape, dtype, Category::Activations);
        let mask = e.alloc(mask_name, shape, DType::Bool, Category::Activations);
        (t, mask)
    };
    if !e.grad_mode {
        // A checkpointed forward: nothing is saved, the mask goes at once.
        e.release(mask);
        return V {
            t,
            edge: Edge::None,
        };
    }
    let edge = e.push_node(
        Op::Dropout {
            mask,
            shape,
            dtype,
            name: Name {
                what: "grad",
                ..name
            },
        },
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// `F.layer_norm`, in fp32 (autocast's fp32 list): output, mean and rstd (B, T, 1).
pub fn layer_norm(e: &mut Engine, x: V, w: usize, b: Option<usize>, name: Name) -> V {
    // Autocast casts a half-precision input to fp32 (a bf16 residual stream, e.g. a frozen
    // bf16 base under LoRA); the norm keeps the cast.
    let input = match e.autocast {
        Some(_) if e.dtype(x.t) != DType::F32 => super::linear::cast(
            e,
            x,
            DType::F32,
            None,
            Name {
                what: "input_fp32",
                ..name
            },
        ),
        _ => {
            e.retain(x.t);
            x
        }
    };
    let out = layer_norm_fp32(e, input, w, b, name);
    e.drop_value(input);
    out
}

fn layer_norm_fp32(e: &mut Engine, x: V, w: usize, b: Option<usize>, name: Name) -> V {
    let shape = e.shape(x.t);
    let d = shape.dims();
    let stat = Shape::new(&[d[0], d[1], 1]);
    let wv = e.param(w);
    let bv = b.map(|b| e.param(b));
    // fp32 under autocast (the input was cast); a half input without autocast (a model loaded
    // in bf16 for inference) gives a half output, with mean and rstd still in fp32.
    let dtype = e.dtype(x.t);
    if e.compiled() {
        return compiled_layer_norm(e, x, (wv, bv), name, stat);
    }
    let t = e.alloc(name, shape, dtype, Category::Activations);
    let mean = e.alloc(
        Name {
            what: "mean",
            ..name
        },
        stat,
        DType::F32,
        Category::Activations,
    );
    let rstd = e.alloc(
        Name {
            what: "rstd",
            ..name
        },
        stat,
        DType::F32,
        Category::Activations,
    );
    if !e.grad_mode {
        e.release(mean);
        e.release(rstd);
        return V {
            t,
            edge: Edge::None,
        };
    }
    let xs = save(e, x.t);
    let edge = e.push_node(
        Op::LayerNorm {
            x: xs,
            mean: Some(mean),
            rstd,
            bias: b.is_some(),
            w_grad: wv.edge != Edge::None,
            c: d[2],
            name: Name {
                what: "grad",
                ..name
            },
        },
        [x.edge, wv.edge, bv.map_or(Edge::None, |v| v.edge)],
    );
    V { t, edge }
}

/// The norm inside a compiled graph (fusion.rs). Inference: one fused kernel whose statistics
/// never leave registers; the output goes straight into its consumer. Training: AOTAutograd
/// decomposes `native_layer_norm` (torch/_decomp/decompositions.py) and the partition saves
/// the normalised x̂ = (x − mean)·rstd (fp32, what the backward's fused kernel reads) and rstd
/// — not x and mean; the affine output x̂·w + b stays fused into its consumer.
fn compiled_layer_norm(e: &mut Engine, x: V, (wv, bv): (V, Option<V>), name: Name, stat: Shape) -> V {
    let shape = e.shape(x.t);
    let dtype = e.dtype(x.t);
    if !e.grad_mode {
        let t = e.alloc_fused(name, shape, dtype, Category::Activations, &[x.t]);
        return V {
            t,
            edge: Edge::None,
        };
    }
    let at = |what| Name { what, ..name };
    let xhat = e.alloc(at("x_hat"), shape, DType::F32, Category::Activations);
    let rstd = e.alloc(at("rstd"), stat, DType::F32, Category::Activations);
    let t = e.alloc_fused(name, shape, dtype, Category::Activations, &[xhat]);
    let edge = e.push_node(
        Op::LayerNorm {
            x: xhat,
            mean: None,
            rstd,
            bias: bv.is_some(),
            w_grad: wv.edge != Edge::None,
            c: shape.dims()[2],
            name: at("grad"),
        },
        [x.edge, wv.edge, bv.map_or(Edge::None, |v| v.edge)],
    );
    V { t, edge }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn layer_norm_backward(
    e: &mut Engine,
    g: T,
    x: T,
    mean: Option<T>,
    rstd: T,
    (bias, w_grad): (bool, bool),
    c: u64,
    name: Name,
) -> [Option<T>; 3] {
    let shape = e.shape(x);
    let gx = e.alloc(name, shape, DType::F32, Category::Activations);
    let pshape = Shape::new(&[c]);
    let gw = w_grad.then(|| {
        e.alloc(
            Name {
                what: "weight.grad",
                ..name
            },
            pshape,
            DType::F32,
            Category::Gradients,
        )
    });
    let gb = (bias && w_grad).then(|| {
        e.alloc(
            Name {
                what: "bias.grad",
                ..name
            },
            pshape,
            DType::F32,
            Category::Gradients,
        )
    });
    e.release(g);
    e.release(x);
    if let Some(mean) = mean {
        e.release(mean);
    }
    e.release(rstd);
    [Some(gx), gw, gb]
}

/// GELU keeps its input for the backward; output in the input's dtype.
pub fn gelu(e: &mut Engine, x: V, name: Name) -> V {
    activation(e, x, name)
}

/// A pointwise activation (GELU, SiLU): its backward keeps the input; the output has the
/// input's dtype (neither is on autocast's lists).
pub(super) fn activation(e: &mut Engine, x: V, name: Name) -> V {
    let shape = e.record(x.t).shape;
    activation_as(e, x, shape, name)
}

/// The activation of `x` viewed as `shape` (a chunk of its storage): the output and the
/// gradient have that shape; the saved view keeps the whole storage.
pub(super) fn activation_as(e: &mut Engine, x: V, shape: Shape, name: Name) -> V {
    let r = *e.record(x.t);
    // Compiled: fused into its consumer (whose matmul operand the backward saves).
    let t = super::fusion::pointwise_out(e, name, shape, r.dtype, Category::Activations, &[x.t]);
    let xs = save(e, x.t);
    let edge = e.push_node(
        Op::Activation {
            x: xs,
            shape,
            name: Name {
                what: "grad",
                ..name
            },
        },
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// `loss / gradient_accumulation_steps`.
pub fn div_scalar(e: &mut Engine, x: V) -> V {
    let t = e.alloc(
        Name::top("loss", "scaled"),
        Shape::scalar(),
        DType::F32,
        Category::Logits,
    );
    let edge = e.push_node(Op::Div, [x.edge, Edge::None, Edge::None]);
    V { t, edge }
}
