//! One rank (rank 0) of a multi-GPU run: the same train.py loop on the same Engine, with the
//! policy of the engine that spreads the run over `world_size` GPUs.
//!
//! - `ddp` — torch DistributedDataParallel (nanoGPT's torchrun path): every rank holds the
//!   whole model, its gradients and optimizer state; the Reducer adds flat gradient buckets
//!   (ddp.rs).
//! - `zero1` / `zero2` — DeepSpeed's ZeRO optimizer: the module in half precision, fp32 master
//!   weights and Adam moments partitioned over the ranks; stage 2 also partitions the
//!   gradients through a contiguous reduce bucket (zero.rs).
//! - `zero3` — DeepSpeed's ZeRO-3: parameters partitioned too, gathered per unit (zero3.rs,
//!   on fsdp.rs's schedule).
//! - `tp` — Megatron-style tensor parallelism of degree world_size: the model's own
//!   dimensions are split (heads, MLP width, vocabulary; model/gpt2.rs reads `tp_degree`),
//!   with the vocab-parallel embedding and cross-entropy ops (sim/ops/tp.rs).
//! - `fsdp` / `fsdp_grad_op` — PyTorch FSDP FULL_SHARD / SHARD_GRAD_OP: parameters, gradients
//!   and optimizer state sharded per unit (a transformer block, and the root), each unit
//!   all-gathered around its forward and its backward (fsdp.rs). The models mark their units
//!   with `unit_enter` / `unit_exit`.
//!
//! The policy acts through hooks train.rs calls at the points where the real engines act:
//! before the model is built (parameter storage), after it is built (flattening, buckets,
//! optimizer state), around each backward, on each parameter's gradient (AccumulateGrad's
//! post-hook) and at the optimizer step. world_size = 1 with `ddp` is the single-GPU run,
//! untouched.

mod ddp;
mod fsdp;
mod fsdp_units;
mod zero;
mod zero3;
mod zero_offload;

use super::autograd::Edge;
use super::dtype::DType;
use super::engine::{Engine, T, V};
use super::ops::{Backward, Op};
use super::timeline::Phase;
use crate::config::{Parallelism, TrainConfig};

pub use ddp::bucket_assignment;
pub use zero::{REDUCE_BUCKET_ELEMENTS, ZERO_ALIGNMENT};
pub use zero3::PERSISTENCE_THRESHOLD;

/// The rank's policy and its state.
#[derive(Debug, Clone)]
pub struct Dist {
    pub world: u64,
    pub mode: Parallelism,
    zero: Option<zero::Zero>,
    fsdp: Option<fsdp::Fsdp>,
    /// DDP with gradient_as_bucket_view=True and its buckets built.
    bucket_view: bool,
}

impl Dist {
    /// One GPU, no wrapper.
    pub fn single() -> Dist {
        Dist {
            world: 1,
            mode: Parallelism::Ddp,
            zero: None,
            fsdp: None,
            bucket_view: false,
        }
    }

    /// Whether a multi-GPU engine wraps the model at all: DDP only under torchrun with more
    /// than one rank (nanoGPT's `ddp = int(os.environ.get('RANK', -1)) != -1`); DeepSpeed's
    /// ZeRO builds its buffers even on one GPU.
    fn active(&self) -> bool {
        match self.mode {
            Parallelism::Ddp => self.world > 1,
            // Tensor parallelism is in the model's dimensions (tp_degree), not a wrapper.
            Parallelism::Tp => false,
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
    if cfg.parallelism == Parallelism::Tp {
        // Every tensor-parallel rank runs every micro-step on the same batch.
        return cfg.gradient_accumulation_steps;
    }
    (cfg.gradient_accumulation_steps / cfg.world_size.max(1)).max(1)
}

/// The tensor-parallel degree (1 unless `parallelism = 'tp'`).
pub fn tp_degree(cfg: &TrainConfig) -> u64 {
    if cfg.parallelism == Parallelism::Tp {
        cfg.world_size.max(1)
    } else {
        1
    }
}

/// Megatron pads the vocabulary to a multiple of `make_vocab_size_divisible_by` (128) × the
/// tensor-parallel degree; each rank holds an equal slice of the rows.
pub const VOCAB_DIVISIBLE_BY: u64 = 128;

/// Rows of the vocabulary on each tensor-parallel rank.
pub fn vocab_per_rank(cfg: &TrainConfig) -> u64 {
    let tp = tp_degree(cfg);
    if tp == 1 {
        return cfg.vocab_size;
    }
    let multiple = VOCAB_DIVISIBLE_BY * tp;
    cfg.vocab_size.div_ceil(multiple) * multiple / tp
}

/// Before `model.to(device)`: under ZeRO and FSDP the trainable parameters become views (no
/// storage of their own) into the flat buffers those engines own.
pub fn setup(e: &mut Engine, cfg: &TrainConfig) {
    e.dist = Dist {
        world: cfg.world_size.max(1),
        mode: cfg.parallelism,
        zero: None,
        fsdp: None,
        bucket_view: false,
    };
    if zero::stage(cfg.parallelism).is_some()
        || cfg.parallelism == Parallelism::Zero3
        || fsdp_strategy(cfg.parallelism).is_some()
    {
        e.param_view = Some(module_dtype(e));
    }
    // FSDP's flat parameters and ZeRO-3's partitions hold the frozen parameters too.
    e.frozen_view =
        cfg.parallelism == Parallelism::Zero3 || fsdp_strategy(cfg.parallelism).is_some();
}

/// After the model is on the device: DDP's construction, or DeepSpeed's optimizer's.
pub fn after_build(e: &mut Engine, cfg: &TrainConfig) {
    if !e.dist.active() {
        return;
    }
    if let Some(stage) = zero::stage(e.dist.mode) {
        let z = zero::Zero::build(e, stage, cfg.optimizer, cfg.offload_optimizer);
        e.dist.zero = Some(z);
    } else if e.dist.mode == Parallelism::Zero3 {
        let offload = (cfg.offload_optimizer, cfg.offload_params);
        let z = zero3::Zero3::build(e, cfg.optimizer, offload);
        e.dist.fsdp = Some(fsdp::Fsdp::build_zero3(e, cfg.optimizer, z));
    } else if let Some(full_shard) = fsdp_strategy(e.dist.mode) {
        // LoRA: the Trainer wraps with PEFT's policy, each adapter its own unit.
        let wrap = fsdp_units::Wrap {
            per_leaf: cfg.lora_rank > 0,
            offload: cfg.offload_params,
            shard_dtype: match cfg.quantization.is_4bit() {
                true => module_dtype(e),
                false => DType::F32,
            },
        };
        let f = fsdp::Fsdp::build(e, full_shard, cfg.optimizer, wrap);
        e.dist.fsdp = Some(f);
    } else {
        ddp::construct(e);
        e.dist.bucket_view = cfg.ddp_bucket_view;
    }
}

/// Some(reshard after forward) for the FSDP strategies: FULL_SHARD true, SHARD_GRAD_OP false.
fn fsdp_strategy(p: Parallelism) -> Option<bool> {
    match p {
        Parallelism::Fsdp => Some(true),
        Parallelism::FsdpGradOp => Some(false),
        _ => None,
    }
}

/// A unit's forward starts (`layer` None: the root, at the model's first op).
pub fn unit_enter(e: &mut Engine, layer: Option<u32>) {
    with_fsdp(e, |f, e| f.enter(e, layer));
}

/// Block `layer`'s forward has produced `x`: under FSDP its output carries the unit's
/// pre-backward hook on the tape, and FULL_SHARD frees the unit's gathered parameters.
pub fn unit_exit(e: &mut Engine, layer: u32, x: V) -> V {
    if e.dist.fsdp.is_none() {
        return x;
    }
    let edge = e.push_node(
        Op::Unshard(UnshardSaved { unit: layer }),
        [x.edge, Edge::None, Edge::None],
    );
    with_fsdp(e, |f, e| f.exit(e, layer));
    V { t: x.t, edge }
}

/// The output of an FSDP unit: its backward is the unit's pre-backward hook (gather the
/// unit's parameters, prefetch the next); the gradient passes through.
#[derive(Debug, Clone, Copy)]
pub struct UnshardSaved {
    unit: u32,
}

impl Backward for UnshardSaved {
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        pre_backward(e, self.unit);
        [Some(g), None, None]
    }
}

/// The backward reached block `layer`'s output (Op::Unshard).
pub fn pre_backward(e: &mut Engine, layer: u32) {
    with_fsdp(e, |f, e| f.pre_backward(e, layer));
}

/// Right before `loss.backward()` (DeepSpeed's `engine.backward` allocates its reduce bucket);
/// `boundary`: the micro-step that ends the accumulation.
pub fn before_backward(e: &mut Engine, boundary: bool) {
    in_backward(e, |e| with_zero(e, |z, e| z.before_backward(e, boundary)));
    in_backward(e, |e| with_fsdp(e, |f, e| f.root_pre_backward(e)));
}

/// Right after `loss.backward()`; `boundary`: the micro-step that ends the accumulation.
pub fn after_backward(e: &mut Engine, boundary: bool) {
    in_backward(e, |e| with_zero(e, |z, e| z.after_backward(e, boundary)));
    in_backward(e, |e| with_fsdp(e, |f, e| f.end_of_backward(e)));
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
    } else if e.dist.fsdp.is_some() {
        with_fsdp(e, |f, e| f.grad_ready(e, p));
    } else if e.dist.bucket_view {
        ddp::grad_as_bucket_view(e, p);
    }
}

/// The optimizer step when the multi-GPU engine owns it (DeepSpeed); false: train.py's own
/// clip + step + zero_grad run.
pub fn optimizer_step(e: &mut Engine) -> bool {
    with_zero(e, |z, e| z.step(e)).is_some() || with_fsdp(e, |f, e| f.step(e)).is_some()
}

/// Run `f` on the ZeRO state, if any, with the engine borrowed alongside.
fn with_zero<R>(e: &mut Engine, f: impl FnOnce(&mut zero::Zero, &mut Engine) -> R) -> Option<R> {
    let mut z = e.dist.zero.take()?;
    let r = f(&mut z, e);
    e.dist.zero = Some(z);
    Some(r)
}

fn with_fsdp<R>(e: &mut Engine, f: impl FnOnce(&mut fsdp::Fsdp, &mut Engine) -> R) -> Option<R> {
    let mut s = e.dist.fsdp.take()?;
    let r = f(&mut s, e);
    e.dist.fsdp = Some(s);
    Some(r)
}

/// Whether a Parameters-category tensor holds other parameters' storage (a flat buffer):
/// parameter counts skip it and count the views.
pub fn is_flat_buffer(name: &super::timeline::Name) -> bool {
    name.module == zero::FLAT_MODULE
}
