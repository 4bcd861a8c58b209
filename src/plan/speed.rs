//! Predicted step time, to rank candidates — it ranks, it does not promise seconds.
//!
//! FLOPs per token: 6·N for the weights' forward and backward, plus 12·n_layer·block_size·n_embd
//! for attention (the PaLM accounting), plus one more forward (2·N + 4·L·T·C) when activations
//! are recomputed, plus the lm_head's forward again (2·V·C) when the loss is computed in
//! chunks. Against the card's dense tensor throughput (bf16/fp16 with autocast, TF32/fp32
//! without) at a utilisation that grows with the tokens of one micro-step and saturates:
//! u = 0.5 · m / (m + 4096), m = batch_size · block_size. Larger micro-batches keep the GPU
//! busier; accumulation adds no FLOPs per token.

use crate::budget::GpuProfile;
use crate::config::{LossKind, Precision, TrainConfig};

/// Tokens per micro-step at which utilisation reaches half its ceiling.
const HALF_UTILISATION_TOKENS: f64 = 4096.0;
const MAX_UTILISATION: f64 = 0.5;

/// Parameters of the model (a tied embedding counted once), for any `model_type`.
pub fn n_params(cfg: &TrainConfig) -> f64 {
    crate::model::n_params(cfg) as f64
}

pub fn flops_per_token(cfg: &TrainConfig) -> f64 {
    let n = n_params(cfg);
    let (l, t, c, v) = (
        cfg.n_layer as f64,
        cfg.block_size as f64,
        cfg.n_embd as f64,
        cfg.vocab_size as f64,
    );
    let attn = 12.0 * l * t * c;
    let mut f = 6.0 * n + attn;
    if cfg.activation_checkpointing {
        f += 2.0 * n + attn / 3.0;
    }
    if cfg.loss == LossKind::Chunked {
        f += 2.0 * v * c;
    }
    f
}

/// Predicted tokens per second (None when the card's throughput is unknown).
pub fn tokens_per_second(cfg: &TrainConfig, gpu: &GpuProfile) -> Option<f64> {
    let peak = match cfg.dtype {
        Precision::Float32 => gpu.fp32_tflops,
        _ => gpu.bf16_tflops,
    } * 1e12;
    if peak <= 0.0 {
        return None;
    }
    let m = (cfg.batch_size * cfg.block_size) as f64;
    let u = MAX_UTILISATION * m / (m + HALF_UTILISATION_TOKENS);
    Some(peak * u / flops_per_token(cfg))
}
