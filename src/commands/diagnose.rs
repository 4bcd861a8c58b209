//! `vramplan diagnose LOG`: parse the log; with a config, match the failed request to the
//! simulator's tensors and compute fixes with suggest on the card the log describes.

use super::{model_source, print_json, script};
use crate::budget::{catalogue, find, Budget, BudgetSource, GpuProfile};
use crate::cli::DiagnoseArgs;
use crate::config;
use crate::diagnose::types::{Format, Phase as DiagPhase};
use crate::diagnose::{analyze, parse, render::render_text, Candidate, Fix, MatchContext};
use crate::error::{Error, Result};
use crate::plan::suggest;
use crate::report::check::run_sim;
use crate::sim::{Phase, Timeline};
use std::io::Read;

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
    let mut bytes = Vec::new();
    let shown = path.display();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Error::new(format!("cannot read standard input: {e}")))?;
    } else {
        bytes = std::fs::read(path).map_err(|e| {
            Error::new(format!(
                "{shown}: cannot read the log ({}): give a file or - for standard input",
                e.kind()
            ))
        })?;
    }
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
    let model = model_source(&args.model, &args.hf_config);
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
    let mut notes = Vec::new();
    let fixes = if usable > 0 {
        let budget = Budget {
            name: gpu.name.clone(),
            total_bytes: gpu.total_bytes,
            usable_bytes: usable,
            margin_bytes: margin,
            safety_pct: 0.0,
            safety_bytes: 0,
            source: BudgetSource::Profile,
            profile: gpu.clone(),
            live: None,
            others: None,
            warnings: Vec::new(),
        };
        let script = script(
            args.config.as_deref(),
            model_source(&args.model, &args.hf_config),
            &cfg,
        );
        let s = suggest(&cfg, &budget, &[], &script)?;
        if s.best.is_none() {
            // Nothing fits at any batch: say so with the numbers (the diagnoser turns a fix
            // list where nothing fits into the model_too_large cause).
            return Ok(MatchContext {
                candidates: candidates(&sim.timeline),
                simulated_live_bytes_at_phase: live,
                fixes: vec![Fix {
                    change: s.notes.join(" "),
                    command: None,
                    code_changes: Vec::new(),
                    predicted_peak_bytes: Some(s.baseline.peak_device_bytes),
                    fits: Some(false),
                }],
                explanation: None,
                notes: Vec::new(),
            });
        }
        if s.baseline.fits {
            notes.push(disagreement(&facts, s.baseline.peak_device_bytes, usable));
        }
        s.best
            .into_iter()
            .chain(s.alternatives)
            // The configuration that just crashed is no fix, whatever the simulation says.
            .filter(|c| c.config != cfg)
            .map(|c| Fix {
                change: format!(
                    "{}: batch_size {}, gradient_accumulation_steps {}{}",
                    // In a diagnosis "as configured" would read as the crashed run: it is the
                    // same settings at another batch.
                    c.label
                        .replacen("as configured", "same settings, smaller batch", 1),
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
                code_changes: c.code_changes,
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
        notes,
    })
}

/// The config as given fits in the simulation, yet the log is an out-of-memory failure: say so
/// with both figures and what could account for the difference.
fn disagreement(facts: &crate::diagnose::types::Facts, predicted: u64, usable: u64) -> String {
    let human = crate::units::human;
    let logged = match (facts.process_in_use_bytes, facts.tried_to_allocate_bytes) {
        (Some(held), Some(asked)) => format!(
            "the log's process held {} and asked for {} more ({} at least)",
            human(held),
            human(asked),
            human(held.saturating_add(asked))
        ),
        (None, Some(asked)) => format!("the log's process failed to allocate {}", human(asked)),
        _ => "the log reports an out-of-memory failure".to_string(),
    };
    format!(
        "the simulation and the log disagree: this config is predicted to peak at {} on the \
         device, within the {} usable here, yet {logged}. What could explain the gap: the run \
         was not this config (another file, an override left out, init_from='resume' with its \
         checkpoint on the GPU), torch.compile or a PyTorch/CUDA version whose kernels and \
         workspaces differ from the simulated ones, memory the script holds beyond nanoGPT's \
         (tensors kept with their graph, extra models), or fragmentation beyond the modelled \
         allocator. The fixes are predicted from the config as given.",
        human(predicted),
        human(usable)
    )
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
