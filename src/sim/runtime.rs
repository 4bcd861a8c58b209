//! Runtimes are data, not forks of the code: what differs between PyTorch eager, compiled
//! PyTorch and candle is a handful of rules the ops consult.

use super::dtype::DType;
use crate::budget::GpuProfile;
use crate::config::{Mode, Precision, TrainConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// PyTorch eager on CUDA, as nanoGPT runs it with compile=False.
    PytorchEager,
    /// torch.compile: not yet measured, simulated with the eager rules as an upper bound.
    PytorchCompile,
    /// candle 0.11 (the probe's runtime): no autocast, no caching allocator, no cuBLAS
    /// workspaces counted; its retention rules live in `sim::candle`.
    Candle,
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
            kind: if cfg.compile {
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

/// nanoGPT falls back to float16 where the card has no bf16 (T4, V100, RTX 20xx).
pub fn effective_precision(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Precision {
    match (cfg.dtype, gpu) {
        (Precision::BFloat16, Some(g)) if !g.bf16 => Precision::Float16,
        (p, _) => p,
    }
}
