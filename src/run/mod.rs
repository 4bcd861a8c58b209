//! The one place that simulates and judges: `run(config, gpu)` resolves the decisions the
//! simulation is made under (runtime, precision after fallback, attention kernel, allocator
//! mode, framework), simulates the Timeline, replays it through the caching allocator and
//! returns one [`Run`]; [`Budget::judge`](crate::budget::Budget::judge) turns a Run into the
//! [`Verdict`]. Front-ends (check, suggest, diagnose, explain, svg) read a Run and a Verdict;
//! none computes bytes or a verdict itself.
//!
//! The runs themselves live here, above `sim` (the engine, ops, allocator and timeline, which
//! know no model) and `model` (the architectures): [`train`] is nanoGPT's train.py loop with
//! the frameworks' differences, [`infer`] the inference runs and vLLM's profile runs.

mod decisions;
pub mod infer;
pub mod train;
mod verdict;

pub use decisions::{AllocatorMode, AttentionKernel, Decision, Decisions};
pub use infer::{
    simulate_inference, simulate_vllm_profile, simulate_vllm_profile_stage,
    simulate_vllm_v1_profile, simulate_vllm_v1_profile_stage, ProfileBatch,
};
pub use train::simulate;
pub use verdict::{Band, Figure, Provenance, Verdict};

use crate::budget::GpuProfile;
use crate::config::{Mode, TrainConfig};
use crate::error::Result;
use crate::sim::replay::replay_within;
use crate::sim::{MemoryProfile, Runtime, Timeline};

/// One simulated run: what happened (Timeline), what the allocator made of it (the profile:
/// peaks, per-event allocated and reserved bytes) and the choices it was simulated under.
pub struct Run {
    pub decisions: Decisions,
    pub runtime: Runtime,
    pub timeline: Timeline,
    pub profile: MemoryProfile,
}

/// Simulate `cfg` as PyTorch would run it on `gpu` (None: no card known; the architecture
/// decides the cuBLAS workspaces, the card's bf16 support the precision).
pub fn run(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Result<Run> {
    match run_timeline_within(cfg, gpu, timeline(cfg, gpu)?, u64::MAX) {
        Ok(run) => Ok(run),
        Err(_) => unreachable!("no reserved figure is above u64::MAX"),
    }
}

/// The Run of `cfg` from its Timeline, already simulated by [`timeline`] with the same `cfg`
/// and `gpu` (suggest's lower bound simulated it; only the allocator replay is left), or the
/// Timeline back (Err) as soon as reserved memory passes `reserved_limit` (see
/// [`replay_within`]): the run's reserved peak is above the limit then.
pub fn run_timeline_within(
    cfg: &TrainConfig,
    gpu: Option<&GpuProfile>,
    timeline: Timeline,
    reserved_limit: u64,
) -> std::result::Result<Run, Timeline> {
    let runtime = Runtime::pytorch(cfg, gpu);
    let decisions = Decisions::pytorch(cfg, gpu, &runtime);
    let expandable = decisions.allocator.value == AllocatorMode::ExpandableSegments;
    let Some(profile) = replay_within(&timeline, expandable, reserved_limit) else {
        return Err(timeline);
    };
    Ok(Run {
        decisions,
        runtime,
        timeline,
        profile,
    })
}

/// Only the Timeline (no allocator replay): what suggest's lower bound needs. It does not
/// depend on the allocator's configuration (`alloc_conf`): only the replay reads that.
pub fn timeline(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Result<Timeline> {
    let runtime = Runtime::pytorch(cfg, gpu);
    simulate_timeline(cfg, &Decisions::pytorch(cfg, gpu, &runtime), runtime)
}

fn simulate_timeline(cfg: &TrainConfig, d: &Decisions, runtime: Runtime) -> Result<Timeline> {
    let mut sim_cfg = cfg.clone();
    sim_cfg.dtype = d.precision.value;
    match cfg.mode {
        Mode::Train => simulate(&sim_cfg, runtime),
        Mode::Inference => simulate_inference(&sim_cfg, runtime),
    }
}
