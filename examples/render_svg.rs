//! Writes the two pictures through the library, until `check --svg` and `suggest --svg` exist:
//! OUT_DIR/timeline.svg for the config as given, OUT_DIR/sweep.svg for suggest's knobs on it.
//!
//!     cargo run --example render_svg -- OUT_DIR CONFIG --gpu NAME [--key=value ...]

use std::path::{Path, PathBuf};
use vramplan::budget::{find, Budget, DEFAULT_MARGIN_BYTES};
use vramplan::config::TrainConfig;
use vramplan::error::Result;
use vramplan::plan::knobs::knobs;
use vramplan::plan::search::with_batch;
use vramplan::plan::suggest;
use vramplan::report::check::run_sim;
use vramplan::report::svg::{batch_grid, sweep_series, sweep_svg, timeline_svg, SweepSeries};

fn main() {
    if let Err(e) = run() {
        eprintln!("render_svg: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut gpu = "rtx3060".to_string();
    if let Some(i) = args.iter().position(|a| a == "--gpu") {
        gpu = args.get(i + 1).cloned().unwrap_or(gpu);
        args.drain(i..(i + 2).min(args.len()));
    }
    let (overrides, positional): (Vec<String>, Vec<String>) =
        args.into_iter().partition(|a| a.starts_with("--"));
    let out = PathBuf::from(positional.first().map_or("docs/img", |s| s.as_str()));
    let config = positional.get(1).map(PathBuf::from);
    let cfg = vramplan::config::load(config.as_deref(), &overrides)?.config;
    let budget = Budget::from_profile(find(&gpu)?, DEFAULT_MARGIN_BYTES)?;
    let context = budget.profile.context_bytes;

    let sim = run_sim(&cfg, Some(&budget.profile))?;
    let svg = timeline_svg(
        &sim.timeline,
        &sim.profile,
        Some(budget.usable_bytes),
        context,
    );
    write(&out.join("timeline.svg"), &svg)?;

    let report = suggest(&cfg, &budget, &[], None)?;
    let tokens = cfg.tokens_per_step().unwrap_or(u64::MAX);
    let knobs: Vec<_> = knobs()
        .into_iter()
        .filter(|k| (k.applies)(&cfg, budget.profile.bf16))
        .collect();
    // The largest batch that fits with each knob, as suggest found it.
    let fits: Vec<u64> = report
        .best
        .iter()
        .chain(&report.alternatives)
        .filter(|c| knobs.iter().any(|k| k.label == c.label))
        .map(|c| c.config.batch_size)
        .collect();
    let grid = batch_grid(&fits, 24);
    let mut series: Vec<SweepSeries> = Vec::new();
    let mut chosen = None;
    for knob in &knobs {
        let mut v: TrainConfig = cfg.clone();
        (knob.apply)(&mut v);
        let peak = |b: u64| -> Result<u64> {
            let sim = run_sim(&with_batch(&v, b, tokens), Some(&budget.profile))?;
            Ok(sim.profile.final_reserved.saturating_add(context))
        };
        series.push(sweep_series(knob.label, &grid, &peak)?);
        if let Some(best) = &report.best {
            if best.label == knob.label || best.label == knob.exact_label {
                chosen = Some((knob.label.to_string(), best.config.batch_size));
            }
        }
    }
    write(
        &out.join("sweep.svg"),
        &sweep_svg(&series, budget.usable_bytes, chosen),
    )?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| {
        vramplan::error::Error::new(format!("{}: cannot write: {e}", path.display()))
    })?;
    println!("wrote {} ({} bytes)", path.display(), text.len());
    Ok(())
}
