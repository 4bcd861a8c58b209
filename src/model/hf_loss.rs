//! `*ForCausalLM.forward` from the lm_head to the loss, as the configured transformers
//! release runs it (`config::transformers` says which chain a release and a class run).

use crate::config::transformers::LossChain;
use crate::config::{LossKind, TrainConfig};
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops;
use crate::sim::timeline::{Category, Name, Shape};

/// How a Hugging Face model computes its loss: the loss (standard or chunked) and the
/// transformers release's chain around it.
#[derive(Debug, Clone, Copy)]
pub struct HfLoss {
    pub kind: LossKind,
    pub chain: LossChain,
}

impl HfLoss {
    pub fn of(cfg: &TrainConfig) -> HfLoss {
        HfLoss {
            kind: cfg.loss,
            chain: cfg.transformers_version.loss_chain(cfg.model_type),
        }
    }
}

/// `logits = self.lm_head(hidden_states)`, then the release's loss. Returns the logits the
/// output holds (bf16, or fp32 where the forward upcast them) and the loss.
pub fn lm_head_and_loss(
    e: &mut Engine,
    x: V,
    weight: usize,
    targets: T,
    loss: HfLoss,
) -> (Option<V>, V) {
    match loss.kind {
        LossKind::Chunked => return (None, ops::chunked_cross_entropy(e, x, weight, targets)),
        LossKind::Liger => return (None, liger_loss(e, x, weight, targets)),
        LossKind::Standard => {}
    }
    let logits = ops::lm_head(e, x, weight);
    loss_from_logits(e, logits, targets, loss.chain)
}

/// Liger's `lce_forward` → `LigerForCausalLMLoss`: labels padded and shifted as
/// transformers 4.49+ does, the hidden states viewed (B·T, H), then the fused function.
fn liger_loss(e: &mut Engine, x: V, weight: usize, targets: T) -> V {
    let [padded, shift] = shifted_labels(e, targets);
    let l = ops::fused_linear_cross_entropy(e, x, weight);
    // LigerForCausalLMLoss returns: its labels and shift_labels go.
    e.release(padded);
    e.release(shift);
    l
}

/// The release's chain from the logits (the lm_head's, or Gemma 2's soft-capped ones) to the
/// loss; returns the logits the output holds and the loss.
pub(super) fn loss_from_logits(
    e: &mut Engine,
    logits: V,
    targets: T,
    chain: LossChain,
) -> (Option<V>, V) {
    match chain {
        LossChain::PadLabels => pad_labels(e, logits, targets),
        LossChain::UpcastInLoss => upcast_in_loss(e, logits, targets),
        LossChain::UpcastInForward => upcast_in_forward(e, logits, targets),
        LossChain::NoUpcast => {
            let l = shifted_loss(e, logits, targets);
            (Some(logits), l)
        }
    }
}

/// ForCausalLMLoss from transformers 4.49 (loss/loss_utils.py):
/// ```python
/// logits = logits.float()                                  # fp32 copy of the bf16 logits
/// labels = nn.functional.pad(labels, (0, 1), value=ignore_index)
/// shift_labels = labels[..., 1:].contiguous()
/// loss = nn.functional.cross_entropy(logits.view(-1, V), shift_labels.view(-1), ...)
/// ```
/// The fp32 log-probs are what cross-entropy keeps; the fp32 copy goes when the loss function
/// returns.
fn pad_labels(e: &mut Engine, logits: V, targets: T) -> (Option<V>, V) {
    let lf = ops::to_dtype(e, logits, DType::F32, Name::top("loss", "logits_fp32"));
    let [padded, shift] = shifted_labels(e, targets);
    let l = ops::cross_entropy(e, lf, shift);
    // ForCausalLMLoss returns: its locals logits (the fp32 copy), labels, shift_labels go.
    e.drop_value(lf);
    e.release(padded);
    e.release(shift);
    (Some(logits), l)
}

/// ForCausalLMLoss of transformers 4.46 to 4.48: the fp32 copy, then a shifted copy of it.
/// ```python
/// logits = logits.float()
/// shift_logits = logits[..., :-1, :].contiguous()
/// shift_labels = labels[..., 1:].contiguous()
/// loss = fixed_cross_entropy(shift_logits.view(-1, vocab_size), shift_labels.view(-1), ...)
/// ```
/// Both copies are locals of the loss function; the output keeps the bf16 logits.
fn upcast_in_loss(e: &mut Engine, logits: V, targets: T) -> (Option<V>, V) {
    let lf = ops::to_dtype(e, logits, DType::F32, Name::top("loss", "logits_fp32"));
    let l = shifted_loss(e, lf, targets);
    e.drop_value(lf);
    (Some(logits), l)
}

/// `*ForCausalLM.forward` up to transformers 4.45 (LlamaForCausalLM and the classes copied from
/// it): the forward itself upcasts, so the output holds fp32 logits.
/// ```python
/// logits = self.lm_head(hidden_states)
/// logits = logits.float()
/// shift_logits = logits[..., :-1, :].contiguous()
/// shift_labels = labels[..., 1:].contiguous()
/// loss = CrossEntropyLoss()(shift_logits.view(-1, V), shift_labels.view(-1))
/// ```
/// Rebinding `logits` lets go of the bf16 lm_head output (ToCopyBackward keeps nothing).
fn upcast_in_forward(e: &mut Engine, logits: V, targets: T) -> (Option<V>, V) {
    let lf = ops::to_dtype(e, logits, DType::F32, Name::top("lm_head", "logits_fp32"));
    e.drop_value(logits);
    let l = shifted_loss(e, lf, targets);
    (Some(lf), l)
}

/// `shift_logits = logits[..., :-1, :].contiguous()`, the shifted labels, and
/// `CrossEntropyLoss` over them; the two copies are locals that go once the loss exists.
/// GPT-NeoX's forward (to 4.48) runs this on the model-dtype logits, with no upcast.
fn shifted_loss(e: &mut Engine, logits: V, targets: T) -> V {
    let shifted = ops::shifted_copy(e, logits, Name::top("loss", "shift_logits"));
    let (b, t) = batch_dims(e, targets);
    let shift = labels(e, "shift_labels", b, t.saturating_sub(1));
    let l = ops::cross_entropy(e, shifted, shift);
    e.drop_value(shifted);
    e.release(shift);
    l
}

fn batch_dims(e: &Engine, targets: T) -> (u64, u64) {
    let s = e.shape(targets);
    (s.dims()[0], s.dims()[1])
}

/// An int64 (B, n) labels tensor the loss makes from the batch's labels.
/// transformers 4.49+'s `labels = F.pad(labels, (0, 1), value=ignore_index)` then
/// `shift_labels = labels[..., 1:].contiguous()`: (B, T + 1) and (B, T) int64, both locals
/// of the loss function (the caller releases them when it returns).
fn shifted_labels(e: &mut Engine, targets: T) -> [T; 2] {
    let (b, t) = batch_dims(e, targets);
    let padded = labels(e, "labels_padded", b, t + 1);
    let shift = labels(e, "shift_labels", b, t);
    [padded, shift]
}

fn labels(e: &mut Engine, what: &'static str, b: u64, n: u64) -> T {
    e.alloc(
        Name::top("loss", what),
        Shape::new(&[b, n]),
        DType::I64,
        Category::Other,
    )
}
