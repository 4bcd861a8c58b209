//! nanoGPT's train.py, in the order it touches GPU memory:
//! init (model.to(device), first batch) → estimate_loss() at iteration 0 → training steps
//! (micro-steps of forward + backward, then clip, AdamW, zero_grad) → a later estimate_loss().
//! The keys that change what train.py runs (eval_only, init_from='resume', max_iters,
//! eval_interval) decide which of these happen: [`schedule`], [`load_checkpoint`].

use crate::config::TrainConfig;
use crate::error::Result;
use crate::model::Model;
use crate::sim::amp;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops;
use crate::sim::optim;
use crate::sim::optim::optimizer_order;
use crate::sim::parallel;
use crate::sim::runtime::Runtime;
use crate::sim::timeline::{Category, Name, Phase, Shape, Timeline};

/// Training steps simulated: the first creates AdamW's state, the second is the steady state
/// (state alive during forward and backward).
const STEPS: u32 = 2;
/// Micro-steps simulated per step: the second has `.grad` alive and the first's logits still
/// referenced; later ones repeat it exactly.
const MICRO_STEPS: u64 = 2;
/// Iterations of each estimate_loss(): the second has the first's logits still referenced.
const EVAL_ITERS: u64 = 2;

/// Run the simulation and return the Timeline.
pub fn simulate(cfg: &TrainConfig, rt: Runtime) -> Result<Timeline> {
    // Sizes whose bytes overflow u64 (or are absurd) are an error, not an overflow.
    cfg.validate()?;
    let plan = schedule(cfg);
    let mut e = Engine::new(rt);
    e.param_dtype = amp::param_dtype(cfg);
    e.reentrant_checkpoint = cfg.reentrant_checkpoint();
    e.checkpoint_policy = cfg.checkpoint_policy;
    let mut scaler = amp::GradScaler::new(cfg, rt);
    parallel::setup(&mut e, cfg);
    let resumed_state = if plan.resume {
        load_checkpoint(&mut e, cfg, rt)
    } else {
        Vec::new()
    };
    let model = Model::build(&mut e, cfg);
    parallel::after_build(&mut e, cfg);
    adopt_optimizer_state(&mut e, resumed_state);
    let batch = |e: &mut Engine, b: u64| -> (T, T) {
        let s = Shape::new(&[b, cfg.block_size]);
        let x = e.alloc(Name::top("batch", "X"), s, DType::I64, Category::Other);
        let y = e.alloc(Name::top("batch", "Y"), s, DType::I64, Category::Other);
        (x, y)
    };
    // The init figure is the model on the device. train.py then fetches the first training
    // batch right before its loop; it is counted with the first phase that runs alongside it.
    e.phase = if plan.eval_first {
        Phase::Eval
    } else {
        Phase::Forward
    };
    let (mut x, mut y) = batch(&mut e, cfg.batch_size);
    if plan.eval_first {
        estimate_loss(&mut e, &model, cfg, &batch);
    }

    // Each rank runs its share of the micro-steps (nanoGPT: ga // world_size).
    let micro_steps = parallel::micro_steps(cfg).min(MICRO_STEPS);
    let mut last: Option<(Option<V>, V)> = None;
    for _ in 0..plan.steps {
        for micro in 0..micro_steps {
            let step = MicroStep {
                model: &model,
                cfg,
                rt,
                batch: &batch,
                last_of_step: micro + 1 == micro_steps,
            };
            let pair = step.run(&mut e, scaler.as_mut(), &mut x, &mut y, last.take());
            last = Some(pair);
        }
        optimizer_phase(&mut e, cfg, scaler.as_mut());
    }

    if plan.eval_after {
        e.phase = Phase::EvalAfterStep;
        estimate_loss(&mut e, &model, cfg, &batch);
    }
    Ok(e.tl)
}

/// One micro-step of train.py's loop, and what it needs from the run.
struct MicroStep<'a> {
    model: &'a Model,
    cfg: &'a TrainConfig,
    rt: Runtime,
    batch: &'a dyn Fn(&mut Engine, u64) -> (T, T),
    /// The micro-step before the optimizer step (DDP/FSDP reduce gradients then).
    last_of_step: bool,
}

impl MicroStep<'_> {
    /// The forward under autocast, the loss scaled, the next batch fetched, the backward.
    /// `last` is the previous micro-step's (logits, loss), which this one's assignment drops;
    /// returns this one's.
    fn run(
        &self,
        e: &mut Engine,
        scaler: Option<&mut amp::GradScaler>,
        x: &mut T,
        y: &mut T,
        last: Option<(Option<V>, V)>,
    ) -> (Option<V>, V) {
        e.phase = Phase::Forward;
        e.grad_mode = true;
        e.training = true;
        e.enter_autocast(self.rt.autocast);
        let (mut logits, loss) = self.model.forward(e, *x, *y);
        if !self.cfg.framework.holds_logits_through_backward() {
            // The loop keeps only the loss (Trainer's compute_loss, torchtune's `del`).
            if let Some(l) = logits.take() {
                e.drop_value(l);
            }
        }
        // `logits, loss = model(X, Y)` drops the previous micro-step's pair.
        if let Some((l, s)) = last {
            if let Some(l) = l {
                e.drop_value(l);
            }
            e.drop_value(s);
        }
        // `loss = loss / gradient_accumulation_steps`, even when it is 1.
        let scaled = ops::div_scalar(e, loss);
        e.drop_value(loss);
        e.exit_autocast();
        // X, Y = get_batch('train'): the old batch lives on only in the graph.
        let (nx, ny) = (self.batch)(e, self.cfg.batch_size);
        e.release(*x);
        e.release(*y);
        (*x, *y) = (nx, ny);
        parallel::before_backward(e, self.last_of_step);
        // `scaler.scale(loss).backward()`: the product is a temporary of the statement.
        match scaler {
            Some(s) => {
                let product = s.scale(e, scaled);
                e.backward(product);
                e.drop_value(product);
            }
            None => e.backward(scaled),
        }
        parallel::after_backward(e, self.last_of_step);
        (logits, scaled)
    }
}

/// The optimizer step: train.py's unscale_, clip, `scaler.step(optimizer)`, `scaler.update()`
/// and `zero_grad`, unless DeepSpeed's engine runs its own on the partitions.
fn optimizer_phase(e: &mut Engine, cfg: &TrainConfig, scaler: Option<&mut amp::GradScaler>) {
    e.phase = Phase::Optimizer;
    e.grad_mode = false;
    e.training = false;
    if parallel::optimizer_step(e) {
        return;
    }
    match scaler {
        Some(s) => {
            if cfg.grad_clip != 0.0 {
                s.unscale_(e);
                clip_grad_norm(e);
            }
            s.step(e, cfg.optimizer.supports_amp_scaling(), |e| {
                optimizer_step(e, cfg)
            });
            s.update(e);
        }
        None => {
            if cfg.grad_clip != 0.0 {
                clip_grad_norm(e);
            }
            optimizer_step(e, cfg);
        }
    }
    zero_grad(e);
}

/// What train.py's loop runs for this config (nanoGPT train.py, the `while True:` loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Optimizer steps simulated: 0 when train.py stops after the first estimate_loss().
    pub steps: u32,
    /// An estimate_loss() runs before the first step: nanoGPT's `iter_num % eval_interval == 0`
    /// at iteration 0; a Trainer (and the frameworks built on it) evaluates only at its eval
    /// steps (`eval_strategy`), never before training.
    pub eval_first: bool,
    /// An estimate_loss() runs after training steps.
    pub eval_after: bool,
    /// init_from='resume': the checkpoint is loaded onto the GPU.
    pub resume: bool,
}

/// The loop's decisions, from train.py:
/// - `if iter_num == 0 and eval_only: break` after the first estimate_loss(): no training step.
///   A resumed run starts at the checkpoint's iter_num, which is > 0 (train.py saves only when
///   `iter_num > 0`), so eval_only does not stop it: it trains. Its first estimate_loss() is
///   simulated too: train.py saved that checkpoint at an evaluation, so its iter_num is a
///   multiple of eval_interval unless eval_interval changed since.
/// - iterations run from iter_num to max_iters inclusive (`if iter_num > max_iters: break`
///   after the step), so max_iters = 0 still runs one step.
/// - estimate_loss() runs when `iter_num % eval_interval == 0`: after the first step only if a
///   multiple of eval_interval lies in 1..=max_iters, i.e. eval_interval <= max_iters.
///   always_save_checkpoint only decides whether torch.save runs there, which copies each
///   storage to the host (torch/serialization.py) and allocates nothing on the GPU.
pub fn schedule(cfg: &TrainConfig) -> Schedule {
    let resume = cfg.init_from == "resume";
    if cfg.eval_only && !resume {
        return Schedule {
            steps: 0,
            eval_first: true,
            eval_after: false,
            resume,
        };
    }
    let iterations = cfg.max_iters.saturating_add(1);
    Schedule {
        steps: STEPS.min(u32::try_from(iterations).unwrap_or(u32::MAX)),
        eval_first: cfg.framework == crate::config::Framework::NanoGpt,
        eval_after: cfg.eval_interval <= cfg.max_iters,
        resume,
    }
}

/// init_from='resume' (train.py): `checkpoint = torch.load(ckpt_path, map_location=device)`
/// puts the saved model state_dict and the optimizer's state on the GPU before the model is
/// built and moved there. `checkpoint = None` afterwards frees neither: the global
/// `state_dict = checkpoint['model']` keeps the saved weights alive for the whole run
/// (karpathy/nanoGPT issue #158, PR #533), and `optimizer.load_state_dict` keeps the loaded
/// tensors themselves as its state, since `value.to(dtype=param.dtype, device=param.device)`
/// returns the same tensor when both already match (torch/optim/optimizer.py,
/// Optimizer._process_value_according_to_param_policy; the step is a device tensor for fused
/// AdamW). Returns the optimizer state per parameter index, for [`adopt_optimizer_state`].
///
/// Only DDP (nanoGPT's one parallelism) loads this way; sharded runs load through their
/// framework, which this does not model.
fn load_checkpoint(e: &mut Engine, cfg: &TrainConfig, rt: Runtime) -> Vec<Vec<T>> {
    if cfg.parallelism != crate::config::Parallelism::Ddp {
        return Vec::new();
    }
    // The parameters' names, shapes and dtypes as the model will have them: the checkpoint
    // holds one tensor per parameter (tied weights share one storage, saved once).
    let mut shapes = Engine::new(rt);
    shapes.param_dtype = amp::param_dtype(cfg);
    Model::build(&mut shapes, cfg);
    let params: Vec<(Name, Shape, DType, bool)> = shapes
        .params
        .iter()
        .map(|p| {
            let dtype = shapes.tl.tensors[p.t as usize].dtype;
            (p.name, p.shape, dtype, p.requires_grad)
        })
        .collect();
    // torch.load unpickles checkpoint['model'] before checkpoint['optimizer'].
    for &(name, shape, dtype, _) in &params {
        let what = Name {
            what: "checkpoint_state_dict",
            ..name
        };
        e.alloc(what, shape, dtype, Category::Other);
    }
    let mut state = vec![Vec::new(); params.len()];
    for p in optimizer_order(&shapes) {
        let (name, shape, _, trainable) = params[p];
        if trainable {
            let dtype = shapes.tl.tensors[shapes.params[p].t as usize].dtype;
            state[p] = optim::state_for(e, name, shape, dtype, cfg.optimizer, true);
        }
    }
    state
}

/// `optimizer.load_state_dict(checkpoint['optimizer'])`: the loaded tensors become the state
/// of the parameters in the same order, so the first step creates none.
fn adopt_optimizer_state(e: &mut Engine, state: Vec<Vec<T>>) {
    for (p, st) in state.into_iter().enumerate() {
        if let Some(param) = e.params.get_mut(p) {
            param.state = st;
        }
    }
}

/// estimate_loss(): model.eval(), no_grad, autocast; `logits, loss = model(X, Y)` per iteration.
fn estimate_loss(
    e: &mut Engine,
    model: &Model,
    cfg: &TrainConfig,
    batch: &dyn Fn(&mut Engine, u64) -> (T, T),
) {
    e.grad_mode = false;
    e.training = false;
    let mut xy: Option<(T, T)> = None;
    let mut out: Option<(Option<V>, V)> = None;
    for _ in 0..EVAL_ITERS {
        let (x, y) = batch(e, cfg.eval_batch());
        if let Some((ox, oy)) = xy.replace((x, y)) {
            e.release(ox);
            e.release(oy);
        }
        e.enter_autocast(e.rt.autocast);
        let (logits, loss) = model.forward(e, x, y);
        if let Some((l, s)) = out.replace((logits, loss)) {
            if let Some(l) = l {
                e.drop_value(l);
            }
            e.drop_value(s);
        }
        e.exit_autocast();
    }
    // The function returns: its locals X, Y, logits, loss go.
    if let Some((x, y)) = xy {
        e.release(x);
        e.release(y);
    }
    if let Some((l, s)) = out {
        if let Some(l) = l {
            e.drop_value(l);
        }
        e.drop_value(s);
    }
}

/// torch.nn.utils.clip_grad_norm_ (foreach): a norm per gradient, their stack, the total,
/// the clip coefficient; the gradients are scaled in place.
fn clip_grad_norm(e: &mut Engine) {
    let scalar = |e: &mut Engine, what| {
        e.alloc(
            Name::top("clip_grad_norm", what),
            Shape::scalar(),
            DType::F32,
            Category::Other,
        )
    };
    let n = e.params.iter().filter(|p| p.grad.is_some()).count() as u64;
    let norms: Vec<T> = (0..n).map(|_| scalar(e, "norm")).collect();
    let stack = e.alloc(
        Name::top("clip_grad_norm", "stack"),
        Shape::new(&[n]),
        DType::F32,
        Category::Other,
    );
    let total = scalar(e, "total_norm");
    e.release(stack);
    for t in norms.into_iter().rev() {
        e.release(t);
    }
    let add = scalar(e, "coef");
    let recip = scalar(e, "coef");
    let mul = scalar(e, "coef");
    e.release(recip);
    e.release(add);
    let clamped = scalar(e, "coef_clamped");
    e.release(mul);
    e.release(clamped);
    e.release(total);
}

/// `optimizer.step()` (sim::optim): state created at the first step, the step's temporaries.
fn optimizer_step(e: &mut Engine, cfg: &TrainConfig) {
    let order = optimizer_order(e);
    optim::step(e, cfg.optimizer, &order, cfg.weight_decay);
}

/// optimizer.zero_grad(set_to_none=True).
fn zero_grad(e: &mut Engine) {
    for p in optimizer_order(e) {
        if let Some(g) = e.params[p].grad.take() {
            e.release(g);
        }
    }
}
