//! Rotary position embeddings as Hugging Face applies them (`apply_rotary_pos_emb`).
//!
//! `cos` and `sin` are computed once per forward by the model's rotary module under no_grad,
//! with autocast disabled, in fp32, then cast to the dtype of the hidden states (fp32 when the
//! weights are fp32 under autocast). They have shape (1, T, rot_dim): `position_ids` has batch
//! size 1.
//!
//! ```python
//! def rotate_half(x):
//!     x1 = x[..., : x.shape[-1] // 2]
//!     x2 = x[..., x.shape[-1] // 2 :]
//!     return torch.cat((-x2, x1), dim=-1)
//! q_embed = (q * cos) + (rotate_half(q) * sin)
//! ```
//! `q` is a bf16 view of q_proj's output and `cos` is fp32, so `q * cos` promotes: under
//! autocast with fp32 weights the rotated q and k are fp32, and SDPA casts them back to bf16.
//! Each multiply keeps only `cos` or `sin` (the other input needs no gradient), so rotary keeps
//! nothing per layer beyond the shared tables. GPT-NeoX rotates the first `rot_dim` dims only
//! and concatenates the rest back (`torch.cat([q_embed, q_pass], dim=-1)`).

use super::pointwise::promote;
use super::{save, Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// `LlamaRotaryEmbedding.forward(x, position_ids)`: (cos, sin), each (1, T, rot_dim) in `dtype`.
pub fn rotary_tables(e: &mut Engine, t: u64, rot_dim: u64, dtype: DType) -> (T, T) {
    rotary_tables_of(e, "rotary_emb", t, rot_dim, dtype)
}

/// `rotary_tables` named after `module` (Gemma 3 computes a second pair, for its
/// sliding-window layers' base, and names neither apart: `local_rotary_emb` here).
pub fn rotary_tables_of(
    e: &mut Engine,
    module: &'static str,
    t: u64,
    rot_dim: u64,
    dtype: DType,
) -> (T, T) {
    let f32 = DType::F32;
    let other = Category::Other;
    let nm = |what| Name::top(module, what);
    let emb_shape = Shape::new(&[1, t, rot_dim]);
    // position_ids[:, None, :].float(), then inv_freq @ positions: (1, rot_dim / 2, T).
    let pos = e.alloc(nm("position_ids_fp32"), Shape::new(&[1, 1, t]), f32, other);
    let freqs = e.alloc(nm("freqs"), Shape::new(&[1, rot_dim / 2, t]), f32, other);
    let emb = e.alloc(nm("emb"), emb_shape, f32, other);
    let mut table = |what_raw, what| {
        // emb.cos() * self.attention_scaling
        let raw = e.alloc(nm(what_raw), emb_shape, f32, other);
        let scaled = e.alloc(nm(what), emb_shape, f32, other);
        e.release(raw);
        scaled
    };
    let cos = table("cos_raw", "cos");
    let sin = table("sin_raw", "sin");
    // The locals go at the return; `.to(dtype=x.dtype)` copies only when x is not fp32.
    for t in [emb, freqs, pos] {
        e.release(t);
    }
    if dtype == f32 {
        return (cos, sin);
    }
    let mut cast = |t: T, what| {
        let c = e.alloc(nm(what), emb_shape, dtype, other);
        e.release(t);
        c
    };
    let c = cast(cos, "cos");
    let s = cast(sin, "sin");
    (c, s)
}

/// What one rotated tensor's nodes keep: the shared tables, and the shapes to replay them.
#[derive(Debug, Clone, Copy)]
pub struct RopeSaved {
    x_edge: Edge,
    cos: T,
    sin: T,
    /// (B, h, T, head_dim) of the input.
    dims: [u64; 4],
    rot_dim: u64,
    x_dtype: DType,
    out_dtype: DType,
    name: Name,
}

impl RopeSaved {
    fn shape(&self, last: u64) -> Shape {
        let [b, h, t, _] = self.dims;
        Shape::new(&[b, h, t, last])
    }
}

/// `(x * cos) + (rotate_half(x) * sin)` on the first `rot_dim` dims of x (b, h, t, d), the
/// rest concatenated back when `rot_dim < d`.
#[allow(clippy::too_many_arguments)]
pub fn rope(e: &mut Engine, x: V, cos: T, sin: T, dims: [u64; 4], rot_dim: u64, name: Name) -> V {
    let [b, h, t, d] = dims;
    let x_dtype = e.dtype(x.t);
    let out_dtype = promote(x_dtype, e.dtype(cos));
    let act = Category::Activations;
    let nm = |what| Name { what, ..name };
    let rot = Shape::new(&[b, h, t, rot_dim]);
    let a = e.alloc(nm("x_cos"), rot, out_dtype, act);
    let neg = e.alloc(
        nm("neg_x2"),
        Shape::new(&[b, h, t, rot_dim / 2]),
        x_dtype,
        act,
    );
    let rh = e.alloc(nm("rotate_half"), rot, x_dtype, act);
    e.release(neg);
    let s = e.alloc(nm("rot_sin"), rot, out_dtype, act);
    e.release(rh);
    let sum = e.alloc(nm("rot"), rot, out_dtype, act);
    e.release(a);
    e.release(s);
    let out = if rot_dim < d {
        let full = e.alloc(name, Shape::new(&[b, h, t, d]), out_dtype, act);
        e.release(sum);
        full
    } else {
        sum
    };
    let saved = RopeSaved {
        x_edge: x.edge,
        cos: save(e, cos),
        sin: save(e, sin),
        dims,
        rot_dim,
        x_dtype,
        out_dtype,
        name: nm("grad"),
    };
    let edge = e.push_node(Op::Rope(saved), [x.edge, Edge::None, Edge::None]);
    V { t: out, edge }
}

impl Backward for RopeSaved {
    /// The backward of the chain, last node first. Gradients for x arrive in several parts (the
    /// pass-through slice, the two slices of rotate_half, the `x * cos` branch); with partial
    /// rotary they meet in x_rot's buffer first. Each part is delivered as it is produced.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let act = Category::Activations;
        let d = self.dims[3];
        let full = self.shape(d);
        let rot = self.shape(self.rot_dim);
        let nm = |what| Name { what, ..self.name };
        let partial = self.rot_dim < d;
        // The parts of x_rot's gradient: delivered to x directly when x_rot is x.
        let mut rot_buf: Option<T> = None;
        let mut give = |e: &mut Engine, t: T| {
            if partial {
                match rot_buf {
                    None => rot_buf = Some(t),
                    Some(_) => e.release(t),
                }
            } else {
                e.deliver(self.x_edge, t);
            }
        };
        if partial {
            // CatBackward: the pass-through part, cast to x's dtype, then SliceBackward's zeros.
            let mut gp = None;
            if self.out_dtype != self.x_dtype {
                gp = Some(e.alloc(
                    nm("pass.grad"),
                    self.shape(d - self.rot_dim),
                    self.x_dtype,
                    act,
                ));
            }
            let z = e.alloc(nm("pass.grad"), full, self.x_dtype, act);
            if let Some(t) = gp {
                e.release(t);
            }
            e.deliver(self.x_edge, z);
        }
        // rotate_half(x) * sin: (grad * sin).to(x's dtype).
        let mut gr = e.alloc(nm("rotate_half.grad"), rot, self.out_dtype, act);
        if self.out_dtype != self.x_dtype {
            let c = e.alloc(nm("rotate_half.grad"), rot, self.x_dtype, act);
            e.release(gr);
            gr = c;
        }
        // cat((-x2, x1)): NegBackward, then x2's SliceBackward, then x1's.
        let gn = e.alloc(
            nm("neg.grad"),
            self.shape(self.rot_dim / 2),
            self.x_dtype,
            act,
        );
        let z2 = e.alloc(nm("x2.grad"), rot, self.x_dtype, act);
        e.release(gn);
        give(e, z2);
        let z1 = e.alloc(nm("x1.grad"), rot, self.x_dtype, act);
        e.release(gr);
        give(e, z1);
        // x * cos: (grad * cos).to(x's dtype).
        let mut gc = e.alloc(nm("x_cos.grad"), rot, self.out_dtype, act);
        if self.out_dtype != self.x_dtype {
            let c = e.alloc(nm("x_cos.grad"), rot, self.x_dtype, act);
            e.release(gc);
            gc = c;
        }
        e.release(g);
        give(e, gc);
        self.release_saved(e);
        if let Some(buf) = rot_buf {
            // x_rot's SliceBackward: zeros of x's shape.
            let z = e.alloc(nm("x_rot.grad"), full, self.x_dtype, act);
            e.release(buf);
            e.deliver(self.x_edge, z);
        }
        [None, None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.cos), Some(self.sin), None]
    }
}
