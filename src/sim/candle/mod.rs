//! The simulator's `candle` runtime: candle 0.11.1's memory rules for the probe's GPT
//! (src/probe/model.rs), replayed op by op on shape-only tensors.
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
mod ops;
mod record;
mod tensor;

use super::engine::Engine;
use super::runtime::Runtime;
use super::timeline::{Category, EventKind, Phase, Timeline};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::probe::model::{dtype_of, Shape as ProbeShape};
use crate::sim::DType;
use backward::{backward, AdamW};
use gpt::{Dims, Gpt};
use record::Scope;
use tensor::T;

/// The phases the probe measures, as it names them.
pub const PHASES: [(Phase, &str); 3] = [
    (Phase::Forward, "forward"),
    (Phase::Backward, "backward"),
    (Phase::Optimizer, "optimizer"),
];

fn dims(cfg: &TrainConfig) -> Result<Dims> {
    let s = ProbeShape::of(cfg, cfg.n_layer)?;
    let dt = match dtype_of(cfg.dtype) {
        candle_core::DType::BF16 => DType::BF16,
        candle_core::DType::F16 => DType::F16,
        _ => DType::F32,
    };
    Ok(Dims {
        b: s.batch_size,
        t: s.block_size,
        c: s.n_embd,
        h: s.n_head,
        v: s.vocab_size,
        l: s.n_layer,
        bias: s.bias,
        dt,
        dropout: cfg.dropout > 0.0,
    })
}

/// One training step of the probe in candle, as src/probe/run.rs runs it: the model, AdamW
/// (m and v created with it) and a batch at rest (Init); the forward to the loss (Forward);
/// `loss.backward()` (Backward); `opt.step(&grads)` with the loss still alive, then the grads
/// and the loss dropped (Optimizer).
pub fn simulate_candle(cfg: &TrainConfig) -> Result<Timeline> {
    let d = dims(cfg)?;
    record::install(Engine::new(Runtime::candle()));
    {
        let model = Gpt::new(d);
        let opt = AdamW::new(&model.params);
        record::enter(Scope::new(None, "batch", Category::Other));
        let x = T::new(&[d.b, d.t], DType::U32, "x");
        let y = T::new(&[d.b, d.t], DType::U32, "y");
        record::set_phase(Phase::Forward);
        let loss = model.loss(&x, &y);
        record::set_phase(Phase::Backward);
        let grads = backward(&loss);
        record::set_phase(Phase::Optimizer);
        opt.step(&grads);
        drop(grads);
        drop(loss);
        // The model, AdamW and the batch stay (a later step starts from the same state): the
        // engine is taken first, so dropping them records nothing.
        let engine = record::take().expect("the candle runtime's engine was installed");
        drop((model, opt, x, y));
        Ok(engine.tl)
    }
}

/// Each measured phase's peak bytes above what the process held before the model was built
/// (the probe's baseline): the live bytes when the phase starts, or more during it.
pub fn phase_peaks(tl: &Timeline) -> Vec<(String, u64)> {
    let mut peaks = [None::<u64>; 3];
    let mut live = 0u64;
    for ev in &tl.events {
        let bytes = tl.tensors[ev.tensor as usize].bytes;
        let slot = PHASES.iter().position(|(p, _)| *p == ev.phase);
        if let Some(i) = slot {
            peaks[i].get_or_insert(live);
        }
        match ev.kind {
            EventKind::Alloc => live += bytes,
            EventKind::Free => live -= bytes,
        }
        if let Some(i) = slot {
            peaks[i] = peaks[i].map(|p| p.max(live));
        }
    }
    PHASES
        .iter()
        .zip(peaks)
        .map(|((_, name), p)| (name.to_string(), p.unwrap_or(live)))
        .collect()
}

/// The simulator's prediction for `vramplan probe`: forward, backward and optimizer peaks in
/// bytes above the probe's baseline.
pub fn candle_phase_peaks(cfg: &TrainConfig) -> Result<Vec<(String, u64)>> {
    Ok(phase_peaks(&simulate_candle(cfg)?))
}
