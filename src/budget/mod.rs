//! What the card has: GPU profiles from the catalogue, or live NVML readings.

use serde::{Deserialize, Serialize};

/// One GPU model from profiles/gpus/*.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuProfile {
    /// Short catalogue key, e.g. "rtx3060".
    pub key: String,
    /// Name as NVML prints it, e.g. "NVIDIA GeForce RTX 3060".
    pub name: String,
    pub aliases: Vec<String>,
    /// Total memory as CUDA reports it (cudaMemGetInfo total), bytes.
    pub total_bytes: u64,
    /// false when total_bytes is the nominal size less a typical driver reservation.
    pub measured: bool,
    pub bf16: bool,
    /// (major, minor), e.g. (8, 6).
    pub compute_capability: (u32, u32),
    pub sm_count: u32,
    pub bandwidth_gb_s: f64,
    pub bf16_tflops: f64,
    pub fp32_tflops: f64,
    /// cuBLAS workspace per thread that runs matmuls (32 MiB on sm90, 8.125 MiB elsewhere).
    pub cublas_workspace_bytes: u64,
    /// cuBLASLt workspace per matmul thread (1 MiB).
    pub cublaslt_workspace_bytes: u64,
    /// CUDA context + loaded kernels outside the caching allocator (calibrated default).
    pub context_bytes: u64,
}
