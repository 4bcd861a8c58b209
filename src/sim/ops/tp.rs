//! Megatron's vocabulary-parallel ops, as rank 0 of a tensor-parallel group runs them: each
//! rank holds `vocab / world_size` rows of the embedding (= lm_head) and the matching slice of
//! the logits.
//!
//! `VocabParallelEmbedding.forward`: a mask of the tokens outside this rank's rows (two
//! comparisons and their `|`), `masked_input = input.clone() - vocab_start` with the masked
//! tokens set to 0 (the embedding saves it), the lookup, the masked rows zeroed and the
//! all-reduce in place.
//!
//! `vocab_parallel_cross_entropy` (megatron.core.tensor_parallel.cross_entropy): the logits
//! slice cast to fp32 (`.float()`), `max` over it (values and indices), the max subtracted in
//! place, the target mask and masked targets, the predicted logit gathered (an arange index),
//! `exp` in place, the row sums, `loss = log(sum) - predicted`, the softmax normalised in place
//! and saved — the backward turns that same storage into the gradient in place. The model
//! then takes `loss.mean()`.

use super::linear::cast;
use super::pointwise::PointwiseSaved;
use super::{save, Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// Temporaries that exist for one statement: allocated, then freed in order.
fn temporaries(e: &mut Engine, items: &[(Name, Shape, DType)]) {
    let ts: Vec<T> = items
        .iter()
        .map(|&(n, s, d)| e.alloc(n, s, d, Category::Other))
        .collect();
    for t in ts {
        e.release(t);
    }
}

/// The (mask, masked index) pair both ops build from an int64 index tensor of shape `s`.
fn mask_and_masked(e: &mut Engine, s: Shape, module: &'static str) -> (T, T) {
    let name = |what| Name::top(module, what);
    let lt = e.alloc(name("below_start"), s, DType::Bool, Category::Other);
    let ge = e.alloc(name("at_or_past_end"), s, DType::Bool, Category::Other);
    let mask = e.alloc(name("outside_mask"), s, DType::Bool, Category::Other);
    e.release(lt);
    e.release(ge);
    let clone = e.alloc(name("clone"), s, DType::I64, Category::Other);
    let masked = e.alloc(name("masked_index"), s, DType::I64, Category::Other);
    e.release(clone);
    (mask, masked)
}

/// `VocabParallelEmbedding(idx)` on this rank's rows of parameter `p`.
pub fn vocab_parallel_embedding(e: &mut Engine, p: usize, idx: T, out: Shape, name: Name) -> V {
    let (mask, masked) = mask_and_masked(e, e.shape(idx), "wte");
    let y = super::embedding(e, p, masked, out, name);
    e.release(masked);
    e.release(mask);
    y
}

/// `vocab_parallel_cross_entropy(logits, targets).mean()`; `logits` is (B, T, V / world).
pub fn vocab_parallel_cross_entropy(e: &mut Engine, logits: V, targets: T) -> V {
    let r = *e.record(logits.t);
    let v = *r.shape.dims().last().unwrap_or(&1);
    let n = r.shape.numel().unwrap_or(0) / v.max(1);
    let rows = Shape::new(&[n]);
    let name = |what| Name::top("loss", what);
    let x = if r.dtype != DType::F32 {
        let x = cast(e, logits, DType::F32, None, name("logits_fp32"));
        e.set_category(x.t, Category::Logits);
        x
    } else {
        e.retain(logits.t);
        logits
    };
    // torch.max(dim=-1): the values stay until the loss is formed, the indices are unused.
    let max = e.alloc(name("logits_max"), rows, DType::F32, Category::Logits);
    temporaries(e, &[(name("logits_argmax"), rows, DType::I64)]);
    // target_mask and masked_target, from the int64 targets (B, T).
    let (mask, masked) = mask_and_masked(e, e.shape(targets), "loss");
    let arange = e.alloc(name("arange"), rows, DType::I64, Category::Other);
    let predicted = e.alloc(name("predicted_logits"), rows, DType::F32, Category::Logits);
    e.release(arange);
    let sum = e.alloc(name("sum_exp_logits"), rows, DType::F32, Category::Logits);
    let log = e.alloc(name("log_sum_exp"), rows, DType::F32, Category::Logits);
    let loss = e.alloc(name("per_token"), rows, DType::F32, Category::Logits);
    e.release(log);
    e.release(max);
    e.release(predicted);
    e.release(sum);
    let saved = (save(e, x.t), save(e, mask), save(e, masked));
    let edge = e.push_node(
        Op::VocabParallelCe(VocabParallelCeSaved {
            softmax: saved.0,
            target_mask: saved.1,
            masked_target: saved.2,
            rows: n,
        }),
        [x.edge, Edge::None, Edge::None],
    );
    e.release(mask);
    e.release(masked);
    e.release(x.t);
    // loss.mean(): its backward expands the scalar gradient to (N,).
    let mean = e.alloc(name("nll"), Shape::scalar(), DType::F32, Category::Logits);
    let mean_edge = e.push_node(
        Op::Pointwise(PointwiseSaved {
            shape: rows,
            dtype: DType::F32,
            name: name("per_token.grad"),
        }),
        [edge, Edge::None, Edge::None],
    );
    e.release(loss);
    V {
        t: mean,
        edge: mean_edge,
    }
}

/// The fp32 softmax of this rank's logits slice, turned into the gradient in place by the
/// backward, and the target mask and masked targets.
#[derive(Debug, Clone, Copy)]
pub struct VocabParallelCeSaved {
    softmax: T,
    target_mask: T,
    masked_target: T,
    rows: u64,
}

impl Backward for VocabParallelCeSaved {
    /// The saved softmax becomes the gradient in place (`softmax[arange, target] -= 1 -
    /// mask.float()`, then `*= grad_output`).
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let s = Shape::new(&[self.rows]);
        temporaries(
            e,
            &[
                (Name::top("loss", "arange"), s, DType::I64),
                (Name::top("loss", "softmax_update"), s, DType::F32),
            ],
        );
        e.release(g);
        e.release(self.target_mask);
        e.release(self.masked_target);
        // The saved reference is handed on as the gradient.
        [Some(self.softmax), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [
            Some(self.softmax),
            Some(self.target_mask),
            Some(self.masked_target),
        ]
    }
}
