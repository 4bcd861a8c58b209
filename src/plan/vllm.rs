//! vLLM's start-up sizing of the KV cache (V0 `Worker.determine_num_available_blocks`, V1
//! `gpu_worker.determine_available_memory`), with the profile run simulated by the same Engine:
//!
//! ```text
//! available = gpu_memory_utilization × total − peak allocated of the profile run (weights
//!             included) − non-torch memory (CUDA context, NCCL, ...)
//! num_gpu_blocks = available // block_bytes,
//! block_bytes = 2 × n_layer × kv_heads × head_dim × 16 tokens × element size
//! ```
//! 0 blocks is "No available memory for the cache blocks. Try increasing
//! `gpu_memory_utilization`"; fewer than `max_model_len` tokens (16 × blocks) is "The model's
//! max seq len (N) is larger than the maximum number of tokens that can be stored in KV cache".
//! The non-torch memory is the card profile's calibrated CUDA context; CUDA graphs are captured
//! after the cache is sized and are not in this budget.

use crate::budget::GpuProfile;
use crate::config::{Mode, TrainConfig};
use crate::error::{Error, Result};
use crate::sim::infer::kv_bytes_per_token;
use crate::sim::runtime::effective_precision;
use crate::sim::{replay, simulate_vllm_profile, Category, Runtime};
use serde::Serialize;

/// vLLM's default `--block-size` (tokens per KV-cache block).
pub const BLOCK_TOKENS: u64 = 16;

/// What vLLM would find at start-up on this card.
#[derive(Debug, Clone, Serialize)]
pub struct VllmBudget {
    pub total_bytes: u64,
    pub gpu_memory_utilization: f64,
    /// gpu_memory_utilization × total.
    pub budget_bytes: u64,
    /// The weights (exact: shapes × dtype).
    pub weights_bytes: u64,
    /// torch's allocated peak during the profile run, weights included (simulated).
    pub profile_peak_bytes: u64,
    /// The profile run's tokens and sequences.
    pub profile_tokens: u64,
    pub profile_seqs: u64,
    /// Memory outside torch's allocator (the card's calibrated CUDA context).
    pub non_torch_bytes: u64,
    /// What is left for the KV cache (negative: nothing).
    pub kv_cache_bytes: i64,
    pub block_bytes: u64,
    pub num_gpu_blocks: u64,
    /// 16 × blocks.
    pub max_tokens: u64,
    /// `--max-model-len` (block_size).
    pub max_model_len: u64,
    /// None: vLLM starts; otherwise the error it raises.
    pub error: Option<String>,
}

/// vLLM's start-up figures for `cfg` on a card with `total_bytes` (as CUDA reports it) and
/// `non_torch_bytes` outside the allocator.
pub fn vllm_budget(
    cfg: &TrainConfig,
    gpu: Option<&GpuProfile>,
    total_bytes: u64,
    non_torch_bytes: u64,
) -> Result<VllmBudget> {
    let mut c = cfg.clone();
    c.mode = Mode::Inference;
    c.dtype = effective_precision(cfg, gpu);
    let rt = Runtime::pytorch(&c, gpu);
    let tl = simulate_vllm_profile(&c, rt)?;
    let profile = replay(&tl, rt.expandable_segments);
    let weights_bytes = tl
        .tensors
        .iter()
        .filter(|t| t.category == Category::Parameters)
        .map(|t| t.bytes)
        .sum();
    let per_token = kv_bytes_per_token(&c)
        .ok_or_else(|| Error::new("the KV cache per token overflows 64 bits"))?;
    let block_bytes = per_token.saturating_mul(BLOCK_TOKENS);
    let util = c.gpu_memory_utilization;
    // vLLM computes in Python floats: total × utilization, truncated by the int() of the blocks.
    let budget_bytes = (total_bytes as f64 * util) as u64;
    let used = profile.peak_allocated.saturating_add(non_torch_bytes);
    let kv_cache_bytes = budget_bytes as i64 - used as i64;
    let num_gpu_blocks = if kv_cache_bytes > 0 && block_bytes > 0 {
        kv_cache_bytes as u64 / block_bytes
    } else {
        0
    };
    let max_tokens = num_gpu_blocks.saturating_mul(BLOCK_TOKENS);
    let error = if num_gpu_blocks == 0 {
        Some(
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine."
                .to_string(),
        )
    } else if c.block_size > max_tokens {
        Some(format!(
            "The model's max seq len ({}) is larger than the maximum number of tokens that can be stored in KV cache ({max_tokens}). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
            c.block_size
        ))
    } else {
        None
    };
    let tokens = c.batched_tokens();
    Ok(VllmBudget {
        total_bytes,
        gpu_memory_utilization: util,
        budget_bytes,
        weights_bytes,
        profile_peak_bytes: profile.peak_allocated,
        profile_tokens: tokens,
        profile_seqs: c.max_num_seqs.min(tokens).max(1),
        non_torch_bytes,
        kv_cache_bytes,
        block_bytes,
        num_gpu_blocks,
        max_tokens,
        max_model_len: c.block_size,
        error,
    })
}

impl VllmBudget {
    /// The smallest `--gpu-memory-utilization` (rounded up to 0.01) whose budget holds the
    /// profile peak, the non-torch memory and the blocks for `tokens` tokens; None above 1.0.
    pub fn utilization_for(&self, tokens: u64) -> Option<f64> {
        let blocks = tokens.div_ceil(BLOCK_TOKENS);
        let need = self
            .profile_peak_bytes
            .checked_add(self.non_torch_bytes)?
            .checked_add(blocks.checked_mul(self.block_bytes)?)?;
        let hundredths = (need as f64 / self.total_bytes.max(1) as f64 * 100.0).ceil();
        (hundredths <= 100.0).then_some(hundredths / 100.0)
    }

    /// The largest `--max-model-len` (a multiple of the block) this budget's cache holds for
    /// one sequence.
    pub fn max_model_len_that_fits(&self) -> u64 {
        self.max_tokens
    }

    /// `vllm serve MODEL --gpu-memory-utilization U --max-model-len N`.
    pub fn command(model: &str, utilization: f64, max_model_len: u64) -> String {
        format!("vllm serve {model} --gpu-memory-utilization {utilization:.2} --max-model-len {max_model_len}")
    }
}
