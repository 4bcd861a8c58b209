//! From the parsed command line to each front-end; each returns the exit code
//! (0 fits / diagnosed, 1 does not fit, 2 is an Err and printed by main).

mod check;
mod diagnose;
mod entry;
mod gpus;
mod misc;
mod probe;
mod suggest;

use crate::budget::{nvml_from_env, resolve, Budget, BudgetRequest};
use crate::cli::{Cli, Command, RunArgs};
use crate::config::{self, Loaded};
use crate::error::Result;
use std::io::IsTerminal;

pub use diagnose::diagnosis;
pub use entry::{one_line, run_cli, run_cli_json, JsonError};

pub fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Check(a) => check::run(a),
        Command::Suggest(a) => suggest::run(a),
        Command::Diagnose(a) => diagnose::run(a),
        Command::Probe(a) => probe::run(a),
        Command::Gpus(a) => gpus::run(a),
        Command::Explain(a) => misc::explain(a),
        Command::Completions(a) => misc::completions(a),
    }
}

/// The model (--model / --hf-config, if given), then the config file (or nanoGPT's defaults),
/// then the command line's overrides.
pub(crate) fn load_config(args: &RunArgs) -> Result<Loaded> {
    let model = model_source(&args.model, &args.hf_config);
    // --mode is sugar for the override --mode=..., applied last.
    let mut overrides = args.overrides.clone();
    if let Some(mode) = &args.mode {
        overrides.push(format!("--mode={mode}"));
    }
    if let Some(v) = &args.vllm_version {
        overrides.push(format!("--vllm_version={v}"));
    }
    if let Some(n) = args.tensor_parallel_size {
        overrides.push(format!("--tensor_parallel_size={n}"));
    }
    if let Some(n) = args.pipeline_parallel_size {
        overrides.push(format!("--pipeline_parallel_size={n}"));
    }
    let loaded = config::load_sources(&config::Sources {
        config: args.config.as_deref(),
        model,
        deepspeed: args.deepspeed.as_deref(),
        accelerate: args.accelerate_config.as_deref(),
        overrides: &overrides,
    })?;
    if args.verbose {
        for i in &loaded.ignored {
            eprintln!("ignored (no memory effect): {i}");
        }
    }
    Ok(loaded)
}

/// How the user starts train.py: the config file and what it sets before the command line's
/// overrides, so printed commands keep those overrides. A file that is valid only with the
/// overrides falls back to `run` (the commands then spell out only the suggested changes).
pub(crate) fn script(
    config_path: Option<&std::path::Path>,
    model: Option<config::ModelSource>,
    run: &config::TrainConfig,
) -> crate::plan::script::Script {
    crate::plan::script::Script {
        config_path: config_path.map(|p| p.display().to_string()),
        file_config: config::load_with_model(config_path, model, &[])
            .map_or_else(|_| run.clone(), |l| l.config),
    }
}

/// The model a run names: --model, else --hf-config.
pub(crate) fn model_source<'a>(
    model: &'a Option<String>,
    hf_config: &'a Option<std::path::PathBuf>,
) -> Option<config::ModelSource<'a>> {
    match (model, hf_config) {
        (Some(name), _) => Some(config::ModelSource::Preset(name)),
        (None, Some(path)) => Some(config::ModelSource::HfConfig(path)),
        (None, None) => None,
    }
}

/// The card to plan for: --gpu, --gpu-file, --live, or the live card when there is one.
pub(crate) fn load_budget(args: &RunArgs) -> Result<Option<Budget>> {
    let request = BudgetRequest {
        gpu: args.gpu.clone(),
        gpu_file: args.gpu_file.clone(),
        live: args.live,
        gpu_index: args.gpu_index,
        margin: args.margin.clone(),
        safety: args.safety.clone(),
    };
    let nvml = nvml_from_env()?;
    resolve(&request, &*nvml)
}

/// The version of every command's JSON, documented with its keys in docs/json-schema.md:
/// raised when a key is removed, renamed or changes meaning (a new key does not raise it).
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// What every `--json` output starts with, then the command's own keys.
#[derive(serde::Serialize)]
struct Envelope<'a, T> {
    schema_version: u32,
    /// The subcommand that printed it: a script reading several outputs tells them apart.
    command: &'a str,
    /// The run the figures describe ("train" or "inference"); null where there is none
    /// (the GPU catalogue, a log diagnosed without a config).
    mode: Option<&'static str>,
    #[serde(flatten)]
    body: &'a T,
}

/// Colour only on a terminal, and never with NO_COLOR set.
pub(crate) fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Write a picture the user asked for; the error names the path.
pub(crate) fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| {
        crate::error::Error::new(format!(
            "{}: cannot write the SVG ({}): check the directory exists and is writable",
            path.display(),
            e.kind()
        ))
    })
}

pub(crate) fn print_json<T: serde::Serialize>(
    command: &str,
    mode: Option<config::Mode>,
    value: &T,
) -> Result<()> {
    let envelope = Envelope {
        schema_version: JSON_SCHEMA_VERSION,
        command,
        mode: mode.map(config::Mode::as_str),
        body: value,
    };
    let text = serde_json::to_string_pretty(&envelope)
        .map_err(|e| crate::error::Error::new(format!("could not write JSON: {e}")))?;
    entry::emit_json(&text);
    Ok(())
}
