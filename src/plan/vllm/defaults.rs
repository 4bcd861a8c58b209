//! The scheduler limits vLLM sizes its profile run by when the user sets none, per version.
//!
//! V1 (vLLM 0.10, vllm/engine/arg_utils.py `EngineArgs._set_default_args_v1`): the defaults
//! depend on the usage context and on the card. `vllm serve` is `UsageContext.OPENAI_API_SERVER`:
//! on a card whose `get_device_total_memory()` is at least 70 GiB and whose name has no "a100"
//! (H100, H200, MI300x) `max_num_batched_tokens` 8192 and `max_num_seqs` 1024, otherwise 2048
//! and 256 (the offline `LLM` class doubles/quadruples the tokens: 16384 / 8192; not modelled).
//! Chunked prefill is always on in V1, so the default is not raised to `max_model_len`; vLLM
//! caps it at `max_num_seqs × max_model_len` (vllm/config.py `SchedulerConfig.__post_init__`).
//!
//! V0 (vLLM 0.6, vllm/config.py `SchedulerConfig`): without chunked prefill
//! `max(max_model_len, 2048)` tokens and 256 sequences. `EngineArgs.create_engine_config`
//! (vllm/engine/arg_utils.py) turns chunked prefill on by itself for a model longer than
//! 32,000 tokens ("Chunked prefill is enabled by default for models with max_model_len >
//! 32K", on CUDA without sliding window, speculative decoding, LoRA or prefix caching), and
//! then the default is 512 tokens ("Chunked prefill is enabled with max_num_batched_tokens=512").

use crate::budget::GpuProfile;
use crate::config::{TrainConfig, VllmVersion};
use serde::Serialize;

const GIB: u64 = 1 << 30;

/// The profile run's limits and where they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scheduler {
    pub max_num_batched_tokens: u64,
    pub max_num_seqs: u64,
    /// "--max-num-batched-tokens" when the user set it, else the default's rule.
    pub source: String,
}

/// A card V1 gives the larger defaults: 70 GiB or more and not an A100 (vLLM PR #17885).
fn large_card(gpu: Option<&GpuProfile>) -> bool {
    gpu.is_some_and(|g| g.total_bytes >= 70 * GIB && !g.name.to_lowercase().contains("a100"))
}

/// `cfg`'s limits, the version's defaults filling what it leaves unset.
pub fn scheduler(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Scheduler {
    let (tokens, seqs, rule) = match cfg.vllm_version {
        VllmVersion::V1 if large_card(gpu) => (
            8192,
            1024,
            "V1 `vllm serve` default on a card of 70 GiB or more other than A100",
        ),
        VllmVersion::V1 => (
            2048,
            256,
            "V1 `vllm serve` default on a card under 70 GiB or an A100",
        ),
        VllmVersion::V0 if cfg.block_size > 32_000 => (
            512,
            256,
            "V0 default with chunked prefill, on above 32K tokens",
        ),
        VllmVersion::V0 => (
            cfg.block_size.max(2048),
            256,
            "V0 default max(max_model_len, 2048)",
        ),
    };
    let max_num_seqs = cfg.max_num_seqs.unwrap_or(seqs);
    match cfg.max_num_batched_tokens {
        Some(t) => Scheduler {
            max_num_batched_tokens: t,
            max_num_seqs,
            source: "--max-num-batched-tokens".to_string(),
        },
        None => {
            let capped = match cfg.vllm_version {
                VllmVersion::V1 => tokens.min(max_num_seqs.saturating_mul(cfg.block_size)),
                VllmVersion::V0 => tokens,
            };
            Scheduler {
                max_num_batched_tokens: capped,
                max_num_seqs,
                source: rule.to_string(),
            }
        }
    }
}
