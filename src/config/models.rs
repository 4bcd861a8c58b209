//! Where a model's shape can come from besides the config file: a built-in preset
//! (profiles/models/*.toml, embedded at build time) or a Hugging Face config.json. The model is
//! the bottom layer; the run's config file and the command line's overrides apply on top, in
//! one layer, so that `--model llama-3.1-8b run.toml --batch_size=4` means what it says.

use super::value::Assignment;
use super::{apply, file_assignments, hf_json, overrides, read_text, Loaded, TrainConfig};
use crate::error::{Error, Result};
use std::path::Path;

macro_rules! embed {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../profiles/models/", $name, ".toml")))),*]
    };
}

/// Every preset (name, TOML text), in the order `--model` lists them.
pub const PRESETS: &[(&str, &str)] = embed!(
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "llama-3.1-8b",
    "mistral-7b",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-7b",
    "gemma-2b",
    "pythia-1b",
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
/// (`meta-llama/Llama-3.1-8B` finds `llama-3.1-8b`); so is a trailing "-v0.1" or "-instruct".
pub fn preset(name: &str) -> Result<(&'static str, &'static str)> {
    let lower = name.trim().to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or(&lower);
    let candidates = [
        base.to_string(),
        base.trim_end_matches("-instruct").to_string(),
        base.trim_end_matches("-v0.1").to_string(),
    ];
    PRESETS
        .iter()
        .find(|(n, _)| candidates.iter().any(|c| c == n))
        .copied()
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
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
    for o in overrides_ {
        assignments.push(overrides::parse_override(o)?);
    }
    let mut config = TrainConfig::default();
    warnings.extend(apply::apply(&mut config, &assignments)?);
    Ok(Loaded {
        config,
        warnings,
        source,
        ignored: Vec::new(),
    })
}
