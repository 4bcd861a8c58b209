//! nanoGPT's train.py, in the order it touches GPU memory:
//! init (model.to(device), first batch) → estimate_loss() at iteration 0 → training steps
//! (micro-steps of forward + backward, then clip, AdamW, zero_grad) → a later estimate_loss().

use super::dtype::DType;
use super::engine::{Engine, T, V};
use super::ops;
use super::parallel;
use super::runtime::Runtime;
use super::timeline::{Category, Name, Phase, Shape, Timeline};
use crate::config::{OptimizerKind, TrainConfig};
use crate::error::Result;
use crate::model::Model;

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
    let mut e = Engine::new(rt);
    parallel::setup(&mut e, cfg);
    let model = Model::build(&mut e, cfg);
    parallel::after_build(&mut e, cfg);
    let batch = |e: &mut Engine, b: u64| -> (T, T) {
        let s = Shape::new(&[b, cfg.block_size]);
        let x = e.alloc(Name::top("batch", "X"), s, DType::I64, Category::Other);
        let y = e.alloc(Name::top("batch", "Y"), s, DType::I64, Category::Other);
        (x, y)
    };
    // The init figure is the model on the device. train.py then fetches the first training
    // batch right before its loop; it is counted with the first phase that runs alongside it.
    e.phase = Phase::Eval;
    let (mut x, mut y) = batch(&mut e, cfg.batch_size);
    estimate_loss(&mut e, &model, cfg, &batch);

    // Each rank runs its share of the micro-steps (nanoGPT: ga // world_size).
    let micro_steps = parallel::micro_steps(cfg).min(MICRO_STEPS);
    let mut last: Option<(Option<V>, V)> = None;
    for step in 0..STEPS {
        for micro in 0..micro_steps {
            e.phase = Phase::Forward;
            e.grad_mode = true;
            e.training = true;
            e.enter_autocast(rt.autocast);
            let (logits, loss) = model.forward(&mut e, x, y);
            // `logits, loss = model(X, Y)` drops the previous micro-step's pair.
            if let Some((l, s)) = last.take() {
                if let Some(l) = l {
                    e.drop_value(l);
                }
                e.drop_value(s);
            }
            // `loss = loss / gradient_accumulation_steps`, even when it is 1.
            let scaled = ops::div_scalar(&mut e, loss);
            e.drop_value(loss);
            e.exit_autocast();
            // X, Y = get_batch('train'): the old batch lives on only in the graph.
            let (nx, ny) = batch(&mut e, cfg.batch_size);
            e.release(x);
            e.release(y);
            (x, y) = (nx, ny);
            parallel::before_backward(&mut e);
            e.backward(scaled);
            parallel::after_backward(&mut e, micro + 1 == micro_steps);
            last = Some((logits, scaled));
        }
        e.phase = Phase::Optimizer;
        e.grad_mode = false;
        e.training = false;
        // DeepSpeed's engine replaces clip, step and zero_grad with its own on the partitions.
        if !parallel::optimizer_step(&mut e) {
            if cfg.grad_clip != 0.0 {
                clip_grad_norm(&mut e);
            }
            optimizer_step(&mut e, cfg.optimizer, step == 0);
            zero_grad(&mut e);
        }
    }

    e.phase = Phase::EvalAfterStep;
    estimate_loss(&mut e, &model, cfg, &batch);
    Ok(e.tl)
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

/// Parameters in nanoGPT's optimizer order: the weight-decay group (2-D), then the rest.
pub(crate) fn optimizer_order(e: &Engine) -> Vec<usize> {
    let (mut decay, mut rest): (Vec<usize>, Vec<usize>) =
        (0..e.params.len()).partition(|&p| e.params[p].decay);
    decay.append(&mut rest);
    decay
}

/// The optimizer's state, created lazily at the first step; the update kernels (fused AdamW,
/// bitsandbytes' blockwise 8-bit AdamW, SGD's foreach) allocate nothing that outlives them.
/// - AdamW: `step` (a 0-dim fp32 tensor), exp_avg and exp_avg_sq in fp32.
/// - AdamW8bit: both moments in uint8 with an fp32 absmax per block of 256 elements, for
///   parameters of at least 4096 elements (smaller ones keep fp32 state, as bitsandbytes does).
/// - SGD with momentum: one fp32 momentum buffer.
fn optimizer_step(e: &mut Engine, kind: OptimizerKind, first: bool) {
    if !first {
        return;
    }
    for p in optimizer_order(e) {
        if e.params[p].grad.is_none() {
            continue;
        }
        let (name, shape) = (e.params[p].name, e.params[p].shape);
        e.params[p].state = optimizer_state(e, name, shape, kind, true);
    }
}

/// The state the optimizer creates for one tensor it updates (a parameter, or a flat
/// partition under ZeRO). `step_tensor`: torch's AdamW keeps `step` as a 0-dim fp32 tensor;
/// DeepSpeed's FusedAdam keeps it as a Python int.
pub(crate) fn optimizer_state(
    e: &mut Engine,
    name: Name,
    shape: Shape,
    kind: OptimizerKind,
    step_tensor: bool,
) -> Vec<T> {
    let state = |e: &mut Engine, name: Name, what, shape: Shape, dtype| {
        e.alloc(Name { what, ..name }, shape, dtype, Category::Optimizer)
    };
    let n = shape.numel().unwrap_or(0);
    match kind {
        OptimizerKind::AdamW => {
            let mut st = Vec::with_capacity(3);
            if step_tensor {
                st.push(state(e, name, "adam.step", Shape::scalar(), DType::F32));
            }
            st.push(state(e, name, "adam.exp_avg", shape, DType::F32));
            st.push(state(e, name, "adam.exp_avg_sq", shape, DType::F32));
            st
        }
        OptimizerKind::AdamW8bit if n >= 4096 => {
            let blocks = Shape::new(&[n.div_ceil(256)]);
            vec![
                state(e, name, "adam8bit.state1", shape, DType::U8),
                state(e, name, "adam8bit.absmax1", blocks, DType::F32),
                state(e, name, "adam8bit.state2", shape, DType::U8),
                state(e, name, "adam8bit.absmax2", blocks, DType::F32),
            ]
        }
        OptimizerKind::AdamW8bit => vec![
            state(e, name, "adam.exp_avg", shape, DType::F32),
            state(e, name, "adam.exp_avg_sq", shape, DType::F32),
        ],
        OptimizerKind::Sgd => vec![state(e, name, "sgd.momentum", shape, DType::F32)],
    }
}

/// optimizer.zero_grad(set_to_none=True).
fn zero_grad(e: &mut Engine) {
    for p in optimizer_order(e) {
        if let Some(g) = e.params[p].grad.take() {
            e.release(g);
        }
    }
}
