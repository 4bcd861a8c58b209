//! Element types as PyTorch stores them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    BF16,
    F16,
    I64,
    U64,
    Bool,
    U8,
    /// candle's token ids.
    U32,
    /// fp8 (e4m3 / e5m2): vLLM's `--kv-cache-dtype fp8`.
    F8,
    /// LLM.int8() weights and quantized activations.
    I8,
    /// int8 matmuls accumulate in int32.
    I32,
    /// float64: GradScaler's reciprocal of the scale (torch/amp/grad_scaler.py, unscale_).
    F64,
}

impl DType {
    /// The element type of a config's `dtype`.
    pub fn of_precision(p: crate::config::Precision) -> DType {
        use crate::config::Precision;
        match p {
            Precision::Float32 => DType::F32,
            Precision::BFloat16 => DType::BF16,
            Precision::Float16 => DType::F16,
        }
    }

    /// What autocast casts to under a config's `dtype` (None: fp32, no autocast).
    pub fn autocast_of(p: crate::config::Precision) -> Option<DType> {
        Some(DType::of_precision(p)).filter(|&d| d != DType::F32)
    }

    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::U32 | DType::I32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::I64 | DType::U64 | DType::F64 => 8,
            DType::Bool | DType::U8 | DType::I8 | DType::F8 => 1,
        }
    }

    /// Short name as the report prints it (`bf16`, `fp32`, ...).
    pub fn short(self) -> &'static str {
        match self {
            DType::F32 => "fp32",
            DType::BF16 => "bf16",
            DType::F16 => "fp16",
            DType::I64 => "int64",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::U32 => "uint32",
            DType::F8 => "fp8",
            DType::I8 => "int8",
            DType::I32 => "int32",
            DType::F64 => "fp64",
        }
    }

    pub fn is_half(self) -> bool {
        matches!(self, DType::BF16 | DType::F16)
    }
}
