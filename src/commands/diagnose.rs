//! `vramplan diagnose LOG`: parse the log; with a config, match the failed request to the
//! simulator's tensors and compute fixes with suggest on the card the log describes.

use super::print_json;
use crate::budget::{catalogue, find, Budget, BudgetSource, GpuProfile};
use crate::cli::DiagnoseArgs;
use crate::config;
use crate::diagnose::types::{Format, Phase as DiagPhase};
use crate::diagnose::{analyze, parse, render::render_text, Candidate, Fix, MatchContext};
use crate::error::{Error, Result};
use crate::plan::suggest;
use crate::report::check::run_sim;
use crate::sim::{Phase, Timeline};

/// Tensors smaller than this cannot be the culprit of an OOM worth diagnosing.
const MIN_CANDIDATE_BYTES: u64 = 1 << 20;

pub fn run(args: &DiagnoseArgs) -> Result<u8> {
    let text = read_log(&args.log)?;
    let has_model = args.config.is_some()
        || args.model.is_some()
        || args.hf_config.is_some()
        || !args.overrides.is_empty();
    let ctx = if has_model {
        Some(context(args, &text)?)
    } else {
        None
    };
    let d = analyze(&text, ctx.as_ref());
    if args.json {
        print_json(&d)?;
    } else {
        print!("{}", render_text(&d));
    }
    Ok(0)
}

fn read_log(path: &std::path::Path) -> Result<String> {
    use crate::input::{read_file, read_limited, MAX_LOG_BYTES};
    let bytes = if path.as_os_str() == "-" {
        read_limited(std::io::stdin(), "standard input", "the log", MAX_LOG_BYTES)?
    } else {
        read_file(
            path,
            "the log (give a file, or - for standard input)",
            MAX_LOG_BYTES,
        )?
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The card as the log states it: --gpu, else the catalogue card whose CUDA total is closest
/// to the log's total capacity (its total replaced by the log's), else a generic one.
fn card(args: &DiagnoseArgs, total: Option<u64>) -> Result<GpuProfile> {
    if let Some(name) = &args.gpu {
        return find(name);
    }
    let Some(total) = total else {
        return Err(Error::new(
            "the log states no total capacity: add --gpu NAME to compute fixes",
        ));
    };
    let nearest = catalogue()
        .iter()
        .min_by_key(|g| g.total_bytes.abs_diff(total))
        .cloned()
        .ok_or_else(|| Error::new("the GPU catalogue is empty"))?;
    let mut g = nearest;
    g.total_bytes = total;
    Ok(g)
}

fn context(args: &DiagnoseArgs, text: &str) -> Result<MatchContext> {
    let model = match (&args.model, &args.hf_config) {
        (Some(name), _) => Some(config::ModelSource::Preset(name)),
        (None, Some(path)) => Some(config::ModelSource::HfConfig(path)),
        (None, None) => None,
    };
    let parsed = parse(text);
    // Engine settings a vLLM log prints come first; the user's overrides win over them.
    let mut overrides = if parsed.format == Some(Format::Vllm) {
        crate::diagnose::vllm_fixes::log_settings(text)
    } else {
        Vec::new()
    };
    overrides.extend(args.overrides.iter().cloned());
    let cfg = config::load_with_model(args.config.as_deref(), model, &overrides)?.config;
    let facts = parsed.facts;
    let mut gpu = card(args, facts.total_capacity_bytes)?;
    if parsed.format == Some(Format::Vllm) && parsed.phase == DiagPhase::KvCache {
        return crate::diagnose::vllm_fixes::vllm_context(&cfg, &gpu);
    }
    // The log states this process's memory outside PyTorch (context, kernels): use it rather
    // than a per-card default.
    if let Some(own) = facts.non_framework_in_process_bytes() {
        gpu.context_bytes = own;
    }
    let sim = run_sim(&cfg, Some(&gpu))?;
    let phase = parsed.phase;
    let live = sim_phase(phase.as_str()).map(|p| sim.profile.phase(p).peak_allocated);
    // What the run can have: the card less what other processes hold now, less the margin.
    let outside = facts.outside_process_bytes().unwrap_or(0);
    let margin = crate::budget::DEFAULT_MARGIN_BYTES;
    let usable = gpu
        .total_bytes
        .saturating_sub(outside)
        .saturating_sub(margin);
    let fixes = if usable > 0 {
        let budget = Budget {
            name: gpu.name.clone(),
            total_bytes: gpu.total_bytes,
            usable_bytes: usable,
            margin_bytes: margin,
            source: BudgetSource::Profile,
            profile: gpu.clone(),
            live: None,
            others: None,
            warnings: Vec::new(),
        };
        let path = args.config.as_ref().map(|p| p.display().to_string());
        let s = suggest(&cfg, &budget, &[], path.as_deref())?;
        if s.best.is_none() {
            // Nothing fits at any batch: say so with the numbers (the diagnoser turns a fix
            // list where nothing fits into the model_too_large cause).
            return Ok(MatchContext {
                candidates: candidates(&sim.timeline),
                simulated_live_bytes_at_phase: live,
                fixes: vec![Fix {
                    change: s.notes.join(" "),
                    command: None,
                    predicted_peak_bytes: Some(s.baseline.peak_device_bytes),
                    fits: Some(false),
                }],
                explanation: None,
            });
        }
        s.best
            .into_iter()
            .chain(s.alternatives)
            .map(|c| Fix {
                change: format!(
                    "{}: batch_size {}, gradient_accumulation_steps {}{}",
                    c.label,
                    c.config.batch_size,
                    c.config.gradient_accumulation_steps,
                    if outside > 0 {
                        format!(
                            " (with {} still held by other processes)",
                            crate::units::human(outside)
                        )
                    } else {
                        String::new()
                    }
                ),
                command: Some(c.command),
                predicted_peak_bytes: Some(c.peak_device_bytes),
                fits: Some(c.fits),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(MatchContext {
        candidates: candidates(&sim.timeline),
        simulated_live_bytes_at_phase: live,
        fixes,
        explanation: None,
    })
}

fn sim_phase(name: &str) -> Option<Phase> {
    Phase::ALL.into_iter().find(|p| p.key() == name)
}

/// The simulator's tensors in allocation order, each named once per phase.
fn candidates(tl: &Timeline) -> Vec<Candidate> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for ev in &tl.events {
        let r = &tl.tensors[ev.tensor as usize];
        if r.bytes < MIN_CANDIDATE_BYTES || ev.kind != crate::sim::timeline::EventKind::Alloc {
            continue;
        }
        let name = r.name.to_string();
        if seen.insert((name.clone(), r.phase)) {
            out.push(Candidate {
                name,
                shape: r.shape.dims().to_vec(),
                dtype: r.dtype.short().to_string(),
                bytes: r.bytes,
                phase: r.phase.key().to_string(),
            });
        }
    }
    out
}
