//! A Hugging Face `config.json` as a layer of assignments with vramplan's key names, each
//! pointing at the line of the JSON field it came from.
//!
//! What is read, per `model_type`:
//! - `gpt2`: n_layer, n_head, n_embd, n_positions (→ block_size), vocab_size; biases everywhere.
//! - `llama`, `mistral`, `qwen2`, `gemma`, `qwen3`, `phi3`, `olmo2`: num_hidden_layers, num_attention_heads, hidden_size,
//!   num_key_value_heads, head_dim, intermediate_size, vocab_size, tie_word_embeddings,
//!   attention_bias (Qwen2 always has q/k/v biases).
//! - `gpt_neox`: the same sizes, rotary_pct (or partial_rotary_factor), use_parallel_residual.
//! - `gemma2`, `gemma3_text` (and `gemma3`'s text_config), `olmo2`: the Llama sizes, with the
//!   config class's defaults for the sizes a file leaves out; Gemma's soft-capping and sliding
//!   window (src/config/hf_gemma.rs).
//! - `mixtral`: the Llama sizes, num_local_experts, num_experts_per_tok (MixtralConfig's
//!   defaults 8 and 2), output_router_logits (default false: the auxiliary loss).
//! - `qwen3_moe`: Qwen3's sizes, num_experts, num_experts_per_tok, moe_intermediate_size,
//!   norm_topk_prob, decoder_sparse_step, mlp_only_layers (Qwen3MoeConfig's defaults 128, 8,
//!   768, false, 1, []), output_router_logits.
//! - `qwen2_moe`: Qwen2's sizes with qkv_bias (default true), the same MoE keys with
//!   Qwen2MoeConfig's defaults (60, 4, 1408, false, 1, []) and shared_expert_intermediate_size
//!   (5632); use_sliding_window is not read (as for qwen2).
//!
//! Fields that do not change training memory are not read: `max_position_embeddings` (the
//! sequence trained is `block_size`), `rope_theta`/`rope_scaling` (the cos/sin tables are the
//! same size), Mistral's `sliding_window` (no effect up to the window with SDPA), `torch_dtype` (the
//! checkpoint's storage: training keeps fp32 master weights under autocast, per `dtype`).

use super::model_keys::ModelType;
use super::value::{Assignment, Origin, Rhs, Value};
use crate::error::{Error, Result};
use serde_json::{Map, Value as Json};

/// A parsed config.json and where its fields are.
pub(super) struct Fields<'a> {
    pub(super) map: Map<String, Json>,
    pub(super) text: &'a str,
    pub(super) path: &'a str,
}

impl Fields<'_> {
    pub(super) fn origin(&self, key: &str) -> Origin {
        let needle = format!("\"{key}\"");
        let line = self
            .text
            .find(&needle)
            .map_or(1, |at| self.text[..at].matches('\n').count() + 1);
        Origin::File {
            path: self.path.to_string(),
            line,
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&Json> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn int(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::new(format!(
                    "{}: \"{key}\": {}: expected a non-negative integer",
                    self.origin(key),
                    brief(v)
                ))
            }),
        }
    }

    pub(super) fn required(&self, key: &str) -> Result<u64> {
        self.int(key)?.ok_or_else(|| {
            Error::new(format!(
                "{}: no \"{key}\": expected it in a config.json of this model_type",
                self.path
            ))
        })
    }

    pub(super) fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                Error::new(format!(
                    "{}: \"{key}\": {}: expected true or false",
                    self.origin(key),
                    brief(v)
                ))
            }),
        }
    }

    pub(super) fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::new(format!(
                    "{}: \"{key}\": {}: expected a number",
                    self.origin(key),
                    brief(v)
                ))
            }),
        }
    }
}

pub(super) fn brief(v: &Json) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        s.chars().take(59).chain(std::iter::once('…')).collect()
    } else {
        s
    }
}

/// The assignments a config.json stands for (model shape only), and warnings about fields
/// read but not simulated.
pub(crate) fn parse(text: &str, path: &str) -> Result<(Vec<Assignment>, Vec<String>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let json: Json = serde_json::from_str(text)
        .map_err(|e| crate::plain::json_error(&e, text, path, "a Hugging Face config.json"))?;
    let Json::Object(map) = json else {
        return Err(Error::new(format!(
            "{path}: expected a JSON object (a Hugging Face config.json), got {}",
            brief(&json)
        )));
    };
    let mut f = Fields { map, text, path };
    let mut warnings = Vec::new();
    // Gemma3ForConditionalGeneration: the text model's fields are under text_config.
    if f.get("model_type").and_then(Json::as_str) == Some("gemma3") {
        f = super::hf_gemma::text_config(f, &mut warnings)?;
    }
    let Some(mt) = f.get("model_type") else {
        return Err(Error::new(format!(
            "{path}: no \"model_type\": expected a Hugging Face config.json whose model_type is one of {}",
            ModelType::names()
        )));
    };
    let name = mt.as_str().unwrap_or_default();
    let Some(model_type) = ModelType::parse(name) else {
        return Err(Error::new(format!(
            "{}: model_type = {}: expected one of {} (the architectures vramplan simulates)",
            f.origin("model_type"),
            brief(mt),
            ModelType::names()
        )));
    };
    let mut out = Vec::new();
    let mut put = |key: &str, from: &str, v: Value| {
        out.push(Assignment {
            key: key.to_string(),
            rhs: Rhs::Known(v),
            origin: f.origin(from),
        })
    };
    put("model_type", "model_type", Value::Str(name.to_string()));
    if model_type == ModelType::Gpt2 {
        gpt2_fields(&f, &mut put)?;
        return Ok((out, warnings));
    }
    decoder_fields(&f, model_type, &mut put)?;
    if model_type == ModelType::GptNeox {
        neox_fields(&f, &mut put)?;
    }
    if matches!(model_type, ModelType::Gemma2 | ModelType::Gemma3) {
        super::hf_gemma::attention_fields(&f, model_type, &mut put)?;
    }
    if model_type.is_moe() {
        moe_fields(&f, model_type, &mut put)?;
    }
    if f.boolean("mlp_bias")? == Some(true) {
        warnings.push(format!(
            "{}: mlp_bias = true is not simulated (the MLP is built without biases; they are {} parameters per layer at most)",
            f.origin("mlp_bias"),
            "3 x intermediate_size"
        ));
    }
    Ok((out, warnings))
}

/// GPT-2's GPT2Config: nanoGPT's names, its 4x MLP (n_inner null or 4 · n_embd), biases.
fn gpt2_fields(f: &Fields, put: &mut impl FnMut(&str, &str, Value)) -> Result<()> {
    let int = |v: u64| Value::Int(v.into());
    put("n_layer", "n_layer", int(f.required("n_layer")?));
    put("n_head", "n_head", int(f.required("n_head")?));
    let c = f.required("n_embd")?;
    put("n_embd", "n_embd", int(c));
    put(
        "block_size",
        "n_positions",
        int(f.int("n_positions")?.unwrap_or(1024)),
    );
    put(
        "vocab_size",
        "vocab_size",
        int(f.int("vocab_size")?.unwrap_or(50257)),
    );
    put("bias", "model_type", Value::Bool(true));
    if let Some(tie) = f.boolean("tie_word_embeddings")? {
        put(
            "tie_word_embeddings",
            "tie_word_embeddings",
            Value::Bool(tie),
        );
    }
    if let Some(inner) = f.int("n_inner")? {
        if inner != 4 * c {
            return Err(Error::new(format!(
                "{}: \"n_inner\": {inner}: expected null or 4 * n_embd = {} (nanoGPT's GPT has a 4x MLP)",
                f.origin("n_inner"),
                4 * c
            )));
        }
    }
    Ok(())
}

/// The decoders' sizes, heads, tied embeddings and attention biases, each field the file
/// leaves out at its config class's default where it has one.
fn decoder_fields(
    f: &Fields,
    model_type: ModelType,
    put: &mut impl FnMut(&str, &str, Value),
) -> Result<()> {
    let int = |v: u64| Value::Int(v.into());
    let size = |key: &str| -> Result<u64> {
        match super::hf_gemma::class_default(model_type, key) {
            Some(d) => Ok(f.int(key)?.unwrap_or(d)),
            None => f.required(key),
        }
    };
    put(
        "n_layer",
        "num_hidden_layers",
        int(size("num_hidden_layers")?),
    );
    let heads = size("num_attention_heads")?;
    put("n_head", "num_attention_heads", int(heads));
    put("n_embd", "hidden_size", int(size("hidden_size")?));
    put("vocab_size", "vocab_size", int(size("vocab_size")?));
    put(
        "intermediate_size",
        "intermediate_size",
        int(size("intermediate_size")?),
    );
    let optional = |key: &str| -> Result<Option<u64>> {
        let d = super::hf_gemma::class_default(model_type, key);
        Ok(f.int(key)?.or(d))
    };
    if let Some(kv) = optional("num_key_value_heads")? {
        put("n_kv_head", "num_key_value_heads", int(kv));
    }
    if let Some(hd) = optional("head_dim")? {
        put("head_dim", "head_dim", int(hd));
    }
    // Each class's default when the file leaves it out.
    let tie_default = matches!(
        model_type,
        ModelType::Gemma | ModelType::Gemma2 | ModelType::Gemma3
    );
    let tie = f.boolean("tie_word_embeddings")?.unwrap_or(tie_default);
    put(
        "tie_word_embeddings",
        "tie_word_embeddings",
        Value::Bool(tie),
    );
    let bias = match model_type {
        // Qwen2Attention: q_proj, k_proj, v_proj with bias=True, o_proj without.
        ModelType::Qwen2 => true,
        // Qwen2MoeAttention: q, k, v with bias=config.qkv_bias (Qwen2MoeConfig: True).
        ModelType::Qwen2Moe => f.boolean("qkv_bias")?.unwrap_or(true),
        // GPT-NeoX: every Linear and LayerNorm has a bias.
        ModelType::GptNeox => true,
        _ => f.boolean("attention_bias")?.unwrap_or(false),
    };
    put("bias", "attention_bias", Value::Bool(bias));
    Ok(())
}

/// GPT-NeoX's rotary fraction and parallel residual.
fn neox_fields(f: &Fields, put: &mut impl FnMut(&str, &str, Value)) -> Result<()> {
    let pct = match f.float("rotary_pct")? {
        Some(p) => Some(("rotary_pct", p)),
        None => f
            .float("partial_rotary_factor")?
            .map(|p| ("partial_rotary_factor", p)),
    };
    let (from, pct) = pct.unwrap_or(("model_type", 0.25));
    put("rotary_pct", from, Value::Float(pct));
    let par = f.boolean("use_parallel_residual")?.unwrap_or(true);
    put(
        "parallel_residual",
        "use_parallel_residual",
        Value::Bool(par),
    );
    Ok(())
}

/// The experts: Mixtral's `num_local_experts` and `num_experts_per_tok` (MixtralConfig's
/// defaults 8 and 2); Qwen3-MoE's and Qwen2-MoE's `num_experts`, `num_experts_per_tok`,
/// `moe_intermediate_size`, `norm_topk_prob`, `decoder_sparse_step`, `mlp_only_layers`
/// (Qwen3MoeConfig's 128, 8, 768, false, 1, []; Qwen2MoeConfig's 60, 4, 1408, false, 1, []),
/// and Qwen2-MoE's `shared_expert_intermediate_size` (5632); `output_router_logits` (the
/// auxiliary load-balancing loss; every config class's default False).
fn moe_fields(f: &Fields, m: ModelType, put: &mut impl FnMut(&str, &str, Value)) -> Result<()> {
    let int = |v: u64| Value::Int(v.into());
    // (experts key, experts, per token, expert width, shared expert width) by class default.
    let (experts_key, defaults) = match m {
        ModelType::Qwen3Moe => ("num_experts", (128, 8, Some(768), None)),
        ModelType::Qwen2Moe => ("num_experts", (60, 4, Some(1408), Some(5632))),
        _ => ("num_local_experts", (8, 2, None, None)),
    };
    let (experts, per_token, width, shared) = defaults;
    put(
        "num_experts",
        experts_key,
        int(f.int(experts_key)?.unwrap_or(experts)),
    );
    let k = int(f.int("num_experts_per_tok")?.unwrap_or(per_token));
    put("experts_per_token", "num_experts_per_tok", k);
    let aux = f.boolean("output_router_logits")?.unwrap_or(false);
    put(
        "output_router_logits",
        "output_router_logits",
        Value::Bool(aux),
    );
    let Some(width) = width else {
        return Ok(());
    };
    let width = f.int("moe_intermediate_size")?.unwrap_or(width);
    put("moe_intermediate_size", "moe_intermediate_size", int(width));
    if let Some(shared) = shared {
        let key = "shared_expert_intermediate_size";
        put(key, key, int(f.int(key)?.unwrap_or(shared)));
    }
    let norm = f.boolean("norm_topk_prob")?.unwrap_or(false);
    put("norm_topk_prob", "norm_topk_prob", Value::Bool(norm));
    let step = f.int("decoder_sparse_step")?.unwrap_or(1);
    put("decoder_sparse_step", "decoder_sparse_step", int(step));
    let dense = dense_layer_list(f)?;
    put("mlp_only_layers", "mlp_only_layers", Value::Str(dense));
    Ok(())
}

/// `mlp_only_layers` (a JSON list of layer indices, or null) as vramplan's comma-separated
/// string.
fn dense_layer_list(f: &Fields) -> Result<String> {
    let key = "mlp_only_layers";
    let Some(v) = f.get(key) else {
        return Ok(String::new());
    };
    let layers = v.as_array().and_then(|l| {
        l.iter()
            .map(|x| x.as_u64().map(|x| x.to_string()))
            .collect::<Option<Vec<_>>>()
    });
    layers.map(|l| l.join(",")).ok_or_else(|| {
        Error::new(format!(
            "{}: \"{key}\": {}: expected a list of layer indices (non-negative integers)",
            f.origin(key),
            brief(v)
        ))
    })
}
