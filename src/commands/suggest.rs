//! `vramplan suggest`: the largest config that fits, ranked by speed.

use super::{load_budget, load_config, model_source, print_json, script, write_file};
use crate::budget::Budget;
use crate::cli::SuggestArgs;
use crate::config::Loaded;
use crate::error::{Error, Result};
use crate::plan::{render::render, suggest, suggest_multi};
use crate::report::svg::sweep_chart;

/// `suggest --mode inference`: transformers' largest batch and contexts on one card, and vLLM's
/// flags (over several GPUs vLLM's start-up is the answer).
fn inference(args: &SuggestArgs, loaded: &Loaded, budget: &Budget) -> Result<u8> {
    if let Some(svg) = &args.svg {
        crate::bail!(
            "--svg {}: the sweep chart draws training candidates (batch x accumulation), and \
             --mode inference has none; draw one run's timeline with `vramplan check --mode \
             inference ... --svg FILE`, or drop --svg",
            svg.display()
        );
    }
    // vllm serve loads a Hub id or a directory: the preset's id, or the config's folder.
    let served = match (&args.run.model, &args.run.hf_config) {
        (Some(m), _) => Some(crate::config::models::served_name(m)?),
        (None, Some(path)) => Some(match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.display().to_string(),
            _ => ".".to_string(),
        }),
        (None, None) => None,
    };
    let report = crate::plan::infer::suggest_inference(
        &loaded.config,
        budget,
        args.run.model.as_deref(),
        served.as_deref(),
    )?;
    if args.run.json {
        print_json("suggest", Some(loaded.config.mode), &report)?;
    } else {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        print!("{}", crate::plan::infer::render(&report));
    }
    // Over several GPUs the answer is vLLM's: something fits when it starts.
    let fits = match report.sharded {
        true => report.vllm.error.is_none(),
        false => report.largest_batch.is_some(),
    };
    Ok(if fits { 0 } else { 1 })
}

pub fn run(args: &SuggestArgs) -> Result<u8> {
    let loaded = load_config(&args.run)?;
    let budget = load_budget(&args.run)?.ok_or_else(|| {
        Error::new("suggest needs a card: add --gpu NAME (see `vramplan gpus`) or --live")
    })?;
    for k in &args.keep {
        if crate::config::registry::spec(k).is_none() {
            crate::bail!("--keep {k}: not a config key (e.g. --keep block_size)");
        }
    }
    if loaded.config.mode == crate::config::Mode::Inference {
        return inference(args, &loaded, &budget);
    }
    let script = script(
        args.run.config.as_deref(),
        model_source(&args.run.model, &args.run.hf_config),
        &loaded.config,
    );
    let mut report = suggest(&loaded.config, &budget, &args.keep, &script)?;
    if args.gpus == Some(0) {
        crate::bail!("--gpus 0: expected a number of GPUs of at least 1");
    }
    // Exactly the GPUs asked for, or the smallest count that fits when nothing fits one card.
    use crate::plan::multi::{Plan, DEFAULT_MAX_GPUS};
    let plan = match args.gpus {
        Some(n) if n > 1 => Some(Plan::Exactly(n)),
        Some(_) => None,
        None => report
            .best
            .is_none()
            .then_some(Plan::Smallest(DEFAULT_MAX_GPUS)),
    };
    if let Some(plan) = plan {
        let one_card_fits = report.best.is_some();
        report.multi_gpu = Some(suggest_multi(
            &loaded.config,
            &budget,
            plan,
            one_card_fits,
            &script,
        )?);
    }
    if let Some(path) = &args.svg {
        write_file(path, &sweep_chart(&loaded.config, &budget, &report)?)?;
    }
    if args.run.json {
        print_json("suggest", Some(loaded.config.mode), &report)?;
    } else {
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        print!("{}", render(&report));
    }
    let multi_fits = report
        .multi_gpu
        .as_ref()
        .is_some_and(|m| !m.fitting.is_empty());
    Ok(if report.best.is_some() || multi_fits {
        0
    } else {
        1
    })
}
