//! `vramplan probe`: run the real model in candle and measure its peak.

use super::print_json;
use crate::cli::ProbeArgs;
use crate::config::{self, TrainConfig};
use crate::error::Result;
use crate::probe::estimate::{cpu_flops_per_second, human_duration, layers_within, seconds};
use crate::probe::run::{run_with, ProbeOptions, Progress};
use crate::probe::{render_text, PytorchPrediction};
use crate::sim::candle_phase_peaks;

pub fn run(args: &ProbeArgs) -> Result<u8> {
    let cfg = config::load(args.config.as_deref(), &args.overrides)?.config;
    if cfg.model_type != crate::config::ModelType::Gpt2 {
        crate::bail!(
            "probe runs nanoGPT's GPT only (model_type 'gpt2'), not '{}': use check for this model",
            cfg.model_type.as_str()
        );
    }
    check_bounds(args, &cfg)?;
    let args = &within_time_limit(args, &cfg)?;
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
    let mut report = report?;
    report.pytorch = Some(pytorch_prediction(&cfg)?);
    if args.json {
        // The probe runs forward + backward + AdamW: a training run.
        print_json("probe", Some(crate::config::Mode::Train), &report)?;
    } else {
        print!("{}", render_text(&report));
    }
    Ok(0)
}

/// On CPU, say how long the probe will take before it starts (on stderr); past
/// `--max-minutes`, measure fewer layers and extrapolate, or refuse. CUDA runs are not timed.
fn within_time_limit(args: &ProbeArgs, cfg: &TrainConfig) -> Result<ProbeArgs> {
    let mut args = args.clone();
    if !args.device.trim().eq_ignore_ascii_case("cpu") {
        return Ok(args);
    }
    if !(args.max_minutes.is_finite() && args.max_minutes > 0.0) {
        crate::bail!(
            "--max-minutes {}: expected a positive number of minutes",
            args.max_minutes
        );
    }
    let rate = cpu_flops_per_second(cfg.dtype)?;
    let limit = args.max_minutes * 60.0;
    let planned = match args.layers {
        Some(k) if k < cfg.n_layer => vec![(k / 2).max(1), k],
        _ => vec![cfg.n_layer],
    };
    let estimate = seconds(cfg, &planned, args.steps, rate);
    let how = format!(
        "{} step(s) at the {:.1} GFLOP/s this CPU's matmuls reach in candle (a lower bound: matmuls only)",
        args.steps.max(1),
        rate / 1e9
    );
    if estimate <= limit {
        eprintln!("probe: about {} on cpu ({how})", human_duration(estimate));
        return Ok(args);
    }
    let fewer = if args.layers.is_none() {
        layers_within(cfg, args.steps, rate, limit)
    } else {
        None
    };
    match fewer {
        Some(k) if k < cfg.n_layer => {
            let shrunk = seconds(cfg, &[(k / 2).max(1), k], args.steps, rate);
            eprintln!(
                "probe: all {} layers would take about {} on cpu ({how}), over --max-minutes {}: \
                 measuring {} and {k} layers instead and extrapolating (memory is affine in \
                 n_layer), about {}",
                cfg.n_layer,
                human_duration(estimate),
                args.max_minutes,
                (k / 2).max(1),
                human_duration(shrunk)
            );
            args.layers = Some(k);
            Ok(args)
        }
        _ => crate::bail!(
            "probe: about {} on cpu ({how}), over --max-minutes {}: lower --batch_size or \
             --block_size, measure fewer layers with --layers, or raise --max-minutes",
            human_duration(estimate),
            args.max_minutes
        ),
    }
}

/// `check`'s PyTorch figures for the same config (no card: allocated bytes need none), and
/// the one line on why candle's measurement differs.
fn pytorch_prediction(cfg: &TrainConfig) -> Result<PytorchPrediction> {
    let check = crate::report::check::build(cfg, None)?;
    Ok(PytorchPrediction {
        runtime: check.runtime.name,
        dtype: check.runtime.dtype,
        attention: check.runtime.attention,
        peak_allocated_bytes: check.peak.allocated_bytes,
        why_they_differ: format!(
            "candle has no autocast (the whole model runs in the config's dtype), no flash \
             attention (each layer's B x heads x T x T scores and softmax are stored), and keeps \
             the whole forward graph alive until the optimizer step; PyTorch frees each saved \
             tensor as its backward runs, and its figure includes {} of cuBLAS workspaces \
             (docs/candle-runtime.md)",
            crate::units::human(check.categories.workspace)
        ),
    })
}

/// Steps past the second repeat its peak: more only cost time.
const MAX_STEPS: u32 = 100;

/// The most arithmetic a probe may do, in FLOPs over all its steps. On CPU: 10^13, about an
/// hour at the 2.5 GFLOP/s candle reached on 2 cores for nanoGPT's shakespeare_char config
/// (1.05 x 10^12 FLOPs a step, 14 minutes for 2 steps; issue 18). On CUDA: 10^16, under a
/// minute on any card with bf16 tensor cores.
const MAX_CPU_FLOPS: f64 = 1e13;
const MAX_CUDA_FLOPS: f64 = 1e16;

/// Refuse, before any work, a probe that would run for hours: too many steps, or more
/// arithmetic (6 x parameters x tokens a step, attention included: `plan::speed`) than the
/// device's bound.
fn check_bounds(args: &ProbeArgs, cfg: &TrainConfig) -> Result<()> {
    if !(1..=MAX_STEPS).contains(&args.steps) {
        crate::bail!(
            "--steps {}: expected 1 to {MAX_STEPS} (the peak is measured from the second step; later steps repeat it)",
            args.steps
        );
    }
    if let Some(layers) = args.layers {
        if layers == 0 || layers > cfg.n_layer {
            crate::bail!(
                "--layers {layers}: expected 1 to n_layer = {} (the probe runs fewer layers and extrapolates)",
                cfg.n_layer
            );
        }
    }
    // The plan may run two layer counts to extrapolate; count the larger twice.
    let layers = args.layers.unwrap_or(cfg.n_layer);
    let run = TrainConfig {
        n_layer: layers,
        ..cfg.clone()
    };
    let tokens = (cfg.batch_size * cfg.block_size) as f64;
    let flops = crate::plan::speed::flops_per_token(&run) * tokens * f64::from(args.steps) * 2.0;
    let (max, device) = if args.device == "cpu" {
        (MAX_CPU_FLOPS, "on the CPU")
    } else {
        (MAX_CUDA_FLOPS, "on a GPU")
    };
    if flops > max {
        crate::bail!(
            "probe: {} steps of this config take about {flops:.1e} FLOPs, more than the {max:.0e} a probe runs {device}: use fewer layers (--layers 2 extrapolates), a smaller batch_size or block_size, or fewer --steps",
            args.steps
        );
    }
    Ok(())
}
