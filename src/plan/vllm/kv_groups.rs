//! How vLLM lays out one rank's KV cache when the layers differ: full-attention layers and
//! sliding-window layers (Gemma 2: one of each alternating, Gemma 3: five sliding to one
//! global).
//!
//! V1 (vLLM 0.10.1). Each attention layer gets a spec (vllm/v1/worker/gpu_model_runner.py
//! `get_kv_cache_spec`): `SlidingWindowSpec` when its `Attention.sliding_window` is set
//! (gemma2.py / gemma3.py pass `per_layer_sliding_window` for `layer_types[i] ==
//! "sliding_attention"`), else `FullAttentionSpec`; both have the same `page_size_bytes`
//! (2 × block_size × kv heads × head_size × element size, vllm/v1/kv_cache_interface.py
//! `AttentionSpec`). vllm/v1/core/kv_cache_utils.py `get_kv_cache_config` then picks:
//!
//! - one type (every layer full, or every layer sliding the same window):
//!   `_get_kv_cache_config_uniform_type`: num_blocks = available // page // num_layers,
//!   "GPU KV cache size" = num_blocks × block_size;
//! - several types, one page size: `_get_kv_cache_config_uniform_page_size`: layers grouped by
//!   spec, group_size = the fewest layers of any type, each type cut into groups of
//!   group_size (the last padded); group_size pools each shared by one layer of every group,
//!   num_blocks = available // page // group_size, and "GPU KV cache size" =
//!   num_blocks // number_of_groups × block_size.
//!
//! One request of max_model_len needs, per layer (`max_memory_usage_bytes`): full attention
//! cdiv(max_model_len, 16) pages; sliding (`SlidingWindowSpec`) cdiv(min(window − 1 +
//! max_num_batched_tokens, max_model_len), 16) + 1 pages. `check_enough_kv_cache_memory`
//! sums that over every layer; `get_max_concurrency_for_kv_cache_config` divides num_blocks
//! by the blocks one request takes in every group (group_size × Σ over groups, over
//! group_size × page).
//!
//! The hybrid manager is on by default on CUDA (vllm/config/__init__.py
//! `VllmConfig.__post_init__` turns it off only for KV transfer, KV events or chunked local
//! attention); off, `unify_hybrid_kv_cache_specs` makes every layer full attention.
//!
//! V0 keeps every layer's cache at full length for these interleaved models: vLLM 0.6.6
//! vllm/config.py `ModelConfig.__init__` moves Gemma 2's `sliding_window` to
//! `interleaved_sliding_window` ("the scheduler and the model treat it as full attention"),
//! and vLLM 0.10.1's V0 engine gets no `CacheConfig.sliding_window` for an interleaved model
//! (vllm/engine/arg_utils.py `create_engine_config`). Its block manager's per-sequence window
//! cap (vllm/core/block_manager.py) applies only to a model-wide window, which these do not
//! have; vLLM's cache of `num_gpu_blocks` spans every layer either way.

use super::BLOCK_TOKENS;
use crate::config::TrainConfig;
use serde::Serialize;
use std::ops::Range;

/// One rank's KV cache as vLLM's KV-cache manager groups it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KvGroups {
    /// One layer's block of 16 tokens (`page_size_bytes`).
    pub page_bytes: u64,
    pub full_layers: u64,
    pub sliding_layers: u64,
    /// The sliding layers' window (None: no layer slides in this engine's cache).
    pub window: Option<u64>,
    /// The divisor of `get_num_blocks`: every layer (one type) or group_size (hybrid); as
    /// many tensors as this, each num_blocks pages.
    pub pools: u64,
    pub full_groups: u64,
    pub sliding_groups: u64,
}

impl KvGroups {
    /// Every layer a full-attention layer (V0, and V1 for a model without a window).
    pub fn all_full(layers: u64, page_bytes: u64) -> KvGroups {
        KvGroups {
            page_bytes,
            full_layers: layers,
            sliding_layers: 0,
            window: None,
            pools: layers,
            full_groups: 1,
            sliding_groups: 0,
        }
    }

    /// vLLM V1's grouping of the layers `layers` of `rank` (see the module's comment): every
    /// layer, or one pipeline-parallel rank's ([`pp_layers`](crate::model::pp_layers)), whose
    /// sliding and full layers are counted by the model's own layer index.
    pub fn v1_layers(rank: &TrainConfig, layers: Range<u64>, page_bytes: u64) -> KvGroups {
        let end = layers.end.min(rank.n_layer).min(u64::from(u32::MAX));
        let layers = layers.start.min(end)..end;
        let n = layers.end - layers.start;
        let sliding = layers.filter(|&l| rank.layer_slides(l as u32)).count() as u64;
        let full = n - sliding;
        match rank.sliding_window {
            Some(w) if sliding > 0 && full == 0 => KvGroups {
                window: Some(w),
                sliding_layers: sliding,
                full_layers: 0,
                full_groups: 0,
                sliding_groups: 1,
                ..KvGroups::all_full(sliding, page_bytes)
            },
            Some(w) if sliding > 0 => {
                let group = full.min(sliding);
                KvGroups {
                    page_bytes,
                    full_layers: full,
                    sliding_layers: sliding,
                    window: Some(w),
                    pools: group,
                    full_groups: full.div_ceil(group),
                    sliding_groups: sliding.div_ceil(group),
                }
            }
            _ => KvGroups::all_full(n, page_bytes),
        }
    }

    /// Both types present: `_get_kv_cache_config_uniform_page_size`.
    pub fn hybrid(&self) -> bool {
        self.full_layers > 0 && self.sliding_layers > 0
    }

    pub fn groups(&self) -> u64 {
        self.full_groups + self.sliding_groups
    }

    /// Memory one block id takes: a page in each pool.
    pub fn block_bytes(&self) -> u64 {
        self.page_bytes.saturating_mul(self.pools)
    }

    /// `get_num_blocks`: int(available // page_size // num_layers), at least 0.
    pub fn blocks(&self, available: i64) -> u64 {
        match available {
            a if a > 0 && self.page_bytes > 0 && self.pools > 0 => {
                a as u64 / self.page_bytes / self.pools
            }
            _ => 0,
        }
    }

    /// "GPU KV cache size: N tokens": num_blocks // len(groups) × block_size.
    pub fn tokens(&self, blocks: u64) -> u64 {
        (blocks / self.groups().max(1)).saturating_mul(BLOCK_TOKENS)
    }

    /// Pages one request of `len` tokens takes in one sliding layer (`SlidingWindowSpec.
    /// max_memory_usage_bytes` over `page_size_bytes`).
    fn sliding_pages(&self, len: u64, batched_tokens: u64) -> u64 {
        match self.window {
            Some(w) => {
                let tokens = (w.saturating_sub(1).saturating_add(batched_tokens)).min(len);
                tokens.div_ceil(BLOCK_TOKENS) + 1
            }
            None => 0,
        }
    }

    /// Blocks one request of `len` tokens takes over every group: the divisor of
    /// `get_max_concurrency_for_kv_cache_config`.
    pub fn blocks_per_request(&self, len: u64, batched_tokens: u64) -> u64 {
        let full = self.full_groups.saturating_mul(len.div_ceil(BLOCK_TOKENS));
        let sliding = self
            .sliding_groups
            .saturating_mul(self.sliding_pages(len, batched_tokens));
        full.saturating_add(sliding)
    }

    /// `check_enough_kv_cache_memory`'s needed_memory: every layer's `max_memory_usage_bytes`.
    pub fn needed_bytes(&self, len: u64, batched_tokens: u64) -> u64 {
        let full = self.full_layers.saturating_mul(len.div_ceil(BLOCK_TOKENS));
        let sliding = self
            .sliding_layers
            .saturating_mul(self.sliding_pages(len, batched_tokens));
        full.saturating_add(sliding).saturating_mul(self.page_bytes)
    }

    /// `estimate_max_model_len`: the longest length up to `max_len` whose needed memory fits
    /// `available`, by vLLM's bisection; 0 when one token does not fit.
    pub fn estimate_max_model_len(&self, available: i64, max_len: u64, batched: u64) -> u64 {
        let fits = |len: u64| available >= 0 && self.needed_bytes(len, batched) <= available as u64;
        if !fits(1) {
            return 0;
        }
        let (mut left, mut right, mut result) = (1u64, max_len, 1u64);
        while left <= right {
            let mid = left + (right - left) / 2;
            if fits(mid) {
                result = mid;
                left = mid + 1;
            } else {
                right = mid - 1;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_rank_groups_its_own_layers() {
        // Gemma 3 1B's pattern: 26 layers, every 6th global (5, 11, 17, 23).
        let c = TrainConfig {
            n_layer: 26,
            sliding_window: Some(512),
            global_every: Some(6),
            ..TrainConfig::default()
        };
        // Pipeline size 4 (pp_layers): 0..6, 6..13, 13..20, 20..26.
        let counts = |r: Range<u64>| {
            let g = KvGroups::v1_layers(&c, r, 1);
            (g.full_layers, g.sliding_layers, g.pools, g.groups())
        };
        // Layer 5 global: 1 full, 5 sliding; group_size 1: 1 + 5 groups.
        assert_eq!(counts(0..6), (1, 5, 1, 6));
        // Layer 11 global: 1 + 6.
        assert_eq!(counts(6..13), (1, 6, 1, 7));
        // Layer 17: 1 + 6.
        assert_eq!(counts(13..20), (1, 6, 1, 7));
        // Layer 23: 1 + 5.
        assert_eq!(counts(20..26), (1, 5, 1, 6));
        // The whole model: 4 full, 22 sliding, group_size 4, 1 + cdiv(22, 4) = 7 groups.
        assert_eq!(counts(0..26), (4, 22, 4, 7));
    }
}
