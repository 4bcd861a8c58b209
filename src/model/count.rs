//! Parameter counts for what needs a size before (or besides) simulating: suggest's step-time
//! ranking, the probe's estimate, the report's header. They are counted from the parameters
//! the simulator builds (`Model::build`), so the count and the simulated tensors cannot
//! disagree; tests hold both to the presets' published counts.

use crate::config::{Parallelism, Quantization, TrainConfig};
use crate::sim::engine::Engine;
use crate::sim::runtime::Runtime;

/// Parameters as PyTorch counts them (`sum(p.numel() for p in model.parameters())`): a tied
/// lm_head once, buffers (nanoGPT's causal mask, rotary's inv_freq) not at all, LoRA's
/// adapters included.
pub fn n_params(cfg: &TrainConfig) -> u64 {
    built_params(cfg, cfg.lora_rank)
}

/// LoRA's adapters: r × (in + out) for each targeted Linear of each layer.
pub fn lora_params(cfg: &TrainConfig) -> u64 {
    if cfg.lora_rank == 0 {
        return 0;
    }
    n_params(cfg) - base_params(cfg)
}

/// The model's own weights (frozen under LoRA).
pub fn base_params(cfg: &TrainConfig) -> u64 {
    built_params(cfg, 0)
}

/// The model as one GPU holds it (no shards, no packed 4-/8-bit storage: the logical shapes),
/// built in an engine of its own and counted by element.
fn built_params(cfg: &TrainConfig, lora_rank: u64) -> u64 {
    let mut logical = cfg.clone();
    logical.lora_rank = lora_rank;
    logical.quantization = Quantization::None;
    logical.parallelism = Parallelism::Ddp;
    logical.world_size = 1;
    let mut e = Engine::new(Runtime::pytorch(&logical, None));
    super::Model::build(&mut e, &logical);
    let n = e
        .params
        .iter()
        .map(|p| p.shape.numel().unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add);
    // The tables go back for the next simulation on this thread (sim/spare.rs): suggest
    // counts parameters for every candidate it ranks.
    crate::sim::spare::give_back(e.tl);
    n
}
