//! Embedding, residual adds, dropout, GELU, scaling of the loss: each forward with its backward.

use super::{save, Backward, Op};
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
        Op::Embedding(EmbeddingSaved {
            idx,
            weight,
            dtype,
            name,
        }),
        [w.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// EmbeddingBackward's state: the indices, and the table's shape and dtype.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingSaved {
    idx: T,
    weight: Shape,
    dtype: DType,
    name: Name,
}

impl Backward for EmbeddingSaved {
    /// A dense gradient of the whole table in its dtype; the indices go.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let gw = e.alloc(
            Name {
                what: "grad",
                ..self.name
            },
            self.weight,
            self.dtype,
            Category::Gradients,
        );
        e.release(g);
        e.release(self.idx);
        [Some(gw), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.idx), None, None]
    }
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
        Op::AddBroadcast(AddBroadcastSaved {
            pos: pos_shape,
            name: Name {
                what: "pos_grad",
                ..name
            },
        }),
        [tok.edge, pos.edge, Edge::None],
    );
    V { t, edge }
}

/// The broadcast add keeps the position embedding's shape only.
#[derive(Debug, Clone, Copy)]
pub struct AddBroadcastSaved {
    pos: Shape,
    name: Name,
}

impl Backward for AddBroadcastSaved {
    /// tok_emb's gradient is the incoming one; pos_emb's is its sum over the batch, in the
    /// dtype of the trainable position embedding (fp32, or `dtype` when pure).
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let gp = e.alloc(self.name, self.pos, e.param_dtype, Category::Activations);
        [Some(g), Some(gp), None]
    }
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
        Op::Add(AddSaved {
            a: da,
            b: db,
            shape,
            name: Name {
                what: "grad",
                ..name
            },
        }),
        [a.edge, b.edge, Edge::None],
    );
    V { t, edge }
}

/// AddBackward keeps the inputs' dtypes only.
#[derive(Debug, Clone, Copy)]
pub struct AddSaved {
    a: DType,
    b: DType,
    shape: Shape,
    name: Name,
}

impl Backward for AddSaved {
    /// The gradient passes through, cast to an input's dtype where it differs.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let out = e.dtype(g);
        let mut grads = [None; 3];
        for (i, dt) in [self.a, self.b].into_iter().enumerate() {
            grads[i] = Some(if dt == out {
                e.retain(g);
                g
            } else {
                let (name, shape) = (self.name, self.shape);
                super::fusion::pointwise_out(e, name, shape, dt, Category::Activations, &[g])
            });
        }
        e.release(g);
        grads
    }
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
        Op::Dropout(DropoutSaved {
            mask,
            shape,
            dtype,
            name: Name {
                what: "grad",
                ..name
            },
        }),
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// NativeDropoutBackward keeps the mask.
#[derive(Debug, Clone, Copy)]
pub struct DropoutSaved {
    mask: T,
    shape: Shape,
    dtype: DType,
    name: Name,
}

impl Backward for DropoutSaved {
    /// The incoming gradient times the mask (fused compiled); the mask goes.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let (name, shape, dtype) = (self.name, self.shape, self.dtype);
        let gx = super::fusion::pointwise_out(
            e,
            name,
            shape,
            dtype,
            Category::Activations,
            &[g, self.mask],
        );
        e.release(g);
        e.release(self.mask);
        [Some(gx), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.mask), None, None]
    }
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
        Op::Activation(ActivationSaved {
            x: xs,
            shape,
            name: Name {
                what: "grad",
                ..name
            },
        }),
        [x.edge, Edge::None, Edge::None],
    );
    V { t, edge }
}

/// A pointwise activation's node: its saved input (or result: tanh, sigmoid); `shape` is the
/// input's as the op sees it (a chunk of `x`'s storage for Phi-3's gate).
#[derive(Debug, Clone, Copy)]
pub struct ActivationSaved {
    pub(super) x: T,
    pub(super) shape: Shape,
    pub(super) name: Name,
}

impl Backward for ActivationSaved {
    /// The activation's backward reads its saved input. Compiled, GELU's backward is fused in
    /// place into the incoming gradient's buffer (its last use: inductor's in-place reuse,
    /// scheduler.py `decide_inplace_update`).
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let (x, shape) = (self.x, self.shape);
        let r = *e.record(x);
        if e.compiled() && e.record(g).shape == shape && e.dtype(g) == r.dtype {
            e.release(x);
            return [Some(g), None, None];
        }
        let gx = e.alloc(self.name, shape, r.dtype, Category::Activations);
        e.release(g);
        e.release(x);
        [Some(gx), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.x), None, None]
    }
}

/// `loss / gradient_accumulation_steps`.
pub fn div_scalar(e: &mut Engine, x: V) -> V {
    let t = e.alloc(
        Name::top("loss", "scaled"),
        Shape::scalar(),
        DType::F32,
        Category::Logits,
    );
    let edge = e.push_node(Op::Div(DivSaved), [x.edge, Edge::None, Edge::None]);
    V { t, edge }
}

/// DivBackward of the scalar loss by a Python number keeps nothing.
#[derive(Debug, Clone, Copy)]
pub struct DivSaved;

impl Backward for DivSaved {
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let gx = e.alloc(
            Name::top("loss", "div.grad"),
            Shape::scalar(),
            DType::F32,
            Category::Logits,
        );
        e.release(g);
        [Some(gx), None, None]
    }
}
