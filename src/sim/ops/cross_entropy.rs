//! `F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)`.
//!
//! cross_entropy has no autocast rule of its own: it calls log_softmax with the logits' dtype
//! (bf16 log-probs, B·T × V × 2 bytes), then nll_loss, which autocast runs in fp32 — so the
//! log-probs are copied to fp32 (B·T × V × 4 bytes) and that copy is saved for backward.

use super::pointwise::ToCopySaved;
use super::{save, Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// Returns the (unscaled) loss; `targets` is the int64 batch Y.
pub fn cross_entropy(e: &mut Engine, logits: V, targets: T) -> V {
    let r = *e.record(logits.t);
    // logits.view(-1, V): the loss works on (B·T, V).
    let d = r.shape.dims();
    let v = *d.last().unwrap_or(&1);
    let shape = Shape::new(&[r.shape.numel().unwrap_or(0) / v.max(1), v]);
    if e.compiled() {
        return super::loss::compiled_cross_entropy(e, logits, targets, shape);
    }
    let lp = e.alloc(
        Name::top("loss", "log_probs"),
        shape,
        r.dtype,
        Category::Logits,
    );
    let lp_saved = save(e, lp);
    let lp_edge = e.push_node(
        Op::LogSoftmax(LogSoftmaxSaved {
            out: lp_saved,
            shape,
            dtype: r.dtype,
        }),
        [logits.edge, Edge::None, Edge::None],
    );
    let (nll_in, nll_edge) = if e.autocast.is_some() && r.dtype != DType::F32 {
        let c = e.alloc(
            Name::top("loss", "log_probs_fp32"),
            shape,
            DType::F32,
            Category::Logits,
        );
        let edge = e.push_node(
            Op::ToCopy(ToCopySaved {
                from: r.dtype,
                shape,
                name: Name::top("loss", "log_probs.grad"),
                category: Category::Logits,
            }),
            [lp_edge, Edge::None, Edge::None],
        );
        (c, edge)
    } else {
        e.retain(lp);
        (lp, lp_edge)
    };
    let out = e.alloc(
        Name::top("loss", "nll"),
        Shape::scalar(),
        DType::F32,
        Category::Logits,
    );
    let total_weight = e.alloc(
        Name::top("loss", "total_weight"),
        Shape::scalar(),
        DType::F32,
        Category::Logits,
    );
    let edge = if e.grad_mode {
        let input = save(e, nll_in);
        let target = save(e, targets);
        e.push_node(
            Op::NllLoss(NllSaved {
                saved: [input, target, total_weight],
                shape,
            }),
            [nll_edge, Edge::None, Edge::None],
        )
    } else {
        e.release(total_weight);
        Edge::None
    };
    // Temporaries of F.cross_entropy: the fp32 copy, then the log-probs.
    e.release(nll_in);
    e.release(lp);
    V { t: out, edge }
}

/// LogSoftmaxBackward keeps its output, the log-probs.
#[derive(Debug, Clone, Copy)]
pub struct LogSoftmaxSaved {
    out: T,
    shape: Shape,
    dtype: DType,
}

impl Backward for LogSoftmaxSaved {
    /// The input's gradient in the log-probs' dtype, then the saved log-probs go.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let gx = e.alloc(
            Name::top("loss", "log_softmax.grad"),
            self.shape,
            self.dtype,
            Category::Logits,
        );
        e.release(g);
        e.release(self.out);
        [Some(gx), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.out), None, None]
    }
}

/// NllLossBackward keeps its input, the targets and the total weight.
#[derive(Debug, Clone, Copy)]
pub struct NllSaved {
    saved: [T; 3],
    shape: Shape,
}

impl Backward for NllSaved {
    /// An fp32 gradient of the (B·T, V) input; the saved input, targets and total weight go.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let gx = e.alloc(
            Name::top("loss", "nll.grad"),
            self.shape,
            DType::F32,
            Category::Logits,
        );
        e.release(g);
        for t in self.saved {
            e.release(t);
        }
        [Some(gx), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        self.saved.map(Some)
    }
}
