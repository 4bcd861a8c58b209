//! vLLM's start-up profile run on one rank, simulated, and what it leaves in vLLM's
//! accounting (see the parent module's comment for the formulas).

use super::{padded_vocab, scheduler};
use crate::budget::GpuProfile;
use crate::config::{TrainConfig, VllmVersion};
use crate::error::Result;
use crate::model::Stage;
use crate::run::{simulate_vllm_profile_stage, simulate_vllm_v1_profile_stage, ProfileBatch};
use crate::sim::timeline::Phase;
use crate::sim::{replay, Runtime};

/// The profile run of `c` on one rank (`rank`: its tensor-parallel shard, `stage`: its
/// pipeline-parallel share) and what it leaves in vLLM's accounting.
pub(super) struct ProfileRun {
    pub batch: ProfileBatch,
    pub scheduler_source: String,
    /// Allocated once `load_model` is done (V1's `model_memory_usage`).
    pub weights_bytes: u64,
    /// V1: reserved after the run less reserved before it; V0: allocated peak less weights.
    pub activation_bytes: u64,
}

pub(super) fn profile_run(
    c: &TrainConfig,
    rank: &TrainConfig,
    gpu: Option<&GpuProfile>,
    stage: Stage,
) -> Result<ProfileRun> {
    let sched = scheduler(c, gpu);
    let tokens = sched.max_num_batched_tokens;
    let batch = ProfileBatch {
        tokens,
        reqs: sched.max_num_seqs.min(tokens).max(1),
        vocab: c.vocab_size,
        gathered_vocab: (c.tensor_parallel_size > 1).then(|| padded_vocab(c.vocab_size)),
    };
    let rt = Runtime::pytorch(rank, gpu);
    let tl = match c.vllm_version {
        VllmVersion::V0 => simulate_vllm_profile_stage(rank, rt, batch, stage)?,
        VllmVersion::V1 => simulate_vllm_v1_profile_stage(rank, rt, batch, stage)?,
    };
    let profile = replay(&tl, rt.expandable_segments);
    let loaded = profile.phase(Phase::Init);
    let weights_bytes = loaded.end_allocated;
    let activation_bytes = match c.vllm_version {
        VllmVersion::V0 => profile.peak_allocated.saturating_sub(weights_bytes),
        VllmVersion::V1 => profile.peak_reserved.saturating_sub(loaded.peak_reserved),
    };
    Ok(ProfileRun {
        batch,
        scheduler_source: sched.source,
        weights_bytes,
        activation_bytes,
    })
}
