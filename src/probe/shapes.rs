//! The four GPT shapes the probe is checked on (fixtures/probe/measured-cpu.json, the CUDA
//! check): chosen so that the backward peak sits in different places — the cross-entropy
//! (tiny-gpt, wide-vocab), the GELU backward (char-level), the attention softmax
//! (long-context).

use crate::config::{Precision, TrainConfig};

/// (name, B, T, C, H, V, L, bias)
pub type Shape = (&'static str, u64, u64, u64, u64, u64, u64, bool);

pub const SHAPES: [Shape; 4] = [
    ("tiny-gpt", 4, 64, 128, 4, 2048, 2, true),
    ("wide-vocab", 8, 128, 256, 8, 8192, 4, false),
    ("char-level", 16, 128, 192, 6, 65, 3, false),
    ("long-context", 2, 256, 128, 8, 512, 2, true),
];

/// The shape as a training config (no dropout) in `dtype`.
pub fn config(shape: &Shape, dtype: Precision) -> TrainConfig {
    let &(_, b, t, c, h, v, l, bias) = shape;
    TrainConfig {
        batch_size: b,
        block_size: t,
        n_embd: c,
        n_head: h,
        vocab_size: v,
        n_layer: l,
        bias,
        dropout: 0.0,
        dtype,
        ..TrainConfig::default()
    }
}
