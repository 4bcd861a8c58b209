//! What the card has: GPU profiles from the catalogue, or live NVML readings.
//!
//! * [`catalogue()`] / [`find()`] / [`from_file()`] — the GPU profiles of `profiles/gpus/*.toml`,
//!   embedded at build time, or one profile from a user's file (`--gpu-file`).
//! * [`Budget`] — what a run may use: a profile's total less the `--margin`
//!   ([`Budget::from_profile`]), or what is free on the live card now less the margin
//!   ([`live_budget`]). [`resolve`] turns the command-line flags into one.
//! * [`Nvml`] — live readings behind a small trait: [`SystemNvml`] over nvml-wrapper,
//!   [`FakeNvml`] for tests.
//! * [`catalogue_table`] / [`live_table`] — what `vramplan gpus [--live]` prints.
//!
//! # What the profile fields mean, and where the numbers come from
//!
//! **`total_bytes`** is the total CUDA reports (`cudaMemGetInfo`, PyTorch's "total capacity"),
//! not the nominal size and not nvidia-smi's figure: the driver keeps a few hundred MiB for
//! itself. Measured values come from PyTorch OOM messages in public logs (shared/reference/gpus.md
//! and the file's own comment name the source). PyTorch prints two decimals of GiB, so the
//! file holds that figure times 2^30, rounded: the true total lies within ±5 MiB. Where sources
//! disagree (driver version, ECC) the file keeps the **lowest** Linux figure: a plan that fits
//! there fits on the others. Windows prints the nominal size (`12.00 GiB`) and is never used.
//! Where no measurement exists, the total is the nominal size less the reservation measured on
//! a card of the same architecture and memory size, and `measured = false`.
//!
//! **`bf16_tflops`** is the dense (no sparsity) tensor-core rate with fp32 accumulate, the mode
//! PyTorch's autocast uses; GeForce cards run it at half their fp16-accumulate rate, which is
//! the figure NVIDIA markets. Cards without bf16 (`bf16 = false`: Turing, Volta) hold their
//! **fp16** tensor rate here, since nanoGPT falls back to float16 on them.
//! **`fp32_tflops`** is what an fp32 matmul gets as nanoGPT runs it: nanoGPT's train.py sets
//! `allow_tf32 = True`, so on sm80+ it is the dense TF32 tensor rate; before Ampere there is no
//! TF32 and it is the CUDA-core fp32 rate.
//!
//! **`cublas_workspace_bytes`** is the workspace PyTorch gives cuBLAS per thread that runs
//! matmuls: 32 MiB on compute capability 9.x, else 4096·1024·2 + 16·1024·8 = 8.125 MiB.
//! **`cublaslt_workspace_bytes`** is cuBLASLt's, 1 MiB. Both are allocated through the caching
//! allocator, so they sit inside "reserved".
//!
//! **`context_bytes`** is the process's device memory outside the caching allocator: the CUDA
//! context, loaded kernels, cuBLAS handles. It is never in `max_memory_allocated()` and always
//! in nvidia-smi. The default is [`default_context_bytes`]:
//!
//! ```text
//! context = 192 MiB + 1 KiB × resident threads per SM × SMs
//! ```
//!
//! The second term is real: at context creation the driver reserves local memory for the
//! default 1 KiB stack (`cudaLimitStackSize`) of every thread that can be resident, so it scales
//! with the SM count and the architecture's threads per SM (2048 on sm70/80/90/100, 1536 on
//! sm86/89/120, 1024 on sm75). The 192 MiB covers the driver's own context and the kernels
//! PyTorch loads lazily; it is fitted to the "this process has X in use" minus PyTorch's
//! allocated+reserved in real OOM logs (shared/oom-corpus, shared/reference/README.md): a
//! laptop RTX 4050 shows ~120 MiB (formula: 222), an RTX A4000 210 (264), an RTX 3090 317 (315),
//! an L40S 419 and an RTX 6000 Ada 429 (405), an A100 80GB with 4 GPUs 599 (408; NCCL adds to
//! multi-GPU jobs). It over-estimates small cards a little and under-estimates no single-GPU
//! run by more than ~25 MiB — the pessimistic side, as the verdict should be. The seed's own
//! log implies only ~40 MiB on an RTX 3060 (lazy module loading); a probe on a live card
//! measures it exactly, and a profile file may set its own value.

mod catalogue;
mod live;
mod margin;
mod profile;
mod profile_fields;
mod system;
mod table;

pub use catalogue::{catalogue, embedded_files, find, from_file, generic_card, match_nvml_name};
pub use live::{
    holders, live_budget, nvml_from_env, FakeNvml, GpuProcess, LiveReading, Nvml, ProcessKind,
    FAKE_NVML_ENV, NO_CARD_MESSAGE, NO_DRIVER_MESSAGE,
};
pub use margin::{
    parse_bytes, parse_bytes_for, parse_safety, resolve, Budget, BudgetRequest, BudgetSource,
    DEFAULT_MARGIN_BYTES,
};
pub use profile::{
    context_stack_bytes, default_context_bytes, default_cublas_workspace_bytes, threads_per_sm,
    CUBLASLT_WORKSPACE_BYTES, CUBLAS_WORKSPACE_BYTES, CUBLAS_WORKSPACE_SM90_BYTES,
};
pub use system::SystemNvml;
pub use table::{catalogue_table, live_table};

use serde::{Deserialize, Serialize};

/// One GPU model from profiles/gpus/*.toml (field meanings: the module documentation).
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
    /// (major, minor), e.g. (8, 6). (0, 0) only in a generic profile built from a live
    /// reading whose compute capability NVML could not give.
    pub compute_capability: (u32, u32),
    /// 0 only in a generic profile built from a live reading (unknown).
    pub sm_count: u32,
    /// 0.0 only in a generic profile built from a live reading (unknown).
    pub bandwidth_gb_s: f64,
    /// Dense tensor rate with fp32 accumulate; the fp16 rate where `bf16` is false.
    /// 0.0 only in a generic profile built from a live reading (unknown).
    pub bf16_tflops: f64,
    /// Dense TF32 tensor rate on sm80+, CUDA-core fp32 before. 0.0 when unknown.
    pub fp32_tflops: f64,
    /// cuBLAS workspace per thread that runs matmuls (32 MiB on sm90, 8.125 MiB elsewhere).
    pub cublas_workspace_bytes: u64,
    /// cuBLASLt workspace per matmul thread (1 MiB).
    pub cublaslt_workspace_bytes: u64,
    /// CUDA context + loaded kernels outside the caching allocator (calibrated default).
    pub context_bytes: u64,
}
