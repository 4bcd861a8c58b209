//! The keys that describe architectures beyond nanoGPT's GPT: which decoder (`model_type`, as
//! Hugging Face's config.json names it) and the shapes nanoGPT's GPTConfig has no names for.
//! Each defaults to what nanoGPT's GPT has, so a nanoGPT config never needs them.

use super::blame::Blame;
use super::kinds::{parse_name, quoted_names};
use super::value::{float, opt_count, opt_int, Origin, Value};
use super::TrainConfig;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The decoder the model is built as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ModelType {
    /// nanoGPT's GPT (model.py): learned positions, LayerNorm, GELU MLP, tied lm_head.
    #[default]
    #[serde(rename = "gpt2")]
    Gpt2,
    /// Hugging Face LlamaForCausalLM: RMSNorm, rotary, SwiGLU, grouped-query attention.
    #[serde(rename = "llama")]
    Llama,
    /// MistralForCausalLM: Llama's layers (the sliding window does not change training memory
    /// at sequences up to the window).
    #[serde(rename = "mistral")]
    Mistral,
    /// Qwen2ForCausalLM: Llama's layers with biases on q, k and v.
    #[serde(rename = "qwen2")]
    Qwen2,
    /// GemmaForCausalLM: embeddings scaled by √hidden, `(1 + weight)` RMSNorm, GELU-gated MLP.
    #[serde(rename = "gemma")]
    Gemma,
    /// Gemma2ForCausalLM: Gemma's with four norms per layer, attention and final logit
    /// soft-capping, eager attention and alternating sliding-window layers.
    #[serde(rename = "gemma2")]
    Gemma2,
    /// Gemma3ForCausalLM (the text model): Gemma 2's layers with q_norm/k_norm per head, no
    /// soft-capping in the released configs, 5 sliding layers to 1 global, two rotary bases.
    #[serde(rename = "gemma3_text")]
    Gemma3,
    /// Olmo2ForCausalLM: Llama's layers with the norms after each sublayer and q_norm/k_norm
    /// over the whole projected q and k.
    #[serde(rename = "olmo2")]
    Olmo2,
    /// MixtralForCausalLM: Mistral's layers with the MLP replaced by a sparse mixture of experts
    /// (a top-k router over `num_experts` SwiGLU experts; src/model/moe.rs).
    #[serde(rename = "mixtral")]
    Mixtral,
    /// Qwen3MoeForCausalLM: Qwen3's layers with the MLP replaced by a sparse mixture of
    /// `moe_intermediate_size`-wide experts (src/model/moe.rs).
    #[serde(rename = "qwen3_moe")]
    Qwen3Moe,
    /// Qwen2MoeForCausalLM: Qwen2's layers (q/k/v biases) with a sparse MoE block whose
    /// shared expert runs beside the routed ones (src/model/moe.rs).
    #[serde(rename = "qwen2_moe")]
    Qwen2Moe,
    /// Qwen3ForCausalLM: Llama's layers without biases, with an RMSNorm over each head of q
    /// and of k (`q_norm`, `k_norm`) before rotary.
    #[serde(rename = "qwen3")]
    Qwen3,
    /// Phi3ForCausalLM: Llama's decoder with q, k, v fused in `qkv_proj` and gate, up fused in
    /// `gate_up_proj`.
    #[serde(rename = "phi3")]
    Phi3,
    /// GPTNeoXForCausalLM (Pythia): LayerNorm, fused qkv, partial rotary, parallel residual.
    #[serde(rename = "gpt_neox")]
    GptNeox,
}

impl ModelType {
    pub const ALL: [ModelType; 14] = [
        ModelType::Gpt2,
        ModelType::Llama,
        ModelType::Mistral,
        ModelType::Qwen2,
        ModelType::Gemma,
        ModelType::Gemma2,
        ModelType::Gemma3,
        ModelType::Olmo2,
        ModelType::Mixtral,
        ModelType::Qwen3Moe,
        ModelType::Qwen2Moe,
        ModelType::Qwen3,
        ModelType::Phi3,
        ModelType::GptNeox,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Gpt2 => "gpt2",
            ModelType::Llama => "llama",
            ModelType::Mistral => "mistral",
            ModelType::Qwen2 => "qwen2",
            ModelType::Gemma => "gemma",
            ModelType::Gemma2 => "gemma2",
            ModelType::Gemma3 => "gemma3_text",
            ModelType::Olmo2 => "olmo2",
            ModelType::Mixtral => "mixtral",
            ModelType::Qwen3Moe => "qwen3_moe",
            ModelType::Qwen2Moe => "qwen2_moe",
            ModelType::Qwen3 => "qwen3",
            ModelType::Phi3 => "phi3",
            ModelType::GptNeox => "gpt_neox",
        }
    }

    pub fn parse(s: &str) -> Option<ModelType> {
        parse_name(&ModelType::ALL, ModelType::as_str, s)
    }

    /// "'gpt2', 'llama', ..." for messages.
    pub fn names() -> String {
        quoted_names(&ModelType::ALL, ModelType::as_str)
    }

    /// The Llama family: RMSNorm, rotary on all dims, gated MLP, separate q/k/v projections.
    pub fn is_llama_like(self) -> bool {
        matches!(
            self,
            ModelType::Llama
                | ModelType::Mistral
                | ModelType::Qwen2
                | ModelType::Gemma
                | ModelType::Gemma2
                | ModelType::Gemma3
                | ModelType::Olmo2
                | ModelType::Mixtral
                | ModelType::Qwen3Moe
                | ModelType::Qwen2Moe
                | ModelType::Qwen3
        )
    }
}

impl ModelType {
    /// Qwen2Attention and Qwen2MoeAttention: biases on q_proj, k_proj, v_proj, none on o_proj.
    pub fn qkv_bias_only(self) -> bool {
        matches!(self, ModelType::Qwen2 | ModelType::Qwen2Moe)
    }

    /// The mixture-of-experts decoders (transformers 5.x's grouped_mm path).
    pub fn is_moe(self) -> bool {
        matches!(
            self,
            ModelType::Mixtral | ModelType::Qwen3Moe | ModelType::Qwen2Moe
        )
    }
}

pub(crate) fn yes() -> bool {
    true
}

pub(crate) fn one() -> f64 {
    1.0
}

pub(crate) fn sixteen() -> f64 {
    16.0
}

/// Empty: PEFT's default `target_modules` for the model type.
pub(crate) fn lora_default_targets() -> String {
    String::new()
}

/// Names of the keys this module owns.
pub(crate) const NAMES: &[&str] = &[
    "model_type",
    "n_kv_head",
    "head_dim",
    "intermediate_size",
    "tie_word_embeddings",
    "rotary_pct",
    "parallel_residual",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "quantization",
    "double_quant",
];

/// The current value of one of these keys.
pub(crate) fn get(cfg: &TrainConfig, name: &str) -> Option<Value> {
    Some(match name {
        "model_type" => Value::Str(cfg.model_type.as_str().to_string()),
        "n_kv_head" => opt_int(cfg.n_kv_head),
        "head_dim" => opt_int(cfg.head_dim),
        "intermediate_size" => opt_int(cfg.intermediate_size),
        "tie_word_embeddings" => Value::Bool(cfg.tie_word_embeddings),
        "rotary_pct" => Value::Float(cfg.rotary_pct),
        "parallel_residual" => Value::Bool(cfg.parallel_residual),
        "lora_rank" => Value::Int(cfg.lora_rank.into()),
        "lora_alpha" => Value::Float(cfg.lora_alpha),
        "lora_dropout" => Value::Float(cfg.lora_dropout),
        "lora_targets" => Value::Str(cfg.lora_targets.clone()),
        "quantization" => Value::Str(cfg.quantization.as_str().to_string()),
        "double_quant" => Value::Bool(cfg.double_quant),
        _ => return None,
    })
}

/// Set one of these keys (its type already checked); None when the key is not one of them.
pub(crate) fn set(
    cfg: &mut TrainConfig,
    name: &str,
    v: &Value,
) -> Option<std::result::Result<(), String>> {
    let opt = |v: &Value| opt_count(v, true);
    let r = match (name, v) {
        ("model_type", Value::Str(s)) => match ModelType::parse(s) {
            Some(m) => {
                cfg.model_type = m;
                Ok(())
            }
            None => Err(format!(
                "expected one of {} (the architectures vramplan simulates)",
                ModelType::names()
            )),
        },
        ("n_kv_head", v) => opt(v).map(|x| cfg.n_kv_head = x),
        ("head_dim", v) => opt(v).map(|x| cfg.head_dim = x),
        ("intermediate_size", v) => opt(v).map(|x| cfg.intermediate_size = x),
        ("tie_word_embeddings", Value::Bool(b)) => {
            cfg.tie_word_embeddings = *b;
            Ok(())
        }
        ("parallel_residual", Value::Bool(b)) => {
            cfg.parallel_residual = *b;
            Ok(())
        }
        ("rotary_pct" | "lora_alpha" | "lora_dropout", Value::Float(_) | Value::Int(_)) => {
            let x = float(v);
            match name {
                "rotary_pct" => cfg.rotary_pct = x,
                "lora_alpha" => cfg.lora_alpha = x,
                _ => cfg.lora_dropout = x,
            }
            Ok(())
        }
        ("lora_rank", v) => match opt(v) {
            Ok(Some(r)) => {
                cfg.lora_rank = r;
                Ok(())
            }
            Ok(None) => Err("expected an int (0 turns LoRA off), got None".to_string()),
            Err(e) => Err(e),
        },
        ("lora_targets", Value::Str(t)) => {
            cfg.lora_targets = t.clone();
            Ok(())
        }
        ("quantization", Value::Str(s)) => match super::lora::Quantization::parse(s) {
            Some(q) => {
                cfg.quantization = q;
                Ok(())
            }
            None => Err(format!(
                "expected one of {}",
                super::lora::Quantization::names()
            )),
        },
        ("double_quant", Value::Bool(b)) => {
            cfg.double_quant = *b;
            Ok(())
        }
        _ if NAMES.contains(&name) => Err(format!("got a {}", v.type_name())),
        _ => return None,
    };
    Some(r)
}

/// The checks these keys need beyond their types; messages name where the value came from.
pub(crate) fn validate(cfg: &TrainConfig, origins: &HashMap<&'static str, Origin>) -> Result<()> {
    let blame = &Blame(origins);
    // The upper bounds are in `limits`, checked first.
    for (key, v) in [
        ("n_kv_head", cfg.n_kv_head),
        ("head_dim", cfg.head_dim),
        ("intermediate_size", cfg.intermediate_size),
    ] {
        if v == Some(0) {
            return blame.fail(key, "0", "a positive integer or None");
        }
    }
    gpt2_has_none(cfg, blame)?;
    if cfg.model_type != ModelType::Gpt2 && super::presets::gpt2_shape(&cfg.init_from).is_some() {
        return blame.fail(
            "init_from",
            format!("'{}'", cfg.init_from),
            format!(
                "'scratch' or 'resume' with model_type = '{}' (init_from='gpt2*' loads nanoGPT's GPT-2)",
                cfg.model_type.as_str()
            ),
        );
    }
    if let Some(kv) = cfg.n_kv_head {
        if kv > cfg.n_head || !cfg.n_head.is_multiple_of(kv) {
            return blame.fail(
                "n_kv_head",
                kv.to_string(),
                format!(
                    "a divisor of n_head = {} (each key/value head serves n_head / n_kv_head query heads)",
                    cfg.n_head
                ),
            );
        }
    }
    super::lora::validate(cfg, blame)?;
    if cfg.model_type == ModelType::GptNeox && cfg.kv_heads() != cfg.n_head {
        return blame.fail(
            "n_kv_head",
            cfg.kv_heads().to_string(),
            format!(
                "None or n_head = {} (GPT-NeoX has no grouped-query attention)",
                cfg.n_head
            ),
        );
    }
    rotary(cfg, blame)
}

/// nanoGPT's GPT has none of the Hugging Face decoders' options: refused rather than ignored.
fn gpt2_has_none(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if cfg.model_type != ModelType::Gpt2 {
        return Ok(());
    }
    let set: Vec<&str> = [
        ("n_kv_head", cfg.n_kv_head.is_some()),
        ("head_dim", cfg.head_dim.is_some()),
        ("intermediate_size", cfg.intermediate_size.is_some()),
        ("tie_word_embeddings", !cfg.tie_word_embeddings),
        ("rotary_pct", cfg.rotary_pct != 1.0),
        ("parallel_residual", cfg.parallel_residual),
    ]
    .into_iter()
    .filter(|(_, s)| *s)
    .map(|(k, _)| k)
    .collect();
    if let Some(key) = set.first() {
        return Err(Error::bad_value(key, format!(
            "{}{key} is set, but model_type = 'gpt2' (nanoGPT's GPT) has no such option: expected model_type = one of {} for it, or leave {key} at its default",
            blame.at(key),
            ModelType::names()
        )));
    }
    Ok(())
}

/// The rotated fraction of each head: in (0, 1], an even number of dims within the head.
fn rotary(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if !(cfg.rotary_pct > 0.0 && cfg.rotary_pct <= 1.0) {
        return blame.fail(
            "rotary_pct",
            super::value::float_repr(cfg.rotary_pct),
            "a fraction in (0, 1], e.g. 0.25 for Pythia",
        );
    }
    let hd = cfg.head_size();
    let rot = cfg.rotary_dim();
    if cfg.model_type != ModelType::Gpt2 && (rot < 2 || !rot.is_multiple_of(2) || rot > hd) {
        return blame.fail(
            "rotary_pct",
            super::value::float_repr(cfg.rotary_pct),
            format!("a fraction of head_dim = {hd} that gives an even number of rotated dims (got {rot})"),
        );
    }
    Ok(())
}

impl TrainConfig {
    /// Channels per attention head.
    pub fn head_size(&self) -> u64 {
        self.head_dim.unwrap_or(self.n_embd / self.n_head.max(1))
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> u64 {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// The MLP's hidden width.
    pub fn mlp_width(&self) -> u64 {
        self.intermediate_size.unwrap_or(4 * self.n_embd)
    }

    /// Dims of each head that rotary embeddings rotate (HF: `int(head_dim * rotary_pct)`).
    pub fn rotary_dim(&self) -> u64 {
        (self.head_size() as f64 * self.rotary_pct) as u64
    }
}
