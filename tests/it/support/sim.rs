//! Running the simulator by hand: a whole training run, or an eager engine to call ops on and
//! read what they leave alive.
#![allow(dead_code)] // each test binary uses its own subset

use vramplan::config::TrainConfig;
use vramplan::run::simulate;
use vramplan::sim::dtype::DType;
use vramplan::sim::engine::{Engine, V};
use vramplan::sim::runtime::{Runtime, RuntimeKind};
use vramplan::sim::timeline::{Category, EventKind, Name, Shape};
use vramplan::sim::Timeline;

/// The whole training run of `c` under PyTorch's runtime.
pub fn run(c: &TrainConfig) -> Timeline {
    simulate(c, Runtime::pytorch(c, None)).unwrap()
}

/// PyTorch eager with `autocast`, without cuBLAS workspaces or expandable segments.
pub fn eager(autocast: Option<DType>) -> Runtime {
    Runtime {
        kind: RuntimeKind::PytorchEager,
        autocast,
        cublas_workspace_bytes: 0,
        cublaslt_workspace_bytes: 0,
        expandable_segments: false,
        flash_attention: true,
    }
}

/// An [`eager`] engine in training with grad mode on and `autocast` entered.
pub fn engine(autocast: Option<DType>) -> Engine {
    let mut e = Engine::new(eager(autocast));
    e.grad_mode = true;
    e.training = true;
    e.enter_autocast(autocast);
    e
}

/// Whether each tensor of the engine's Timeline is alive after its last event.
pub fn alive(e: &Engine) -> Vec<bool> {
    let mut alive = vec![false; e.tl.tensors.len()];
    for ev in &e.tl.events {
        alive[ev.tensor as usize] = ev.kind == EventKind::Alloc;
    }
    alive
}

/// Live storage bytes (unrounded) of tensors other than parameters.
pub fn live_bytes(e: &Engine) -> u64 {
    e.tl.tensors
        .iter()
        .zip(alive(e))
        .filter(|(t, a)| *a && t.category != Category::Parameters)
        .map(|(t, _)| t.bytes)
        .sum()
}

/// An input that requires grad (a parameter edge stands in for "some upstream node").
pub fn activation(e: &mut Engine, dims: &[u64], dtype: DType) -> V {
    let p = e.add_param(Name::top("input", ""), &[1], false);
    let edge = e.param(p).edge;
    let t = e.alloc(
        Name::top("x", ""),
        Shape::new(dims),
        dtype,
        Category::Activations,
    );
    V { t, edge }
}
