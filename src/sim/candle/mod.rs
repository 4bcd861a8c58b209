//! The simulator's `candle` runtime: candle 0.11.1's memory rules for the probe's GPT
//! (nanogpt.rs, which the probe runs on candle's own tensors), replayed op by op on
//! shape-only tensors.
//!
//! The rules (docs/candle-runtime.md) differ from PyTorch's: a tensor keeps its inputs alive,
//! so the loss pins the whole graph; backward frees nothing of the forward and accumulates
//! every gradient out of place (zeros_like + add); the GradStore keeps the parameters' grads
//! and those of constant operands; AdamW computes out of place. Tensors here are `Rc`s holding
//! their storage as candle's `Arc`s do, so a storage is released exactly when candle frees it;
//! every storage is an `Engine` tensor, so the run is a `Timeline` like PyTorch's.
//!
//! candle has no caching allocator: the bytes in use are the live storages, exactly.

mod backward;
mod gpt;
pub mod nanogpt;
mod ops;
mod record;
mod shape;
mod tensor;

use super::engine::Engine;
use super::runtime::Runtime;
use super::timeline::{Category, EventKind, Phase, Timeline};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::sim::DType;
use backward::{backward, AdamW};
use gpt::SimWeights;
use nanogpt::{Dims, Gpt};
use record::Scope;
pub use shape::{candle_dtype, dtype_of, sim_dtype, Shape};
use tensor::T;

/// The phases the probe measures, as it names them.
pub const PHASES: [(Phase, &str); 3] = [
    (Phase::Forward, "forward"),
    (Phase::Backward, "backward"),
    (Phase::Optimizer, "optimizer"),
];

fn dims(cfg: &TrainConfig) -> Result<Dims> {
    let s = Shape::of(cfg, cfg.n_layer)?;
    Ok(Dims::of(
        &s,
        DType::of_precision(cfg.dtype),
        cfg.dropout as f32,
    ))
}

/// One training step of the probe in candle, as src/probe/run.rs runs it: the model, AdamW
/// (m and v created with it) and a batch at rest (Init); the forward to the loss (Forward);
/// `loss.backward()` (Backward); `opt.step(&grads)` with the loss still alive (Optimizer).
pub fn simulate_candle(cfg: &TrainConfig) -> Result<Timeline> {
    let d = dims(cfg)?;
    record::install(Engine::new(Runtime::candle()));
    {
        let mut weights = SimWeights {
            params: Vec::new(),
            dt: d.dt,
        };
        let shape_only = |e: candle_core::Error| crate::error::Error::new(e.to_string());
        let model = Gpt::new(d, &mut weights).map_err(shape_only)?;
        let opt = AdamW::new(&weights.params);
        record::enter(Scope::new(None, "batch", Category::Other));
        let x = T::new(&[d.b, d.t], DType::U32, "x");
        let y = T::new(&[d.b, d.t], DType::U32, "y");
        record::set_phase(Phase::Forward);
        let loss = model.loss(&x, &y).map_err(shape_only)?;
        record::set_phase(Phase::Backward);
        let grads = backward(&loss);
        record::set_phase(Phase::Optimizer);
        opt.step(&grads);
        // The Timeline ends where the probe's optimizer phase does: the step done, the grads
        // and the loss still alive. They, the model, AdamW and the batch are dropped after the
        // engine is taken, so none of that is recorded (the next step starts from Init's state).
        let engine = record::take().expect("the candle runtime's engine was installed");
        drop((grads, loss, model, weights, opt, x, y));
        Ok(engine.tl)
    }
}

/// One phase as the probe measures it, in bytes above what the process held before the model
/// was built: in use when it starts, at most during it (never below the start), when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseBytes {
    pub name: &'static str,
    pub start: u64,
    pub peak: u64,
    pub end: u64,
}

/// The probe's phases read off a candle Timeline: candle has no caching allocator, so the bytes
/// in use are exactly the live storages (no rounding, no blocks).
pub fn phase_bytes(tl: &Timeline) -> Vec<PhaseBytes> {
    let mut out: Vec<PhaseBytes> = PHASES
        .iter()
        .map(|&(_, name)| PhaseBytes {
            name,
            start: 0,
            peak: 0,
            end: 0,
        })
        .collect();
    let mut seen = [false; 3];
    let mut live = 0u64;
    for ev in &tl.events {
        let slot = PHASES.iter().position(|(p, _)| *p == ev.phase);
        if let Some(i) = slot {
            if !seen[i] {
                seen[i] = true;
                out[i].start = live;
                out[i].peak = live;
            }
        }
        let bytes = tl.tensors[ev.tensor as usize].bytes;
        match ev.kind {
            EventKind::Alloc => live += bytes,
            EventKind::Free => live -= bytes,
        }
        if let Some(i) = slot {
            out[i].peak = out[i].peak.max(live);
            out[i].end = live;
        }
    }
    // A phase that allocated nothing sits at the previous phase's end.
    for i in 0..out.len() {
        if !seen[i] {
            let prev = if i == 0 { live } else { out[i - 1].end };
            (out[i].start, out[i].peak, out[i].end) = (prev, prev, prev);
        }
    }
    out
}

/// The simulator's prediction for `vramplan probe`: forward, backward and optimizer peaks in
/// bytes above the probe's baseline.
pub fn candle_phase_peaks(cfg: &TrainConfig) -> Result<Vec<(String, u64)>> {
    let tl = simulate_candle(cfg)?;
    Ok(phase_bytes(&tl)
        .into_iter()
        .map(|p| (p.name.to_string(), p.peak))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(bias: bool) -> TrainConfig {
        TrainConfig {
            batch_size: 2,
            block_size: 16,
            n_embd: 32,
            n_head: 4,
            vocab_size: 50,
            n_layer: 2,
            bias,
            dropout: 0.0,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn the_timeline_names_categorises_and_phases_every_storage() {
        let tl = simulate_candle(&tiny(true)).unwrap();
        let names: Vec<String> = tl.tensors.iter().map(|t| t.name.to_string()).collect();
        for n in [
            "wte.weight",
            "layer1.mlp.c_fc.weight",
            "layer0.mlp.c_fc.matmul",
            "layer1.attn.c_proj.exp_avg",
            "batch.x",
        ] {
            assert!(names.iter().any(|m| m == n), "{n} missing");
        }
        let cats = |c: Category| tl.tensors.iter().filter(|t| t.category == c).count();
        // 2 + 2 + 12 per layer + 2 parameters with biases; m and v for each.
        assert_eq!(cats(Category::Parameters), 28);
        assert!(cats(Category::Optimizer) >= 56);
        for c in [Category::Gradients, Category::Activations, Category::Logits] {
            assert!(cats(c) > 0, "{c:?}");
        }
        for p in [
            Phase::Init,
            Phase::Forward,
            Phase::Backward,
            Phase::Optimizer,
        ] {
            assert!(tl.events.iter().any(|e| e.phase == p), "{p:?}");
        }
        // Parameters and optimizer state are never freed within the step.
        assert!(tl.events.iter().all(|e| e.kind == EventKind::Alloc
            || !matches!(tl.tensors[e.tensor as usize].category, Category::Parameters)));
    }

    #[test]
    fn phases_chain_and_peaks_are_the_prediction() {
        let cfg = tiny(false);
        let p = phase_bytes(&simulate_candle(&cfg).unwrap());
        assert_eq!(
            p.iter().map(|p| p.name).collect::<Vec<_>>(),
            ["forward", "backward", "optimizer"]
        );
        assert_eq!((p[1].start, p[2].start), (p[0].end, p[1].end));
        assert!(p.iter().all(|p| p.peak >= p.start && p.peak >= p.end));
        let peaks = candle_phase_peaks(&cfg).unwrap();
        assert_eq!(
            peaks.iter().map(|x| x.1).collect::<Vec<_>>(),
            p.iter().map(|p| p.peak).collect::<Vec<_>>()
        );
        // The loss pins the graph: the forward frees nothing.
        assert_eq!(p[0].peak, p[0].end);
        assert!(candle_phase_peaks(&TrainConfig { n_head: 5, ..cfg }).is_err());
    }
}
