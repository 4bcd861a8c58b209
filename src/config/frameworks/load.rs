//! The layers of a framework run, in the order the framework applies them: the model, the
//! framework's defaults, the accelerate config, the training file, the DeepSpeed config, and
//! the command line's overrides last, as one layer through `apply`.

use super::doc::{DeepSpeedRef, Mapped};
use super::{accumulation_to_global, defaults, map_accelerate, map_deepspeed, map_file};
use crate::config::models::{model_layer, preset};
use crate::config::value::{Assignment, Origin, Rhs, Value};
use crate::config::{apply, overrides, read_text, Framework, Loaded, ModelSource, TrainConfig};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Everything a run's configuration can come from on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    pub config: Option<&'a Path>,
    pub model: Option<ModelSource<'a>>,
    pub deepspeed: Option<&'a Path>,
    pub accelerate: Option<&'a Path>,
    pub overrides: &'a [String],
}

/// Load a run from its sources. A framework file (or a Hugging Face model with no file, or a
/// --deepspeed / --accelerate-config beside a model) follows its framework; a nanoGPT .py or
/// a TOML file follows nanoGPT's train.py.
pub fn load_sources(s: &Sources) -> Result<Loaded> {
    let file = match s.config {
        Some(p) => Some(read_text(
            p,
            "a UTF-8 text config (.py, .toml, .json or .yaml)",
        )?),
        None => None,
    };
    let kind = file.as_ref().and_then(|(n, t)| super::detect(n, t));
    // `--framework=nanogpt` keeps train.py's defaults for a Hugging Face model.
    let nanogpt_asked = s.overrides.iter().any(|o| {
        overrides::parse_override(o).is_ok_and(|a| {
            a.key == "framework" && a.rhs == Rhs::Known(Value::Str("nanogpt".into()))
        })
    });
    let hf_model_alone = file.is_none() && !nanogpt_asked && s.model.is_some_and(|m| !is_gpt2(m));
    let frameworkish =
        kind.is_some() || hf_model_alone || s.deepspeed.is_some() || s.accelerate.is_some();
    if !frameworkish {
        return crate::config::load_with_model(s.config, s.model, s.overrides);
    }
    let mut mapped = Mapped::default();
    let mut framework = Framework::HfTrainer;
    let mut source = String::new();
    if let Some((name, text)) = &file {
        if kind.is_none() {
            return Err(Error::new(format!(
                "{name}: --deepspeed and --accelerate-config go with a Trainer, axolotl, torchtune or LitGPT config (or --model NAME), not with a nanoGPT config"
            )));
        }
        let (f, m) = map_file(name, text)?;
        framework = f;
        mapped = m;
        source = name.clone();
    }
    // The model: the command line's, else the file's.
    let (model_assignments, model_name, mut warnings) = model_of(s, &mapped, &source)?;
    let mut layers: Vec<Assignment> = model_assignments;
    layers.extend(defaults(framework));
    let mut ignored = Vec::new();
    side_files(s, &mut mapped, &mut layers, &mut ignored, &mut warnings)?;
    for o in s.overrides {
        layers.push(overrides::parse_override(o)?);
    }
    accumulation_to_global(super::framework_in(&layers), &mut layers);
    let mut config = TrainConfig::default();
    warnings.extend(apply::apply(&mut config, &layers)?);
    // Serving a model is not a Trainer run: inference keeps its own defaults.
    if hf_model_alone && config.mode == crate::config::Mode::Inference {
        return crate::config::load_with_model(s.config, s.model, s.overrides);
    }
    let source = if source.is_empty() {
        format!("{model_name}, {} defaults", config.framework.display_name())
    } else {
        format!("{source} on {model_name}")
    };
    Ok(Loaded {
        config,
        warnings,
        source,
        ignored,
    })
}

/// The model's assignments, its display name and any warning: the command line's model,
/// else the one the file names.
fn model_of(
    s: &Sources,
    mapped: &Mapped,
    source: &str,
) -> Result<(Vec<Assignment>, String, Vec<String>)> {
    match (s.model, &mapped.model) {
        (Some(m), named) => {
            let (a, d, mut w) = model_layer(m)?;
            if let Some((n, o)) = named {
                w.push(format!("{o}: the model '{n}' is replaced by the command line's {d}"));
            }
            Ok((a, d, w))
        }
        (None, Some((name, origin))) => resolve_model(s.config, name, origin),
        (None, None) => Err(Error::new(format!(
            "{source}: names no model (base_model, model_name_or_path, model._component_ or checkpoint_dir): expected one, or --model NAME / --hf-config path/to/config.json"
        ))),
    }
}

/// The accelerate and DeepSpeed files (given on the command line, or named by the config),
/// in that order after the config's own assignments.
fn side_files(
    s: &Sources,
    mapped: &mut Mapped,
    layers: &mut Vec<Assignment>,
    ignored: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if let Some(p) = s.accelerate {
        let (name, text) = read_text(p, "an accelerate config (YAML)")?;
        let a = map_accelerate(&name, &text)?;
        if mapped.deepspeed.is_none() {
            mapped.deepspeed = a.deepspeed.clone();
        }
        layers.extend(a.assignments);
        ignored.extend(a.ignored);
        warnings.extend(a.notes);
    }
    layers.append(&mut mapped.assignments);
    ignored.append(&mut mapped.ignored);
    warnings.append(&mut mapped.notes);
    let ds = match (s.deepspeed, &mapped.deepspeed) {
        (Some(p), _) => Some(read_text(p, "a DeepSpeed config (JSON)")?),
        (None, Some((DeepSpeedRef::Path(p), origin))) => Some(read_beside(s.config, p, origin)?),
        (None, Some((DeepSpeedRef::Inline(text), origin))) => {
            Some((origin.to_string(), text.clone()))
        }
        (None, None) => None,
    };
    if let Some((name, text)) = ds {
        let d = map_deepspeed(&name, &text)?;
        layers.extend(d.assignments);
        ignored.extend(d.ignored);
        warnings.extend(d.notes);
    }
    Ok(())
}

fn is_gpt2(m: ModelSource) -> bool {
    match m {
        ModelSource::Preset(name) => preset(name).is_ok_and(|(k, _)| k.starts_with("gpt2")),
        // A config.json's model_type decides; read it the way the model layer will.
        // Read as the model layer will, bounded: a FIFO or /dev/urandom is refused there, with
        // its one-line error, not read here forever.
        ModelSource::HfConfig(p) => {
            crate::input::read_file(p, "the config.json", crate::input::MAX_CONFIG_BYTES).is_ok_and(
                |t| {
                    serde_json::from_slice::<serde_json::Value>(&t)
                        .ok()
                        .and_then(|v| {
                            v.get("model_type")
                                .and_then(|m| m.as_str())
                                .map(|m| m == "gpt2")
                        })
                        .unwrap_or(false)
                },
            )
        }
    }
}

/// A path a file names, relative to that file's folder (as the frameworks resolve it when run
/// from there), else to the current directory.
fn beside(config: Option<&Path>, named: &str) -> Option<PathBuf> {
    let dir = config.and_then(Path::parent).unwrap_or(Path::new(""));
    [dir.join(named), PathBuf::from(named)]
        .into_iter()
        .find(|p| p.exists())
}

fn read_beside(config: Option<&Path>, named: &str, origin: &Origin) -> Result<(String, String)> {
    let p = beside(config, named).ok_or_else(|| {
        Error::new(format!(
            "{origin}: the DeepSpeed config '{named}' is not there (looked beside the file and in the current directory): expected a ds_config.json path, or pass --deepspeed PATH"
        ))
    })?;
    read_text(&p, "a DeepSpeed config (JSON)")
}

/// The model a file names: a local directory (or file) holding a config.json, else a preset.
/// No download: a Hub id that is not a preset is an error saying how to pass its config.json.
fn resolve_model(
    config: Option<&Path>,
    name: &str,
    origin: &Origin,
) -> Result<(Vec<Assignment>, String, Vec<String>)> {
    if let Some(p) = beside(config, name) {
        let json = if p.is_dir() { p.join("config.json") } else { p };
        if json.is_file() {
            return model_layer(ModelSource::HfConfig(&json));
        }
    }
    if preset(name).is_ok() {
        return model_layer(ModelSource::Preset(name));
    }
    Err(Error::new(format!(
        "{origin}: the model '{}' is not a built-in preset and vramplan does not download: save its config.json (the Hub page's Files tab) and pass --hf-config path/to/config.json, or point the key at a local folder holding config.json",
        name.chars().take(120).collect::<String>()
    )))
}
