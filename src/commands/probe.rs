//! `vramplan probe`: run the real model in candle and measure its peak.

use super::print_json;
use crate::cli::ProbeArgs;
use crate::config::{self, TrainConfig};
use crate::error::Result;
use crate::probe::render_text;
use crate::probe::run::{run_with, ProbeOptions, Progress};
use crate::sim::candle_phase_peaks;

pub fn run(args: &ProbeArgs) -> Result<u8> {
    let cfg = config::load(args.config.as_deref(), &args.overrides)?.config;
    if cfg.model_type != crate::config::ModelType::Gpt2 {
        crate::bail!(
            "probe runs nanoGPT's GPT only (model_type 'gpt2'), not '{}': use check for this model",
            cfg.model_type.as_str()
        );
    }
    let progress = if args.json {
        Progress::silent()
    } else {
        Progress::new()
    };
    // The simulator's candle runtime predicts each phase: the report compares it with the
    // measurement, and the safety plan decides with it what may run.
    let predict = |c: &TrainConfig| candle_phase_peaks(c).ok();
    let options = ProbeOptions {
        device: args.device.clone(),
        steps: args.steps,
        layers: args.layers,
        margin: args.margin.clone(),
    };
    let report = run_with(&options, &cfg, Some(&predict), &progress);
    progress.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", render_text(&report));
    }
    Ok(0)
}
