//! `F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)`.
//!
//! cross_entropy has no autocast rule of its own: it calls log_softmax with the logits' dtype
//! (bf16 log-probs, B·T × V × 2 bytes), then nll_loss, which autocast runs in fp32 — so the
//! log-probs are copied to fp32 (B·T × V × 4 bytes) and that copy is saved for backward.

use super::{save, Op};
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
        Op::LogSoftmax {
            out: lp_saved,
            shape,
            dtype: r.dtype,
        },
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
            Op::ToCopy {
                from: r.dtype,
                shape,
                name: Name::top("loss", "log_probs.grad"),
                category: Category::Logits,
            },
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
            Op::NllLoss {
                input,
                target,
                total_weight,
                shape,
            },
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

/// LogSoftmaxBackward: the input's gradient in the log-probs' dtype, then the saved log-probs go.
pub(super) fn log_softmax_backward(
    e: &mut Engine,
    g: T,
    out: T,
    shape: Shape,
    dtype: DType,
) -> [Option<T>; 3] {
    let gx = e.alloc(
        Name::top("loss", "log_softmax.grad"),
        shape,
        dtype,
        Category::Logits,
    );
    e.release(g);
    e.release(out);
    [Some(gx), None, None]
}

/// NllLossBackward: an fp32 gradient of the (B·T, V) input; the saved input, targets and
/// total weight go.
pub(super) fn nll_backward(e: &mut Engine, g: T, saved: [T; 3], shape: Shape) -> [Option<T>; 3] {
    let gx = e.alloc(
        Name::top("loss", "nll.grad"),
        shape,
        DType::F32,
        Category::Logits,
    );
    e.release(g);
    for t in saved {
        e.release(t);
    }
    [Some(gx), None, None]
}
