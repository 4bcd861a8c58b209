//! Runtimes are data, not forks of the code: what differs between PyTorch eager, compiled
//! PyTorch and candle is a handful of rules the ops consult.

use super::dtype::DType;
use crate::budget::GpuProfile;
use crate::config::{Mode, Precision, TrainConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RuntimeKind {
    /// PyTorch eager on CUDA, as nanoGPT runs it with compile=False.
    #[serde(rename = "pytorch")]
    PytorchEager,
    /// torch.compile (mode="default"): inductor's fusion and AOTAutograd's partition, as the
    /// ops apply them (`sim::ops::fusion`).
    #[serde(rename = "pytorch-compile")]
    PytorchCompile,
    /// candle 0.11 (the probe's runtime): no autocast, no caching allocator, no cuBLAS
    /// workspaces counted; its retention rules live in `sim::candle`.
    #[serde(rename = "candle")]
    Candle,
}

impl RuntimeKind {
    /// The name reports print ("pytorch", "pytorch-compile", "candle").
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::PytorchEager => "pytorch",
            RuntimeKind::PytorchCompile => "pytorch-compile",
            RuntimeKind::Candle => "candle",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Runtime {
    pub kind: RuntimeKind,
    /// CUDA autocast dtype; None = fp32 training.
    pub autocast: Option<DType>,
    /// cuBLAS workspace per thread that runs matmuls (by GPU architecture).
    pub cublas_workspace_bytes: u64,
    pub cublaslt_workspace_bytes: u64,
    /// PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True.
    pub expandable_segments: bool,
}

impl Runtime {
    /// PyTorch on the given card for this config.
    pub fn pytorch(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Runtime {
        let autocast = match effective_precision(cfg, gpu) {
            // Inference runs the model in the dtype it was loaded in: no autocast.
            _ if cfg.mode == Mode::Inference => None,
            Precision::Float32 => None,
            Precision::BFloat16 => Some(DType::BF16),
            Precision::Float16 => Some(DType::F16),
        };
        let (ws, lt) = match gpu {
            Some(g) => (g.cublas_workspace_bytes, g.cublaslt_workspace_bytes),
            None => (
                crate::budget::default_cublas_workspace_bytes((9, 0)),
                crate::budget::CUBLASLT_WORKSPACE_BYTES,
            ),
        };
        Runtime {
            kind: if cfg.compile && compile_fallback(cfg).is_none() {
                RuntimeKind::PytorchCompile
            } else {
                RuntimeKind::PytorchEager
            },
            autocast,
            cublas_workspace_bytes: ws,
            cublaslt_workspace_bytes: lt,
            expandable_segments: cfg.expandable_segments(),
        }
    }
}

impl Runtime {
    /// candle, as the probe runs it (the dtype is the model's own: no autocast).
    pub fn candle() -> Runtime {
        Runtime {
            kind: RuntimeKind::Candle,
            autocast: None,
            cublas_workspace_bytes: 0,
            cublaslt_workspace_bytes: 0,
            expandable_segments: false,
        }
    }
}

/// The precision that runs. nanoGPT's default dtype is `'bfloat16' if
/// torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float16'` (train.py), so
/// the default falls back to float16 where the card has no bf16 (T4, V100, RTX 20xx). A dtype
/// the user wrote is what runs: train.py passes it to autocast as is, and on such a card
/// autocast either refuses bf16 or emulates it (torch/amp/autocast_mode.py checks
/// `is_bf16_supported()`), it never becomes float16 — so it is kept.
pub fn effective_precision(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Precision {
    match (cfg.dtype, gpu) {
        (Precision::BFloat16, Some(g)) if !g.bf16 && !cfg.dtype_written.0 => Precision::Float16,
        (p, _) => p,
    }
}

/// Why a `compile=True` config is simulated with eager rules instead (None: it is not). The
/// compile rules are derived for nanoGPT's GPT trained on one GPU or under DDP; other models
/// and engines trace other graphs (FSDP's hooks, Megatron's collectives, PEFT's adapters,
/// Hugging Face's loss), which are not derived yet — simulated eager, an upper bound.
pub fn compile_fallback(cfg: &TrainConfig) -> Option<&'static str> {
    use crate::config::{ModelType, Parallelism, Quantization};
    if !cfg.compile {
        return None;
    }
    if cfg.mode == Mode::Inference {
        Some("inference under torch.compile")
    } else if cfg.model_type != ModelType::Gpt2 {
        Some("Hugging Face models under torch.compile")
    } else if cfg.parallelism != Parallelism::Ddp {
        Some("torch.compile with ZeRO, FSDP or tensor parallelism")
    } else if cfg.lora_rank > 0 || cfg.quantization != Quantization::None {
        Some("LoRA and quantized weights under torch.compile")
    } else if !cfg.flash {
        Some("torch.compile of the manual attention path (flash=False)")
    } else {
        None
    }
}
