//! The enum-valued keys of the run: precision, optimizer, loss, multi-GPU strategy.

use serde::{Deserialize, Serialize};

/// The variant of `all` that configs write as `s`.
pub(crate) fn parse_name<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    s: &str,
) -> Option<T> {
    all.iter().copied().find(|t| name(*t) == s)
}

/// "'a', 'b', ..." for messages: the names of `all`, quoted.
pub(crate) fn quoted_names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    let names: Vec<String> = all.iter().map(|t| format!("'{}'", name(*t))).collect();
    names.join(", ")
}

/// Training precision, as nanoGPT's `dtype` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[serde(rename = "float32")]
    Float32,
    #[serde(rename = "bfloat16")]
    BFloat16,
    #[serde(rename = "float16")]
    Float16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::BFloat16 => "bfloat16",
            Precision::Float16 => "float16",
        }
    }
}

/// Optimizer implementation (memory of its state differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// torch.optim.AdamW(fused=True), nanoGPT's choice on CUDA: fp32 exp_avg + exp_avg_sq.
    #[serde(rename = "adamw")]
    AdamW,
    /// bitsandbytes AdamW8bit: 1 byte per state element plus block-wise quantisation constants.
    #[serde(rename = "adamw8bit")]
    AdamW8bit,
    /// Plain SGD with momentum: one fp32 buffer per parameter.
    #[serde(rename = "sgd")]
    Sgd,
}

impl OptimizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::AdamW8bit => "adamw8bit",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// How the cross-entropy over the vocabulary is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// `F.cross_entropy(logits.view(-1, V), targets)`, nanoGPT's model.py.
    #[serde(rename = "standard")]
    Standard,
    /// Cross-entropy over chunks of rows, each chunk's logits recomputed in backward.
    #[serde(rename = "chunked")]
    Chunked,
}

impl LossKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::Standard => "standard",
            LossKind::Chunked => "chunked",
        }
    }
}

/// Multi-GPU strategy (per-rank memory differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parallelism {
    #[serde(rename = "ddp")]
    Ddp,
    /// FSDP FULL_SHARD.
    #[serde(rename = "fsdp")]
    Fsdp,
    /// FSDP SHARD_GRAD_OP: parameters stay gathered from a unit's forward to its backward.
    #[serde(rename = "fsdp_grad_op")]
    FsdpGradOp,
    #[serde(rename = "zero1")]
    Zero1,
    #[serde(rename = "zero2")]
    Zero2,
    #[serde(rename = "zero3")]
    Zero3,
    /// Megatron-style tensor parallelism of degree world_size (no data parallelism).
    #[serde(rename = "tp")]
    Tp,
}

impl Parallelism {
    pub fn as_str(self) -> &'static str {
        match self {
            Parallelism::Ddp => "ddp",
            Parallelism::Fsdp => "fsdp",
            Parallelism::FsdpGradOp => "fsdp_grad_op",
            Parallelism::Zero1 => "zero1",
            Parallelism::Zero2 => "zero2",
            Parallelism::Zero3 => "zero3",
            Parallelism::Tp => "tp",
        }
    }
}
