//! The optimizers people pick: the state each keeps per parameter (created lazily at the
//! first step) and the temporaries its step allocates, each from the implementation's source.
//!
//! - `AdamW` — `torch.optim.AdamW(fused=True)` (nanoGPT on CUDA, HF `adamw_torch_fused`):
//!   `_init_group` (torch/optim/adam.py) creates `step` as a 0-dim fp32 tensor on the device
//!   (`capturable or fused`) and `exp_avg`, `exp_avg_sq` with `torch.zeros_like(p)` — the
//!   parameter's dtype. `_fused_adam` updates in one kernel: no temporaries.
//! - `AdamWForeach` — `torch.optim.AdamW()` with the defaults (HF `adamw_torch`): `step` is a
//!   CPU tensor (`torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")`). Per param
//!   group, `_multi_tensor_adam` allocates `exp_avg_sq_sqrt = torch._foreach_sqrt(
//!   device_exp_avg_sqs)` — one tensor per parameter of the group, alive together — and
//!   updates it in place (`_foreach_div_`, `_foreach_add_`, `_foreach_addcdiv_`) until the
//!   function returns; decoupled weight decay is an in-place `_foreach_mul_`.
//! - `AdamWSingle` — `foreach=False`: `_single_tensor_adam` loops over the parameters;
//!   `denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)` allocates the sqrt and
//!   the quotient (the sqrt dies with the statement) while the previous parameter's `denom`
//!   is still bound; the last one dies when the function returns.
//! - `AdamW8bit` / `PagedAdamW8bit` / `PagedAdamW` — bitsandbytes `Optimizer2State`
//!   (bitsandbytes/optim/optimizer.py, `init_state`): `step` is a Python int; state1/state2
//!   are uint8 for parameters of at least `min_8bit_size` = 4096 elements, with fp32 absmax
//!   per block, else fp32 (32-bit: always fp32, whatever the parameter's dtype). Updates are
//!   fused kernels (`optimizer_update_8bit_blockwise`, `optimizer_update_32bit`).
//!   Paged: `get_state_buffer` puts state1/state2 of parameters of at least 1e5 elements in
//!   CUDA unified memory (`F.get_paged`: cudaMallocManaged), outside PyTorch's caching
//!   allocator — not in `memory_allocated()`/`memory_reserved()`; the driver pages them to
//!   the host when device memory runs short. Smaller parameters' state and the absmax
//!   vectors are ordinary `torch.zeros` on the device. The paged buffers are recorded with
//!   their shape and dtype but zero bytes (named `…(paged)`): allocated and reserved never
//!   include them. nvidia-smi does show their resident pages; they are not simulated.
//! - `Lion` — bitsandbytes `Lion` (HF `lion_32bit`), an `Optimizer1State`: one fp32 state1
//!   (`exp_avg`) per parameter, fused update kernel.
//! - `Sgd` — `torch.optim.SGD(momentum=…)` with the foreach default: `_multi_tensor_sgd`
//!   makes `momentum_buffer = grad.detach().clone()` (the gradient's dtype) at the first step;
//!   with `weight_decay != 0` it first computes `device_grads = torch._foreach_add(
//!   device_grads, device_params, alpha=weight_decay)` — a new tensor per gradient of the
//!   group — so the buffers are clones of those sums.
//! - `Adafactor` — transformers' `Adafactor` (transformers/optimization.py) with its defaults
//!   (`beta1=None`: no first moment): `step` an int; for a parameter of 2 or more dims
//!   `exp_avg_sq_row` (shape[:-1]) and `exp_avg_sq_col` (shape[:-2] + shape[-1:]), else
//!   `exp_avg_sq`, fp32 (`.to(grad)` of the `grad.float()` copy); `state["RMS"]`, a 0-dim
//!   tensor replaced at every step. Its step is a Python loop whose temporaries are listed in
//!   [`adafactor_update`].

use super::dtype::DType;
use super::engine::{Engine, T};
use super::timeline::{Category, Name, Shape};
use crate::config::OptimizerKind;

/// bitsandbytes' `min_8bit_size` default: smaller parameters keep 32-bit state.
const BNB_MIN_8BIT_SIZE: u64 = 4096;
/// bitsandbytes' `get_state_buffer`: smaller parameters are never paged.
const BNB_MIN_PAGED_SIZE: u64 = 100_000;
/// Elements per absmax block of bitsandbytes' block-wise 8-bit state, as this simulator has
/// always counted it (the training loop's AdamW8bit before this module).
const BNB_BLOCK: u64 = 256;

impl OptimizerKind {
    /// torch.amp.GradScaler hands `grad_scale`/`found_inf` to optimizers with
    /// `_step_supports_amp_scaling` (torch/optim/adam.py sets it when `fused=True`).
    pub fn supports_amp_scaling(self) -> bool {
        self == OptimizerKind::AdamW
    }
}

/// The state the optimizer creates for one fp32 tensor it updates (a flat fp32 partition
/// under ZeRO/FSDP). `step_tensor`: torch's AdamW keeps `step` as a 0-dim fp32 tensor on the
/// device; DeepSpeed's FusedAdam keeps it as a Python int.
pub(crate) fn optimizer_state(
    e: &mut Engine,
    name: Name,
    shape: Shape,
    kind: OptimizerKind,
    step_tensor: bool,
) -> Vec<T> {
    state_for(e, name, shape, DType::F32, kind, step_tensor)
}

/// The state for a parameter of `dtype` (see the module's list).
pub(crate) fn state_for(
    e: &mut Engine,
    name: Name,
    shape: Shape,
    dtype: DType,
    kind: OptimizerKind,
    step_tensor: bool,
) -> Vec<T> {
    let state = |e: &mut Engine, what, shape: Shape, dtype| state(e, name, what, shape, dtype);
    let n = shape.numel().unwrap_or(0);
    match kind {
        OptimizerKind::AdamW | OptimizerKind::AdamWForeach | OptimizerKind::AdamWSingle => {
            let mut st = Vec::with_capacity(3);
            // Only the fused (or capturable) step keeps `step` on the device.
            if step_tensor && kind == OptimizerKind::AdamW {
                st.push(state(e, "adam.step", Shape::scalar(), DType::F32));
            }
            st.push(state(e, "adam.exp_avg", shape, dtype));
            st.push(state(e, "adam.exp_avg_sq", shape, dtype));
            st
        }
        OptimizerKind::AdamW8bit | OptimizerKind::PagedAdamW8bit if n >= BNB_MIN_8BIT_SIZE => {
            bnb_8bit_state(e, name, shape, kind == OptimizerKind::PagedAdamW8bit)
        }
        OptimizerKind::AdamW8bit => vec![
            state(e, "adam.exp_avg", shape, DType::F32),
            state(e, "adam.exp_avg_sq", shape, DType::F32),
        ],
        OptimizerKind::PagedAdamW | OptimizerKind::PagedAdamW8bit => vec![
            paged(
                e,
                name,
                ["adam.exp_avg", "adam.exp_avg(paged)"],
                shape,
                DType::F32,
            ),
            paged(
                e,
                name,
                ["adam.exp_avg_sq", "adam.exp_avg_sq(paged)"],
                shape,
                DType::F32,
            ),
        ],
        OptimizerKind::Lion => vec![state(e, "lion.exp_avg", shape, DType::F32)],
        OptimizerKind::Sgd => vec![state(e, "sgd.momentum", shape, dtype)],
        OptimizerKind::Adafactor => {
            // `torch.zeros(...)` on the host, `.to(grad)` onto the device: fp32, since a half
            // gradient was `.float()`-ed first. `state["RMS"]` is added by the step.
            let d = shape.dims();
            if d.len() >= 2 {
                let (row, col) = factored_shapes(d);
                vec![
                    state(e, "adafactor.exp_avg_sq_row", row, DType::F32),
                    state(e, "adafactor.exp_avg_sq_col", col, DType::F32),
                ]
            } else {
                vec![state(e, "adafactor.exp_avg_sq", shape, DType::F32)]
            }
        }
    }
}

/// One state tensor of the parameter `name`.
fn state(e: &mut Engine, name: Name, what: &'static str, shape: Shape, dtype: DType) -> T {
    e.alloc(Name { what, ..name }, shape, dtype, Category::Optimizer)
}

/// A state tensor bitsandbytes pages (from BNB_MIN_PAGED_SIZE elements): not PyTorch's memory,
/// recorded with its shape and dtype but no bytes the caching allocator sees (see the module's
/// note); smaller ones are ordinary device tensors. `[what, paged what]`: its two names.
fn paged(
    e: &mut Engine,
    name: Name,
    [what, paged_what]: [&'static str; 2],
    shape: Shape,
    dtype: DType,
) -> T {
    if shape.numel().unwrap_or(0) >= BNB_MIN_PAGED_SIZE {
        let paged_name = Name {
            what: paged_what,
            ..name
        };
        e.alloc_bytes(paged_name, shape, dtype, 0, Category::Optimizer)
    } else {
        state(e, name, what, shape, dtype)
    }
}

/// bitsandbytes' 8-bit AdamW state: two uint8 moments (paged or not) and their fp32 absmax per
/// BNB_BLOCK elements, in bnb's order.
fn bnb_8bit_state(e: &mut Engine, name: Name, shape: Shape, is_paged: bool) -> Vec<T> {
    let moment = |e: &mut Engine, what, paged_what| {
        if is_paged {
            paged(e, name, [what, paged_what], shape, DType::U8)
        } else {
            state(e, name, what, shape, DType::U8)
        }
    };
    let n = shape.numel().unwrap_or(0);
    let blocks = Shape::new(&[n.div_ceil(BNB_BLOCK)]);
    let s1 = moment(e, "adam8bit.state1", "adam8bit.state1(paged)");
    let s2 = moment(e, "adam8bit.state2", "adam8bit.state2(paged)");
    let a1 = state(e, name, "adam8bit.absmax1", blocks, DType::F32);
    let a2 = state(e, name, "adam8bit.absmax2", blocks, DType::F32);
    vec![s1, a1, s2, a2]
}

/// `optimizer.step()` over the parameters that have a gradient, in the optimizer's order
/// (nanoGPT's configure_optimizers: the weight-decay group, then the rest), creating the state
/// of a parameter that has none (the first step; a resumed run loaded it) and allocating and
/// freeing the step's temporaries as the implementation does. `weight_decay` is the decay
/// group's; the other group has 0.
pub(crate) fn step(e: &mut Engine, kind: OptimizerKind, order: &[usize], weight_decay: f64) {
    let mut carry = AdafactorLocals::default();
    for decay in [true, false] {
        let group: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&p| e.params[p].decay == decay && e.params[p].grad.is_some())
            .collect();
        if kind == OptimizerKind::Adafactor {
            // One loop over every parameter: state, then its update.
            for &p in &group {
                adafactor_update(e, p, &mut carry);
            }
            continue;
        }
        // torch.optim: `_init_group` for the whole group, then the group's update;
        // bitsandbytes interleaves init_state and update_step per parameter, which is the
        // same order for state whose updates allocate nothing.
        for &p in &group {
            init_state(e, p, kind);
        }
        group_temporaries(e, kind, &group, decay && weight_decay != 0.0);
    }
    carry.release(e);
}

fn init_state(e: &mut Engine, p: usize, kind: OptimizerKind) {
    if !e.params[p].state.is_empty() {
        return;
    }
    let (name, shape, t) = (e.params[p].name, e.params[p].shape, e.params[p].t);
    let dtype = e.dtype(t);
    e.params[p].state = state_for(e, name, shape, dtype, kind, true);
}

/// The temporaries of one group's update by a torch.optim multi-tensor or single-tensor
/// implementation.
fn group_temporaries(e: &mut Engine, kind: OptimizerKind, group: &[usize], decays: bool) {
    let like = |e: &mut Engine, p: usize, what| {
        let r = *e.record(e.params[p].t);
        let name = Name {
            what,
            ..e.params[p].name
        };
        e.alloc(name, r.shape, r.dtype, Category::Optimizer)
    };
    match kind {
        OptimizerKind::AdamWForeach => {
            let sqrt: Vec<T> = group
                .iter()
                .map(|&p| like(e, p, "adam.exp_avg_sq_sqrt"))
                .collect();
            for t in sqrt {
                e.release(t);
            }
        }
        OptimizerKind::AdamWSingle => {
            let mut denom: Option<T> = None;
            for &p in group {
                let sqrt = like(e, p, "adam.exp_avg_sq_sqrt");
                let quotient = like(e, p, "adam.denom");
                e.release(sqrt);
                if let Some(old) = denom.replace(quotient) {
                    e.release(old);
                }
            }
            if let Some(d) = denom {
                e.release(d);
            }
        }
        OptimizerKind::Sgd if decays => {
            let sums: Vec<T> = group
                .iter()
                .map(|&p| like(e, p, "sgd.grad_plus_decay"))
                .collect();
            for t in sums {
                e.release(t);
            }
        }
        _ => {}
    }
}

/// Adafactor.step's locals, which live on from one parameter to the next until rebound.
#[derive(Default)]
struct AdafactorLocals {
    /// `grad.float()` of a half gradient.
    grad: Option<T>,
    /// `p.float()` of a half parameter.
    p_data_fp32: Option<T>,
    update: Option<T>,
}

impl AdafactorLocals {
    fn release(self, e: &mut Engine) {
        for t in [self.grad, self.p_data_fp32, self.update]
            .into_iter()
            .flatten()
        {
            e.release(t);
        }
    }
}

/// transformers' `Adafactor.step` body for one parameter, with beta1=None (the default) and
/// clip_threshold=1.0. HF Trainer's `optim="adafactor"` passes `scale_parameter=False,
/// relative_step=False`, which changes only `lr` (a Python float then); `state["RMS"]` is
/// computed either way. Weight decay is in place.
/// Not counted: `lr`, a 0-dim tensor only when `state["RMS"]` exceeds eps[1] (data-dependent),
/// one 512-byte block.
fn adafactor_update(e: &mut Engine, p: usize, l: &mut AdafactorLocals) {
    let f32 = DType::F32;
    let (name, shape) = (e.params[p].name, e.params[p].shape);
    let half = e.dtype(e.params[p].t) != f32;
    let tmp = |e: &mut Engine, what, shape: Shape| {
        e.alloc(Name { what, ..name }, shape, f32, Category::Optimizer)
    };
    // `grad = p.grad` rebinds (the previous fp32 copy goes), then `grad = grad.float()`.
    if let Some(t) = l.grad.take() {
        e.release(t);
    }
    l.grad = half.then(|| tmp(e, "adafactor.grad_fp32", shape));
    // State initialization (`if len(state) == 0`), after the gradient's cast.
    init_state(e, p, OptimizerKind::Adafactor);
    // `p_data_fp32 = p`, then `.float()` for a half parameter.
    if let Some(t) = l.p_data_fp32.take() {
        e.release(t);
    }
    l.p_data_fp32 = half.then(|| tmp(e, "adafactor.param_fp32", shape));
    keep_rms(e, p);
    // `update = (grad**2) + eps[0]`; the previous parameter's update goes on rebinding.
    let pow = tmp(e, "adafactor.grad_sq", shape);
    let update = tmp(e, "adafactor.update", shape);
    e.release(pow);
    if let Some(t) = l.update.take() {
        e.release(t);
    }
    let update = second_moment_update(e, p, update);
    // `update.div_((self._rms(update) / clip_threshold).clamp_(min=1.0))`.
    let norm = tmp(e, "adafactor.norm", Shape::scalar());
    let q = tmp(e, "adafactor.rms", Shape::scalar());
    e.release(norm);
    let clipped = tmp(e, "adafactor.rms", Shape::scalar());
    e.release(q);
    e.release(clipped);
    // `p_data_fp32.add_(-update)`: the negation is a temporary.
    let neg = tmp(e, "adafactor.neg_update", shape);
    e.release(neg);
    l.update = Some(update);
}

/// `state["RMS"] = self._rms(p_data_fp32)`: norm(2), then the quotient, kept in the state
/// until the next step replaces it.
fn keep_rms(e: &mut Engine, p: usize) {
    let name = e.params[p].name;
    let scalar = |e: &mut Engine, what| {
        e.alloc(
            Name { what, ..name },
            Shape::scalar(),
            DType::F32,
            Category::Optimizer,
        )
    };
    let norm = scalar(e, "adafactor.norm");
    let rms = scalar(e, "adafactor.RMS");
    e.release(norm);
    if let Some(old) = e.params[p]
        .state
        .iter()
        .position(|&t| e.record(t).name.what == "adafactor.RMS")
    {
        let t = e.params[p].state.swap_remove(old);
        e.release(t);
    }
    e.params[p].state.push(rms);
}

/// The update from the second moment: factored for a matrix (row and column means,
/// `_approx_sq_grad`'s factors), `exp_avg_sq.rsqrt().mul_(grad)` otherwise. Takes `update`
/// (`grad**2 + eps`) and returns what replaces it.
fn second_moment_update(e: &mut Engine, p: usize, mut update: T) -> T {
    let (name, shape) = (e.params[p].name, e.params[p].shape);
    let tmp = |e: &mut Engine, what, shape: Shape| {
        e.alloc(
            Name { what, ..name },
            shape,
            DType::F32,
            Category::Optimizer,
        )
    };
    let d = shape.dims();
    if d.len() >= 2 {
        let (row, col) = factored_shapes(d);
        // `exp_avg_sq_row.mul_(beta2t).add_(update.mean(dim=-1), ...)`, then the column's.
        let mean = tmp(e, "adafactor.update_mean", row);
        e.release(mean);
        let mean = tmp(e, "adafactor.update_mean", col);
        e.release(mean);
        // `_approx_sq_grad`: row / row.mean(dim=-1, keepdim=True), rsqrt_ in place;
        // col.unsqueeze(-2).rsqrt(); torch.mul(r_factor, c_factor).
        let mut keep = d[..d.len() - 1].to_vec();
        if let Some(last) = keep.last_mut() {
            *last = 1;
        }
        let row_mean = tmp(e, "adafactor.row_mean", Shape::new(&keep));
        let r_factor = tmp(e, "adafactor.r_factor", row);
        e.release(row_mean);
        let c_factor = tmp(e, "adafactor.c_factor", col);
        let approx = tmp(e, "adafactor.update", shape);
        e.release(r_factor);
        e.release(c_factor);
        e.release(update);
        update = approx;
    } else {
        // `update = exp_avg_sq.rsqrt().mul_(grad)`.
        let rsqrt = tmp(e, "adafactor.update", shape);
        e.release(update);
        update = rsqrt;
    }
    update
}

/// Adafactor's factored second-moment shapes: (shape[:-1], shape[:-2] + shape[-1:]).
fn factored_shapes(d: &[u64]) -> (Shape, Shape) {
    let row = Shape::new(&d[..d.len() - 1]);
    let mut col = d[..d.len() - 2].to_vec();
    col.push(d[d.len() - 1]);
    (row, Shape::new(&col))
}

/// Parameters in nanoGPT's optimizer order: the weight-decay group (2-D), then the rest.
pub(crate) fn optimizer_order(e: &Engine) -> Vec<usize> {
    let (mut decay, mut rest): (Vec<usize>, Vec<usize>) =
        (0..e.params.len()).partition(|&p| e.params[p].decay);
    decay.append(&mut rest);
    decay
}
