//! The chunks of one tensor (`chunk` / `split` into views): SplitBackward has one input slot
//! per chunk, so its gradient is formed once, by the chunk whose node runs first.

use super::{Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

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
            Op::SplitPart(SplitPartSaved)
        } else {
            Op::SplitCat(SplitCatSaved {
                parts: [Some(first), Some(first + 1)],
                shape: r.shape,
                dtype: r.dtype,
                name: Name {
                    what: "grad",
                    ..name
                },
                copy: true,
            })
        };
        o.edge = e.push_node(op, [x.edge, Edge::None, Edge::None]);
    }
    out
}

/// `x.chunk(2, dim=-1)` of a contiguous tensor (Phi-3's gate_up_proj output): two views of one
/// storage; SplitBackward concatenates their gradients, with no copy after it. The views'
/// own shapes are the caller's to pass to the ops that read them (`silu_as`, `mul_as`).
pub fn split2(e: &mut Engine, x: V, name: Name) -> [V; 2] {
    let r = *e.record(x.t);
    let first = e.tape.len() as u32;
    e.retain(x.t);
    let gate_edge = e.push_node(
        Op::SplitPart(SplitPartSaved),
        [x.edge, Edge::None, Edge::None],
    );
    e.retain(x.t);
    let up_edge = e.push_node(
        Op::SplitCat(SplitCatSaved {
            parts: [Some(first), None],
            shape: r.shape,
            dtype: r.dtype,
            name: Name {
                what: "grad",
                ..name
            },
            copy: false,
        }),
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

/// A chunk of a split whose gradient its last sibling collects.
#[derive(Debug, Clone, Copy)]
pub struct SplitPartSaved;

impl Backward for SplitPartSaved {
    /// Its gradient was taken by the last chunk; one that arrives alone passes on.
    fn backward(self, _: &mut Engine, g: T) -> [Option<T>; 3] {
        [Some(g), None, None]
    }
}

/// The last chunk: SplitBackward concatenates the siblings' gradients and its own (and with
/// `copy`, the reshape after it copies the result).
#[derive(Debug, Clone, Copy)]
pub struct SplitCatSaved {
    /// The tape positions of the sibling chunks.
    parts: [Option<u32>; 2],
    shape: Shape,
    dtype: DType,
    name: Name,
    copy: bool,
}

impl Backward for SplitCatSaved {
    /// cat(dq, dk, dv) along the last dim, then (`copy`) the reshape's copy.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let mut grads = vec![g];
        for p in self.parts.into_iter().flatten() {
            if let Some(t) = e.tape.get_mut(p as usize).and_then(|n| n.grad.take()) {
                grads.push(t);
            }
        }
        let (name, shape, dtype) = (self.name, self.shape, self.dtype);
        let cat = e.alloc(name, shape, dtype, Category::Activations);
        for t in grads {
            e.release(t);
        }
        if !self.copy {
            return [Some(cat), None, None];
        }
        let copied = e.alloc(name, shape, dtype, Category::Activations);
        e.release(cat);
        [Some(copied), None, None]
    }
}
