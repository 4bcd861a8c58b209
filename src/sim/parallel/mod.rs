//! One rank (rank 0) of a multi-GPU run: the same train.py loop on the same Engine, with the
//! policy of the engine that spreads the run over `world_size` GPUs.
//!
//! - `ddp` — torch DistributedDataParallel (nanoGPT's torchrun path): every rank holds the
//!   whole model, its gradients and optimizer state; the Reducer adds flat gradient buckets
//!   (ddp.rs).
//! - `zero1` / `zero2` — DeepSpeed's ZeRO optimizer: the module in half precision, fp32 master
//!   weights and Adam moments partitioned over the ranks; stage 2 also partitions the
//!   gradients through a contiguous reduce bucket (zero.rs).
//!
//! The policy acts through hooks train.rs calls at the points where the real engines act:
//! before the model is built (parameter storage), after it is built (flattening, buckets,
//! optimizer state), around each backward, on each parameter's gradient (AccumulateGrad's
//! post-hook) and at the optimizer step. world_size = 1 with `ddp` is the single-GPU run,
//! untouched.

mod ddp;
mod zero;

use super::dtype::DType;
use super::engine::Engine;
use super::timeline::Phase;
use crate::config::{Parallelism, TrainConfig};

pub use ddp::bucket_assignment;
pub use zero::{REDUCE_BUCKET_ELEMENTS, ZERO_ALIGNMENT};

/// The rank's policy and its state.
#[derive(Debug, Clone)]
pub struct Dist {
    pub world: u64,
    pub mode: Parallelism,
    zero: Option<zero::Zero>,
}

impl Dist {
    /// One GPU, no wrapper.
    pub fn single() -> Dist {
        Dist {
            world: 1,
            mode: Parallelism::Ddp,
            zero: None,
        }
    }

    /// Whether a multi-GPU engine wraps the model at all: DDP only under torchrun with more
    /// than one rank (nanoGPT's `ddp = int(os.environ.get('RANK', -1)) != -1`); DeepSpeed's
    /// ZeRO builds its buffers even on one GPU.
    fn active(&self) -> bool {
        match self.mode {
            Parallelism::Ddp => self.world > 1,
            _ => true,
        }
    }
}

/// The module's storage dtype under DeepSpeed: the half dtype of the run (`bf16.enabled` /
/// `fp16.enabled` call `module.bfloat16()` / `.half()` before moving it to the device), fp32
/// when the run is fp32.
fn module_dtype(e: &Engine) -> DType {
    e.rt.autocast.unwrap_or(DType::F32)
}

/// Micro-steps each rank runs per optimizer step: train.py asserts that
/// gradient_accumulation_steps divides by the world size and gives each rank its share
/// (validate() checks the divisibility); tokens per step stay global.
pub fn micro_steps(cfg: &TrainConfig) -> u64 {
    (cfg.gradient_accumulation_steps / cfg.world_size.max(1)).max(1)
}

/// Before `model.to(device)`: under ZeRO the trainable parameters become views into the
/// flat half-precision groups the optimizer builds.
pub fn setup(e: &mut Engine, cfg: &TrainConfig) {
    e.dist = Dist {
        world: cfg.world_size.max(1),
        mode: cfg.parallelism,
        zero: None,
    };
    if zero::stage(cfg.parallelism).is_some() {
        e.param_view = Some(module_dtype(e));
    }
}

/// After the model is on the device: DDP's construction, or DeepSpeed's optimizer's.
pub fn after_build(e: &mut Engine, cfg: &TrainConfig) {
    if !e.dist.active() {
        return;
    }
    match zero::stage(e.dist.mode) {
        Some(stage) => {
            let z = zero::Zero::build(e, stage, cfg.optimizer);
            e.dist.zero = Some(z);
        }
        None => ddp::construct(e),
    }
}

/// Right before `loss.backward()` (DeepSpeed's `engine.backward` allocates its reduce bucket).
pub fn before_backward(e: &mut Engine) {
    in_backward(e, |e| with_zero(e, |z, e| z.before_backward(e)));
}

/// Right after `loss.backward()`; `boundary`: the micro-step that ends the accumulation.
pub fn after_backward(e: &mut Engine, boundary: bool) {
    in_backward(e, |e| with_zero(e, |z, e| z.after_backward(e, boundary)));
}

/// The engine's backward call wraps autograd's: what it does counts as the backward phase.
fn in_backward(e: &mut Engine, f: impl FnOnce(&mut Engine) -> Option<()>) {
    let phase = std::mem::replace(&mut e.phase, Phase::Backward);
    f(e);
    e.phase = phase;
}

/// A parameter's gradient is ready (AccumulateGrad has run).
pub fn grad_ready(e: &mut Engine, p: usize) {
    if e.dist.zero.is_some() {
        with_zero(e, |z, e| z.grad_ready(e, p));
    }
}

/// The optimizer step when the multi-GPU engine owns it (DeepSpeed); false: train.py's own
/// clip + step + zero_grad run.
pub fn optimizer_step(e: &mut Engine) -> bool {
    with_zero(e, |z, e| z.step(e)).is_some()
}

/// Run `f` on the ZeRO state, if any, with the engine borrowed alongside.
fn with_zero<R>(e: &mut Engine, f: impl FnOnce(&mut zero::Zero, &mut Engine) -> R) -> Option<R> {
    let mut z = e.dist.zero.take()?;
    let r = f(&mut z, e);
    e.dist.zero = Some(z);
    Some(r)
}

/// Whether a Parameters-category tensor holds other parameters' storage (a flat buffer):
/// parameter counts skip it and count the views.
pub fn is_flat_buffer(name: &super::timeline::Name) -> bool {
    name.module == zero::FLAT_MODULE
}
