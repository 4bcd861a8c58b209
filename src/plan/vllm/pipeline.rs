//! Pipeline-parallel serving: how vLLM splits a model's layers over the ranks (vLLM 0.10.1,
//! vllm/distributed/utils.py `get_pp_indices`), each rank's start-up simulated on its own
//! share ([`Stage`]: its layers, the embeddings on the first rank, the final norm and lm_head
//! on the last, the received hidden states on every rank after the first), and the ranks
//! unified as vLLM unifies them:
//!
//! - V1 (vLLM 0.10.1 vllm/v1/engine/core.py `EngineCore._initialize_kv_caches`): every
//!   worker's `determine_available_memory`, then per worker `get_kv_cache_config` on its own
//!   layers' specs (`check_enough_kv_cache_memory` raises there, the workers in rank order),
//!   then `unify_kv_cache_configs` (vllm/v1/core/kv_cache_utils.py): it asserts that the
//!   ranks' KV cache groups, sorted by spec type, agree pairwise with rank 0's, and gives
//!   every rank the fewest blocks any rank has; the scheduler uses rank 0's config.
//! - V0 (vLLM 0.6.6 vllm/executor/distributed_gpu_executor.py
//!   `DistributedGPUExecutor.determine_num_available_blocks`): each worker's blocks, the
//!   minimum taken; every worker then checks that minimum (worker.py
//!   `raise_if_cache_size_invalid`).
//!
//! `VLLM_PP_LAYER_PARTITION` (a user's own split) is not modelled. Nothing here has been run
//! on a GPU.

use super::{KvGroups, VllmBudget};
use crate::config::{TrainConfig, VllmVersion};
use crate::error::{Error, Result};
use crate::model::Stage;
use serde::Serialize;

/// One pipeline rank's share and its own start-up figures, before unification.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRank {
    pub rank: u64,
    /// Its layers, `[start, end)`.
    pub layers: [u64; 2],
    /// It holds `embed_tokens` (the first rank; the last too with tied embeddings).
    pub embeddings: bool,
    /// It runs the final norm and the lm_head, and samples (the last rank).
    pub head: bool,
    /// It holds the final norm and lm_head weights (the last rank; every rank for the models
    /// of [`Stage::ends_on_every_rank`]).
    pub head_weights: bool,
    pub budget: VllmBudget,
}

/// Every rank's figures and the ranks that decide.
#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    /// The rank with the fewest KV-cache blocks (the lowest on a tie): its blocks are every
    /// rank's.
    pub binding_rank: u64,
    /// The rank whose error vLLM raises first, if it refuses to start.
    pub refusing_rank: Option<u64>,
    pub ranks: Vec<PipelineRank>,
}

/// vLLM's start-up over `c.pipeline_parallel_size` ranks, each simulated by `rank_budget`:
/// the binding rank's figures with the unified blocks, tokens as rank 0's groups count
/// them, and the first error vLLM raises.
pub(super) fn unify(
    c: &TrainConfig,
    rank_budget: impl Fn(Stage) -> Result<VllmBudget>,
) -> Result<VllmBudget> {
    let mut ranks = Vec::new();
    for rank in 0..c.pipeline_parallel_size {
        let stage = Stage::of_rank(c, rank)
            .ok_or_else(|| Error::new("pipeline_parallel_size: a rank without layers"))?;
        ranks.push(PipelineRank {
            rank,
            layers: [stage.start, stage.end],
            embeddings: stage.has_embeddings(c),
            head: stage.last,
            head_weights: stage.has_head(c),
            budget: rank_budget(stage)?,
        });
    }
    let binding = ranks
        .iter()
        .min_by_key(|r| (r.budget.num_gpu_blocks, r.rank))
        .ok_or_else(|| Error::new("pipeline_parallel_size: no ranks"))?;
    let mut top = binding.budget.clone();
    let blocks = binding.budget.num_gpu_blocks;
    let first = &ranks[0].budget;
    let (len, batched) = (top.max_model_len, top.max_num_batched_tokens);
    let (refusing_rank, error) = match c.vllm_version {
        VllmVersion::V1 => {
            top.max_tokens = first.kv_groups.tokens(blocks);
            let per_request = first.kv_groups.blocks_per_request(len, batched).max(1);
            top.max_concurrency = blocks as f64 / per_request as f64;
            v1_error(&ranks)
        }
        // Every worker checks the minimum: the binding rank's own error.
        VllmVersion::V0 => (
            binding.budget.error.as_ref().map(|_| binding.rank),
            binding.budget.error.clone(),
        ),
    };
    // At the low end of non-torch: each rank's blocks with the band's width back, the fewest
    // taken, counted with rank 0's groups as above.
    let low_blocks = ranks
        .iter()
        .map(|r| {
            let b = &r.budget;
            let width = b.non_torch.high_bytes - b.non_torch.low_bytes;
            b.kv_groups
                .blocks(b.kv_cache_bytes.saturating_add(width as i64))
        })
        .min()
        .unwrap_or(0);
    top.max_tokens_optimistic = ranks[0].budget.kv_groups.tokens(low_blocks);
    top.error = error;
    top.pipeline = Some(Pipeline {
        binding_rank: binding.rank,
        refusing_rank,
        ranks,
    });
    Ok(top)
}

/// V1's first error: a rank's own `check_enough_kv_cache_memory` (ranks in order), else the
/// assertion of `unify_kv_cache_configs` when a rank's groups disagree with rank 0's.
fn v1_error(ranks: &[PipelineRank]) -> (Option<u64>, Option<String>) {
    if let Some(r) = ranks.iter().find(|r| r.budget.error.is_some()) {
        return (Some(r.rank), r.budget.error.clone());
    }
    let first = &ranks[0].budget.kv_groups;
    let differs = ranks
        .iter()
        .find(|r| !groups_agree(first, &r.budget.kv_groups));
    match differs {
        Some(r) => {
            let g = &r.budget.kv_groups;
            (
                Some(r.rank),
                Some(format!(
                    "AssertionError in unify_kv_cache_configs: rank {}'s KV cache groups ({} full-attention, {} sliding-window) do not match rank 0's ({} and {}) when sorted by spec type",
                    r.rank, g.full_groups, g.sliding_groups, first.full_groups, first.sliding_groups
                )),
            )
        }
        None => (None, None),
    }
}

/// `unify_kv_cache_configs`'s check: the groups sorted by spec type name
/// (`FullAttentionSpec` before `SlidingWindowSpec`), compared pairwise up to the shorter list
/// (`zip`); the specs of one type are equal on every rank (same page, heads and window).
fn groups_agree(a: &KvGroups, b: &KvGroups) -> bool {
    let types = |g: &KvGroups| {
        std::iter::repeat_n(false, g.full_groups as usize)
            .chain(std::iter::repeat_n(true, g.sliding_groups as usize))
    };
    types(a).zip(types(b)).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(full: u64, sliding: u64) -> KvGroups {
        KvGroups {
            full_groups: full,
            sliding_groups: sliding,
            ..KvGroups::all_full(1, 1)
        }
    }

    #[test]
    fn ranks_groups_agree_pairwise_up_to_the_shorter_list() {
        // Gemma 3 1B over 4 ranks: rank 0 has 1 full + 5 sliding groups, rank 1 1 + 6: the
        // zip stops after rank 0's six, all of the same types.
        assert!(groups_agree(&groups(1, 5), &groups(1, 6)));
        // Gemma 2 (alternating) with 21 layers on each of 2 ranks: rank 0 holds 11 sliding
        // and 10 full layers, group_size 10: F S S; rank 1 holds 11 full and 10 sliding:
        // F F S. The second pair differs.
        assert!(!groups_agree(&groups(1, 2), &groups(2, 1)));
        // A rank with only sliding layers against one with a full layer.
        assert!(!groups_agree(&groups(1, 5), &groups(0, 1)));
        assert!(groups_agree(&groups(1, 0), &groups(1, 0)));
    }
}
