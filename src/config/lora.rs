//! LoRA's keys beyond their types: which Linear layers each architecture has for PEFT's
//! `target_modules`, PEFT's defaults, bitsandbytes' quantization of the base weights (QLoRA),
//! and the checks.

use super::blame::Blame;
use super::kinds::{parse_name, quoted_names};
use super::model_keys::ModelType;
use super::TrainConfig;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// How the base Linear weights are stored (transformers' `BitsAndBytesConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Quantization {
    /// Weights in the run's dtype.
    #[default]
    #[serde(rename = "none")]
    None,
    /// `load_in_4bit`, `bnb_4bit_quant_type="nf4"`: two weights per byte, an absmax per 64.
    #[serde(rename = "nf4")]
    Nf4,
    /// `bnb_4bit_quant_type="fp4"`: the same storage as NF4, another code.
    #[serde(rename = "fp4")]
    Fp4,
    /// `load_in_8bit` (LLM.int8()): int8 weights and an fp32 scale per output row.
    #[serde(rename = "int8")]
    Int8,
    /// vLLM serving an AWQ checkpoint (4-bit, group 128): inference only.
    #[serde(rename = "awq")]
    Awq,
    /// vLLM serving a GPTQ checkpoint (4-bit, group 128, no act-order): inference only.
    #[serde(rename = "gptq")]
    Gptq,
    /// vLLM serving an FP8 checkpoint (e4m3 weights, a per-tensor scale): inference only.
    #[serde(rename = "fp8")]
    Fp8,
}

impl Quantization {
    pub const ALL: [Quantization; 7] = [
        Quantization::None,
        Quantization::Nf4,
        Quantization::Fp4,
        Quantization::Int8,
        Quantization::Awq,
        Quantization::Gptq,
        Quantization::Fp8,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Nf4 => "nf4",
            Quantization::Fp4 => "fp4",
            Quantization::Int8 => "int8",
            Quantization::Awq => "awq",
            Quantization::Gptq => "gptq",
            Quantization::Fp8 => "fp8",
        }
    }

    pub fn parse(s: &str) -> Option<Quantization> {
        parse_name(&Quantization::ALL, Quantization::as_str, s)
    }

    pub fn names() -> String {
        quoted_names(&Quantization::ALL, Quantization::as_str)
    }

    pub fn is_4bit(self) -> bool {
        matches!(self, Quantization::Nf4 | Quantization::Fp4)
    }

    /// A checkpoint vLLM serves already quantized (`--quantization awq|gptq|fp8`).
    pub fn is_prequantized(self) -> bool {
        matches!(
            self,
            Quantization::Awq | Quantization::Gptq | Quantization::Fp8
        )
    }
}

/// The Linear layers LoRA can wrap, by model type (PEFT's `target_modules` names).
pub fn lora_modules(m: ModelType) -> &'static [&'static str] {
    match m {
        ModelType::Gpt2 => &[],
        ModelType::GptNeox => &["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
        ModelType::Phi3 => &["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        // MixtralDecoderLayer (5.x): the router (MixtralTopKRouter) and the experts
        // (MixtralExperts, 3-D parameters) are not nn.Linear; PEFT finds only attention's.
        // Qwen3-MoE's are the same, but a dense layer (mlp_only_layers, decoder_sparse_step)
        // has a Qwen3MoeMLP of nn.Linear: its gate/up/down are targets (the default list).
        ModelType::Mixtral => &["q_proj", "k_proj", "v_proj", "o_proj"],
        // Qwen2MoeSparseMoeBlock: the shared expert (a Qwen2MoeMLP) and shared_expert_gate
        // are nn.Linear, as is a dense layer's MLP; the router and the experts are not.
        ModelType::Qwen2Moe => &[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "shared_expert_gate",
        ],
        _ => &[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    }
}

/// PEFT's default targets (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
fn lora_peft_defaults(m: ModelType) -> &'static [&'static str] {
    match m {
        ModelType::Gpt2 => &[],
        ModelType::GptNeox => &["query_key_value"],
        // PEFT's mapping has no q_proj / v_proj for Phi-3; its fused projection is the one
        // that holds q and v (the mapping's own entry was not checked here).
        ModelType::Phi3 => &["qkv_proj"],
        _ => &["q_proj", "v_proj"],
    }
}

/// LoRA: a rank the model can take, a dropout probability, targets the architecture has.
pub(crate) fn validate(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if !(cfg.lora_alpha.is_finite() && cfg.lora_alpha > 0.0) {
        return blame.fail(
            "lora_alpha",
            super::value::float_repr(cfg.lora_alpha),
            "a positive number (the adapters' scale is lora_alpha / lora_rank)",
        );
    }
    if !(cfg.lora_dropout >= 0.0 && cfg.lora_dropout < 1.0) {
        return blame.fail(
            "lora_dropout",
            super::value::float_repr(cfg.lora_dropout),
            "a probability in [0, 1)",
        );
    }
    quantization(cfg, blame)?;
    if cfg.lora_rank == 0 {
        return Ok(());
    }
    if cfg.model_type == ModelType::Gpt2 {
        return blame.fail(
            "lora_rank",
            cfg.lora_rank.to_string(),
            format!(
                "0 for model_type = 'gpt2' (nanoGPT's GPT has no LoRA), or a Hugging Face model_type ({})",
                ModelType::names()
            ),
        );
    }
    if cfg.lora_rank > cfg.n_embd.min(cfg.mlp_width()) {
        return blame.fail(
            "lora_rank",
            cfg.lora_rank.to_string(),
            format!(
                "at most min(n_embd, intermediate_size) = {} (a low rank)",
                cfg.n_embd.min(cfg.mlp_width())
            ),
        );
    }
    targets(cfg, blame)
}

/// Quantized base weights: bitsandbytes' types for training (with adapters), vLLM's
/// checkpoint formats for serving; not nanoGPT's GPT.
fn quantization(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if cfg.quantization == Quantization::None {
        return Ok(());
    }
    if cfg.model_type == ModelType::Gpt2 {
        return blame.fail(
            "quantization",
            format!("'{}'", cfg.quantization.as_str()),
            format!(
                "'none' for model_type = 'gpt2' (bitsandbytes quantizes Hugging Face models: {})",
                ModelType::names()
            ),
        );
    }
    if cfg.quantization.is_prequantized() && cfg.mode != super::Mode::Inference {
        return blame.fail(
            "quantization",
            format!("'{}'", cfg.quantization.as_str()),
            "mode = 'inference' ('awq', 'gptq' and 'fp8' are checkpoints vLLM serves), or a bitsandbytes type for training: 'nf4', 'fp4', 'int8'",
        );
    }
    // Serving a quantized model needs no adapters; training one does.
    if cfg.lora_rank == 0 && cfg.mode != super::Mode::Inference {
        return blame.fail(
            "quantization",
            format!("'{}'", cfg.quantization.as_str()),
            "lora_rank > 0 with quantized base weights (they are frozen: QLoRA trains adapters), mode = 'inference', or quantization = 'none'",
        );
    }
    Ok(())
}

/// The Linear layers LoRA wraps must be the model's own (or 'all-linear').
fn targets(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    let known = lora_modules(cfg.model_type);
    let targets = cfg.lora_target_list();
    let unknown = targets.iter().find(|t| !known.contains(t));
    if targets.is_empty() || unknown.is_some() {
        return blame.fail(
            "lora_targets",
            format!(
                "'{}'",
                cfg.lora_targets.chars().take(80).collect::<String>()
            ),
            format!(
                "'all-linear' or a comma-separated list of {}'s Linear layers: {}",
                cfg.model_type.as_str(),
                known.join(", ")
            ),
        );
    }
    Ok(())
}

impl TrainConfig {
    /// The Linear layers LoRA wraps (empty with LoRA off).
    pub fn lora_target_list(&self) -> Vec<&'static str> {
        if self.lora_rank == 0 {
            return Vec::new();
        }
        let known = lora_modules(self.model_type);
        match self.lora_targets.trim() {
            "all-linear" => return known.to_vec(),
            "" => return lora_peft_defaults(self.model_type).to_vec(),
            _ => {}
        }
        let mut out = Vec::new();
        for t in self.lora_targets.split(',').map(str::trim) {
            // Names the architecture lacks are kept as themselves for the error above.
            match known.iter().find(|k| **k == t) {
                Some(k) => out.push(*k),
                None => out.push(""),
            }
        }
        out
    }
}
