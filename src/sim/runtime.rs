//! Runtimes are data, not forks of the code: what differs between PyTorch eager, compiled
//! PyTorch and candle is a handful of rules the ops consult.

use super::dtype::DType;
use crate::budget::GpuProfile;
use crate::config::{Mode, Precision, PrecisionMode, TrainConfig};

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
    /// SDPA may pick its flash kernel for half inputs: the card is sm80 or newer. PyTorch's
    /// aten/src/ATen/native/transformers/cuda/sdp_utils.cpp, check_flash_attention_hardware_support,
    /// refuses older cards (FlashAttention-2 needs Ampere), so a T4 (sm75), V100 (sm70) or P100
    /// (sm60) gets the memory-efficient kernel, which check_mem_efficient_hardware_support
    /// accepts from sm50.
    pub flash_attention: bool,
}

impl Runtime {
    /// PyTorch on the given card for this config.
    pub fn pytorch(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Runtime {
        let autocast = match effective_precision(cfg, gpu) {
            // Inference runs the model in the dtype it was loaded in: no autocast.
            _ if cfg.mode == Mode::Inference => None,
            // Pure half precision: the weights are already in dtype; nothing is autocast.
            _ if cfg.precision_mode == PrecisionMode::Pure => None,
            p => DType::autocast_of(p),
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
            // No card given: the data-centre default the rest of the runtime assumes (sm90).
            flash_attention: gpu.is_none_or(|g| g.compute_capability.0 >= 8),
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
            // candle has no SDPA kernels: its attention is written out in sim::candle.
            flash_attention: false,
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

/// Whose semantics a runtime simulates, and how they were checked: the line a report prints
/// under the run.
pub fn semantics(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::PytorchEager => {
            "PyTorch eager on CUDA — autocast, autograd's saved tensors and the caching \
             allocator as PyTorch's source defines them"
        }
        RuntimeKind::PytorchCompile => {
            "torch.compile (mode=\"default\") — AOTAutograd's min-cut partition and inductor's \
             fusion, derived from PyTorch's source and checked against PyTorch 2.15's own \
             partition and CUDA buffer plan on fake tensors (saved tensors within 0.1%); not yet \
             measured on a GPU"
        }
        RuntimeKind::Candle => "candle 0.11, as the probe runs it",
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
    } else if cfg.precision_mode == PrecisionMode::Pure {
        Some("precision_mode='pure' under torch.compile")
    } else if cfg.loss == crate::config::LossKind::Liger {
        Some("Liger's fused linear cross-entropy (a Triton autograd Function) under torch.compile")
    } else if cfg.activation_checkpointing
        && cfg.checkpoint_policy == crate::config::CheckpointPolicy::Op
    {
        // Compiled, the policy tags each traced node's meta["recompute"] and the min-cut
        // partitioner honours the tags (torch/_functorch/partitioners.py `must_recompute`):
        // another graph, not derived yet.
        Some("torchtitan's per-op checkpoint policy under torch.compile")
    } else {
        None
    }
}
