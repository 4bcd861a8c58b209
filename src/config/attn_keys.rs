//! The keys of Gemma 2's and Gemma 3's attention and head that change memory: logit
//! soft-capping (`attn_logit_softcapping`, `final_logit_softcapping`) and the alternating
//! sliding window (`sliding_window`, and `layer_types` / `sliding_window_pattern` as
//! `global_every`). None of them exists for the other architectures, so setting one there is
//! refused rather than silently ignored.

use super::blame::Blame;
use super::model_keys::ModelType;
use super::value::{float, float_repr, opt_count, opt_int, Origin, Value};
use super::TrainConfig;
use crate::error::Result;
use std::collections::HashMap;

fn opt_float(v: Option<f64>) -> Value {
    v.map_or(Value::None, Value::Float)
}

/// The current value of one of these keys.
pub(crate) fn get(cfg: &TrainConfig, name: &str) -> Option<Value> {
    Some(match name {
        "attn_softcap" => opt_float(cfg.attn_softcap),
        "final_softcap" => opt_float(cfg.final_softcap),
        "sliding_window" => opt_int(cfg.sliding_window),
        "global_every" => opt_int(cfg.global_every),
        _ => return None,
    })
}

/// Set one of these keys (its type already checked); None when the key is not one of them.
pub(crate) fn set(
    cfg: &mut TrainConfig,
    name: &str,
    v: &Value,
) -> Option<std::result::Result<(), String>> {
    let cap = |v: &Value| (!matches!(v, Value::None)).then(|| float(v));
    let r = match name {
        "attn_softcap" => {
            cfg.attn_softcap = cap(v);
            Ok(())
        }
        "final_softcap" => {
            cfg.final_softcap = cap(v);
            Ok(())
        }
        "sliding_window" => opt_count(v, true).map(|x| cfg.sliding_window = x),
        "global_every" => opt_count(v, true).map(|x| cfg.global_every = x),
        _ => return None,
    };
    Some(r)
}

/// The architectures whose modeling file reads these keys.
fn has_keys(m: ModelType) -> bool {
    matches!(m, ModelType::Gemma2 | ModelType::Gemma3)
}

/// Caps positive and finite, sizes positive, and none of the keys on another architecture.
pub(crate) fn validate(cfg: &TrainConfig, origins: &HashMap<&'static str, Origin>) -> Result<()> {
    let blame = &Blame(origins);
    for (key, cap) in [
        ("attn_softcap", cfg.attn_softcap),
        ("final_softcap", cfg.final_softcap),
    ] {
        if let Some(c) = cap.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return blame.fail(key, float_repr(c), "a positive float (the cap), or None");
        }
    }
    for (key, v) in [
        ("sliding_window", cfg.sliding_window),
        ("global_every", cfg.global_every),
    ] {
        if v == Some(0) {
            return blame.fail(key, "0", "a positive integer or None");
        }
    }
    if has_keys(cfg.model_type) {
        return Ok(());
    }
    let int = |v: Option<u64>| v.map(|x| x.to_string());
    let set = [
        ("attn_softcap", cfg.attn_softcap.map(float_repr)),
        ("final_softcap", cfg.final_softcap.map(float_repr)),
        ("sliding_window", int(cfg.sliding_window)),
        ("global_every", int(cfg.global_every)),
    ];
    match set.into_iter().find_map(|(k, v)| v.map(|v| (k, v))) {
        Some((key, value)) => blame.fail(
            key,
            value,
            format!(
                "None with model_type = '{}' (only gemma2 and gemma3_text read it)",
                cfg.model_type.as_str()
            ),
        ),
        None => Ok(()),
    }
}

impl TrainConfig {
    /// Layer `layer` (0-based) attends over the sliding window: Gemma2Config and
    /// Gemma3TextConfig's default `layer_types` are "sliding_attention" unless
    /// `(i + 1) % pattern == 0` (configuration_gemma2.py / configuration_gemma3.py).
    pub fn layer_slides(&self, layer: u32) -> bool {
        self.sliding_window.is_some()
            && self
                .global_every
                .is_none_or(|k| !(u64::from(layer) + 1).is_multiple_of(k))
    }

    /// Tokens layer `layer` keeps in the KV cache, and attends over, at a context of `ctx`:
    /// a sliding layer at most its window.
    pub fn cached_tokens(&self, layer: u32, ctx: u64) -> u64 {
        match self.sliding_window {
            Some(w) if self.layer_slides(layer) => w.min(ctx),
            _ => ctx,
        }
    }

    /// Some layer slides and some attends globally: the model builds both masks (and, for
    /// Gemma 3, both rotary tables).
    pub fn mixed_layers(&self) -> bool {
        let n = self.n_layer.min(u64::from(u32::MAX)) as u32;
        let slides = (0..n).filter(|l| self.layer_slides(*l)).count() as u32;
        slides > 0 && slides < n
    }

    /// What the sliding window changes that the run's decisions do not say: past the window,
    /// the sliding layers' SDPA takes an explicit mask and so another kernel.
    pub fn sliding_window_notes(&self) -> Vec<String> {
        let Some(w) = self.sliding_window.filter(|_| has_keys(self.model_type)) else {
            return Vec::new();
        };
        let sdpa = !self.hf_eager_attention();
        if self.mode == super::Mode::Train && sdpa && self.block_size >= w {
            vec![format!(
                "block_size {} >= sliding_window {w}: the sliding layers' SDPA gets an explicit (B, 1, T, T) mask (transformers' masking_utils._ignore_causal_mask_sdpa), which the flash kernel cannot take: they run the memory-efficient kernel on k and v expanded by repeat_kv, as simulated; the global layers keep the kernel named above",
                self.block_size
            )]
        } else {
            Vec::new()
        }
    }

    /// Hugging Face's attention is eager: `flash = False` asks for it, and Gemma 2 has nothing
    /// else by default (`Gemma2PreTrainedModel._supports_sdpa = False`, "sdpa does not support
    /// softcapping", so `get_correct_attn_implementation` falls back from sdpa to eager).
    pub fn hf_eager_attention(&self) -> bool {
        !self.flash || self.model_type == ModelType::Gemma2
    }
}
