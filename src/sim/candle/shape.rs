//! The dimensions of nanoGPT's GPT as candle wants them, and the dtype candle runs a
//! precision in: shared by the candle runtime's simulation and the probe's real candle model
//! (src/probe/model.rs); the model itself is one, src/sim/candle/nanogpt.rs.

use crate::config::{Precision, TrainConfig};
use candle_core::DType;

/// The model's dimensions as candle wants them (usize), checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub block_size: usize,
    pub vocab_size: usize,
    pub batch_size: usize,
    pub bias: bool,
}

impl Shape {
    /// The shape of `config`, with `n_layer` replaced by `layers`.
    pub fn of(config: &TrainConfig, layers: u64) -> crate::error::Result<Shape> {
        let conv = |name: &str, v: u64| -> crate::error::Result<usize> {
            match usize::try_from(v) {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(crate::error::Error::new(format!(
                    "probe: {name} = {v} must be a positive integer the machine can index"
                ))),
            }
        };
        let shape = Shape {
            n_layer: conv("n_layer", layers)?,
            n_head: conv("n_head", config.n_head)?,
            n_embd: conv("n_embd", config.n_embd)?,
            block_size: conv("block_size", config.block_size)?,
            vocab_size: conv("vocab_size", config.vocab_size)?,
            batch_size: conv("batch_size", config.batch_size)?,
            bias: config.bias,
        };
        if !shape.n_embd.is_multiple_of(shape.n_head) {
            crate::bail!(
                "probe: n_embd = {} is not a multiple of n_head = {}",
                shape.n_embd,
                shape.n_head
            );
        }
        Ok(shape)
    }
}

/// The dtype parameters, activations and optimizer state have in the probe. candle has no
/// autocast: bfloat16/float16 mean the whole model is in that dtype, and only LayerNorm's
/// statistics and the cross-entropy run in f32.
pub fn dtype_of(p: Precision) -> DType {
    match p {
        Precision::Float32 => DType::F32,
        Precision::BFloat16 => DType::BF16,
        Precision::Float16 => DType::F16,
    }
}

/// The simulator's name of a candle dtype (the model uses float and the two index dtypes).
pub fn sim_dtype(dt: DType) -> crate::sim::DType {
    use crate::sim::DType as S;
    match dt {
        DType::BF16 => S::BF16,
        DType::F16 => S::F16,
        DType::U8 => S::U8,
        DType::U32 => S::U32,
        DType::I64 => S::I64,
        DType::F64 => S::F64,
        _ => S::F32,
    }
}

/// The candle dtype of a simulator dtype (the model's float and index dtypes).
pub fn candle_dtype(dt: crate::sim::DType) -> DType {
    use crate::sim::DType as S;
    match dt {
        S::BF16 => DType::BF16,
        S::F16 => DType::F16,
        S::U8 | S::Bool => DType::U8,
        S::U32 => DType::U32,
        S::I64 => DType::I64,
        S::F64 => DType::F64,
        _ => DType::F32,
    }
}
