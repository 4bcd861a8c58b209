//! Mixed and pure precision: which dtype the trainable weights have, and the GradScaler that
//! float16 mixed precision runs.
//!
//! Pure half precision (`precision_mode = 'pure'`): the model is cast to `dtype` and trained
//! without autocast — torchtune (`training.get_dtype` + `model.to(dtype)`), LitGPT's
//! `bf16-true` (lightning/fabric/plugins/precision/half.py, `HalfPrecision.convert_module`),
//! Hugging Face with `torch_dtype=torch.bfloat16` and no `bf16=True`. The parameters are
//! half, so autograd's gradients are half, and torch.optim creates its state with
//! `torch.zeros_like(p, memory_format=torch.preserve_format)` (torch/optim/adam.py,
//! `Adam._init_group`): half too. Only AdamW's `step` stays an fp32 scalar
//! (`_get_scalar_dtype()`).
//!
//! GradScaler (torch/amp/grad_scaler.py), what it allocates on the GPU, all 0-dim:
//! - `scale(loss)`: `_lazy_init_scale_growth_tracker` creates `_scale` (fp32) and
//!   `_growth_tracker` (int32) at the first call; they live for the run. It returns
//!   `outputs * scale` — a new fp32 scalar, nanoGPT's `scaler.scale(loss).backward()`
//!   temporary, freed when the backward returns; MulBackward0 keeps `_scale` (already alive).
//! - `unscale_(optimizer)`: `inv_scale = self._scale.double().reciprocal().float()` (two fp64
//!   temporaries, then fp32), `found_inf = torch.full((), 0.0)`; `_unscale_grads_` asks
//!   `_MultiDeviceReplicator.get(device)` for found_inf then inv_scale, each a
//!   `.to(device, copy=True)` copy; `_amp_foreach_non_finite_check_and_unscale_` unscales the
//!   gradients in place (no temporaries). The replicator's found_inf copy is returned as
//!   `found_inf_per_device` and kept until `update()`; the rest dies with the call.
//! - `step(optimizer)`: an optimizer with `_step_supports_amp_scaling` (fused Adam/AdamW,
//!   torch/optim/adam.py) is handed `grad_scale` and `found_inf`: if unscale_ did not run,
//!   `_check_inf_per_device` makes the same replicator copies with a `torch.full((), 1.0)`
//!   dummy inv_scale; then `found_inf = sum([t.to(device)])` (Python's `0 + t`: a new scalar)
//!   and, when not unscaled yet, `grad_scale = scaler * 1` (a new scalar); both deleted after
//!   `optimizer.step`. Any other optimizer gets `unscale_` (if not run yet) and a plain step.
//! - `update()`: `_amp_update_scale_` in place; `_per_optimizer_states` is reset, which frees
//!   the found_inf copy.

use super::dtype::DType;
use super::engine::{Engine, T, V};
use super::ops;
use super::runtime::Runtime;
use super::timeline::{Category, Name, Shape};
use crate::config::{Parallelism, Precision, PrecisionMode, TrainConfig};

/// The dtype of the trainable parameters: fp32 masters under mixed precision, `dtype` when
/// pure. (Pure runs use the written dtype as is: torchtune refuses bf16 on a card without it
/// rather than falling back to float16.)
pub fn param_dtype(cfg: &TrainConfig) -> DType {
    match (cfg.precision_mode, cfg.dtype) {
        (PrecisionMode::Mixed, _) | (_, Precision::Float32) => DType::F32,
        (PrecisionMode::Pure, Precision::BFloat16) => DType::BF16,
        (PrecisionMode::Pure, Precision::Float16) => DType::F16,
    }
}

/// The precision as the Run line names it, with whose semantics it was simulated: `dtype` is
/// the simulated precision (after the fp16 fallback of a card without bf16).
pub fn describe(cfg: &TrainConfig, dtype: &str) -> String {
    match (cfg.precision_mode, dtype) {
        (_, "float32") => dtype.to_string(),
        (PrecisionMode::Pure, _) => format!(
            "{dtype} pure (weights, gradients and optimizer state in {dtype}, no autocast: torchtune's default, LitGPT's true precision)"
        ),
        (PrecisionMode::Mixed, "float16") if cfg.parallelism == Parallelism::Ddp => {
            "float16 autocast + GradScaler".to_string()
        }
        (PrecisionMode::Mixed, _) => dtype.to_string(),
    }
}

/// torch.amp.GradScaler as nanoGPT's train.py runs it:
/// `GradScaler(enabled=(dtype == 'float16'))` — float16 autocast only (HF Trainer's
/// `fp16=True` does the same through accelerate). DeepSpeed and FSDP bring their own loss
/// scalers, which are not modelled: the scaler is simulated for one GPU and DDP.
pub struct GradScaler {
    scale: Option<T>,
    growth_tracker: Option<T>,
    /// `optimizer_state["found_inf_per_device"]`: one copy for the one device.
    found_inf: Option<T>,
}

impl GradScaler {
    pub fn new(cfg: &TrainConfig, rt: Runtime) -> Option<GradScaler> {
        let enabled = rt.autocast == Some(DType::F16)
            && cfg.precision_mode == PrecisionMode::Mixed
            && cfg.parallelism == Parallelism::Ddp;
        enabled.then_some(GradScaler {
            scale: None,
            growth_tracker: None,
            found_inf: None,
        })
    }

    fn scalar(e: &mut Engine, what: &'static str, dtype: DType) -> T {
        e.alloc(
            Name::top("grad_scaler", what),
            Shape::scalar(),
            dtype,
            Category::Other,
        )
    }

    /// `scaler.scale(loss)`: the value to call `.backward()` on. The caller releases it when
    /// the backward returns.
    pub fn scale(&mut self, e: &mut Engine, loss: V) -> V {
        let scale = match self.scale {
            Some(s) => s,
            None => {
                let s = Self::scalar(e, "_scale", DType::F32);
                self.growth_tracker = Some(Self::scalar(e, "_growth_tracker", DType::I32));
                self.scale = Some(s);
                s
            }
        };
        let scale = V {
            t: scale,
            edge: super::autograd::Edge::None,
        };
        let out = ops::mul(e, loss, scale, Name::top("grad_scaler", "scaled_loss"));
        e.set_category(out.t, Category::Logits);
        out
    }

    /// `scaler.unscale_(optimizer)`, before clipping.
    pub fn unscale_(&mut self, e: &mut Engine) {
        let double = Self::scalar(e, "inv_scale", DType::F64);
        let recip = Self::scalar(e, "inv_scale", DType::F64);
        e.release(double);
        let inv_scale = Self::scalar(e, "inv_scale", DType::F32);
        e.release(recip);
        let found_inf = Self::scalar(e, "found_inf", DType::F32);
        self.unscale_grads(e, inv_scale, found_inf);
    }

    /// `_unscale_grads_`: the replicators' copies; the found_inf copy is kept, the master
    /// tensors are the caller's locals and go with it.
    fn unscale_grads(&mut self, e: &mut Engine, inv_scale: T, found_inf: T) {
        let found_copy = Self::scalar(e, "found_inf_per_device", DType::F32);
        let inv_copy = Self::scalar(e, "inv_scale_per_device", DType::F32);
        e.release(inv_copy);
        e.release(inv_scale);
        e.release(found_inf);
        self.found_inf = Some(found_copy);
    }

    /// `scaler.step(optimizer)`: `step` runs the optimizer's own step. `amp_scaling`: the
    /// optimizer has `_step_supports_amp_scaling` (fused Adam/AdamW).
    pub fn step(&mut self, e: &mut Engine, amp_scaling: bool, step: impl FnOnce(&mut Engine)) {
        let unscaled = self.found_inf.is_some();
        if !amp_scaling {
            if !unscaled {
                self.unscale_(e);
            }
            step(e);
            return;
        }
        if !unscaled {
            // _check_inf_per_device
            let dummy = Self::scalar(e, "dummy_inv_scale", DType::F32);
            let found_inf = Self::scalar(e, "found_inf", DType::F32);
            self.unscale_grads(e, dummy, found_inf);
        }
        let found_sum = Self::scalar(e, "found_inf", DType::F32);
        let grad_scale = (!unscaled).then(|| Self::scalar(e, "grad_scale", DType::F32));
        step(e);
        // `del optimizer.grad_scale`, `del optimizer.found_inf`
        if let Some(g) = grad_scale {
            e.release(g);
        }
        e.release(found_sum);
    }

    /// `scaler.update()`: the scale is updated in place; the per-optimizer state is reset.
    pub fn update(&mut self, e: &mut Engine) {
        if let Some(f) = self.found_inf.take() {
            e.release(f);
        }
    }
}
