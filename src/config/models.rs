//! Where a model's shape can come from besides the config file: a built-in preset
//! (profiles/models/*.toml, embedded at build time) or a Hugging Face config.json. The model is
//! the bottom layer; the run's config file and the command line's overrides apply on top, in
//! one layer, so that `--model llama-3.1-8b run.toml --batch_size=4` means what it says.

use super::value::Assignment;
use super::{file_assignments, hf_json, read_text, Loaded};
use crate::error::{Error, Result};
use std::path::Path;

macro_rules! embed {
    ($($name:literal => $hub:literal),* $(,)?) => {
        &[$(Preset {
            name: $name,
            hub_id: $hub,
            text: include_str!(concat!("../../profiles/models/", $name, ".toml")),
        }),*]
    };
}

/// A built-in model: its name for `--model`, the Hugging Face Hub repository whose
/// config.json it copies (what `vllm serve` and `from_pretrained` take), and its TOML.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub hub_id: &'static str,
    pub text: &'static str,
}

/// Every preset, in the order `--model` lists them.
pub const PRESETS: &[Preset] = embed!(
    "gpt2" => "openai-community/gpt2",
    "gpt2-medium" => "openai-community/gpt2-medium",
    "gpt2-large" => "openai-community/gpt2-large",
    "gpt2-xl" => "openai-community/gpt2-xl",
    "llama-3.2-1b" => "meta-llama/Llama-3.2-1B",
    "llama-3.2-3b" => "meta-llama/Llama-3.2-3B",
    "llama-3.1-8b" => "meta-llama/Llama-3.1-8B",
    "mistral-7b" => "mistralai/Mistral-7B-v0.1",
    "qwen2.5-0.5b" => "Qwen/Qwen2.5-0.5B",
    "qwen2.5-1.5b" => "Qwen/Qwen2.5-1.5B",
    "qwen2.5-7b" => "Qwen/Qwen2.5-7B",
    "qwen3-0.6b" => "Qwen/Qwen3-0.6B",
    "qwen3-8b" => "Qwen/Qwen3-8B",
    "phi-3-mini-4k" => "microsoft/Phi-3-mini-4k-instruct",
    "gemma-2b" => "google/gemma-2b",
    "gemma-2-2b" => "google/gemma-2-2b",
    "gemma-2-9b" => "google/gemma-2-9b",
    "gemma-3-1b" => "google/gemma-3-1b-pt",
    "olmo-2-7b" => "allenai/OLMo-2-1124-7B",
    "mixtral-8x7b" => "mistralai/Mixtral-8x7B-v0.1",
    "qwen3-30b-a3b" => "Qwen/Qwen3-30B-A3B",
    "qwen1.5-moe-a2.7b" => "Qwen/Qwen1.5-MoE-A2.7B",
    "pythia-1b" => "EleutherAI/pythia-1b",
);

/// Where the model comes from.
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    /// A built-in preset by name (`--model llama-3.1-8b`).
    Preset(&'a str),
    /// A Hugging Face config.json (`--hf-config path`).
    HfConfig(&'a Path),
}

/// The preset's TOML text. Case and an organisation prefix are ignored
/// (`meta-llama/Llama-3.1-8B` finds `llama-3.1-8b`); so are a trailing "-v0.1", "-instruct",
/// "-it" or "-pt"; the Hub id a preset stands for finds it too (`allenai/OLMo-2-1124-7B`).
pub fn preset(name: &str) -> Result<(&'static str, &'static str)> {
    find_preset(name).map(|p| (p.name, p.text))
}

/// What `vllm serve` / `from_pretrained` should be given for `--model NAME`: the name itself
/// when it is already a Hub id or a path (it has a `/`), else the Hub id the preset stands for.
pub fn served_name(name: &str) -> Result<String> {
    if name.contains('/') {
        return Ok(name.to_string());
    }
    find_preset(name).map(|p| p.hub_id.to_string())
}

fn find_preset(name: &str) -> Result<&'static Preset> {
    let lower = name.trim().to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or(&lower);
    let candidates = [
        base.to_string(),
        base.trim_end_matches("-instruct").to_string(),
        base.trim_end_matches("-v0.1").to_string(),
        base.trim_end_matches("-it").to_string(),
        base.trim_end_matches("-pt").to_string(),
    ];
    let hub_base = |p: &Preset| {
        let id = p.hub_id.to_ascii_lowercase();
        id.rsplit('/').next().unwrap_or_default().to_string()
    };
    PRESETS
        .iter()
        .find(|p| candidates.iter().any(|c| c == p.name || *c == hub_base(p)))
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            Error::new(format!(
                "--model {}: unknown model: expected one of {} (or --hf-config path/to/config.json)",
                name.chars().take(80).collect::<String>(),
                names.join(", ")
            ))
        })
}

/// The model's assignments, its description for the report, and warnings.
pub(crate) fn model_layer(model: ModelSource) -> Result<(Vec<Assignment>, String, Vec<String>)> {
    match model {
        ModelSource::Preset(name) => {
            let (key, text) = preset(name)?;
            let path = format!("profiles/models/{key}.toml");
            let (a, w) = file_assignments(&path, text)?;
            Ok((a, format!("{key} (preset)"), w))
        }
        ModelSource::HfConfig(path) => {
            let (name, text) = read_text(path, "a Hugging Face config.json (UTF-8 JSON)")?;
            let (a, w) = hf_json::parse(&text, &name)?;
            Ok((a, name, w))
        }
    }
}

/// Load a run: the model (if given), then the config file (if given), then the overrides,
/// applied to nanoGPT's defaults as one layer and validated once.
pub fn load_with_model(
    path: Option<&Path>,
    model: Option<ModelSource>,
    overrides_: &[String],
) -> Result<Loaded> {
    let Some(model) = model else {
        return super::load(path, overrides_);
    };
    let (mut assignments, source, mut warnings) = model_layer(model)?;
    let mut source = source;
    if let Some(path) = path {
        let (name, text) = read_text(path, "a UTF-8 text config (.py or .toml)")?;
        let (a, w) = file_assignments(&name, &text)?;
        assignments.extend(a);
        warnings.extend(w);
        source = format!("{name} on {source}");
    }
    super::load::resolve(assignments, warnings, overrides_, source)
}

/// A Hugging Face config.json already in memory, loaded as `--hf-config` loads the file (the
/// fuzz targets and tests call it without a file); `name` names it in messages.
pub fn load_hf_str(name: &str, text: &str) -> Result<Loaded> {
    let (assignments, warnings) = hf_json::parse(text, name)?;
    super::load::resolve(assignments, warnings, &[], name.to_string())
}
