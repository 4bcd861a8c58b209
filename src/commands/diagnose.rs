//! `vramplan diagnose LOG`: parse the log; with a config, match the failed request to the
//! simulator's tensors and compute fixes with suggest on the card the log describes.

use super::{model_source, print_json, script};
use crate::budget::{catalogue, find, Budget, GpuProfile};
use crate::cli::DiagnoseArgs;
use crate::config::{self, Precision, TrainConfig};
use crate::diagnose::types::{Facts, Format, Phase as DiagPhase};
use crate::diagnose::{analyze, parse, render::render_text, Candidate, Fix, MatchContext};
use crate::error::{Error, Result};
use crate::plan::suggest;
use crate::sim::runtime::effective_precision;
use crate::sim::{MemoryProfile, Phase, Timeline};

/// Tensors smaller than this cannot be the culprit of an OOM worth diagnosing.
const MIN_CANDIDATE_BYTES: u64 = 1 << 20;

pub fn run(args: &DiagnoseArgs) -> Result<u8> {
    let (d, mode) = diagnosis(args)?;
    if args.json {
        print_json("diagnose", mode, &d)?;
    } else {
        print!("{}", render_text(&d));
    }
    Ok(0)
}

/// What `vramplan diagnose` prints, and the mode of the run it describes (None without a
/// config): the log read and parsed, the config simulated, the culprit matched and the causes
/// ranked, with suggest's fixes on the card the log describes.
pub fn diagnosis(
    args: &DiagnoseArgs,
) -> Result<(crate::diagnose::Diagnosis, Option<config::Mode>)> {
    let text = read_log(&args.log)?;
    let has_model = args.config.is_some()
        || args.model.is_some()
        || args.hf_config.is_some()
        || !args.overrides.is_empty();
    // The run the figures describe: the config's mode (null when no config is given).
    let mut mode = None;
    let (ctx, guess) = if has_model {
        let (ctx, guess) = context(args, &text, &mut mode)?;
        (Some(ctx), guess)
    } else {
        (None, None)
    };
    let mut d = analyze(&text, ctx.as_ref());
    if let Some(g) = guess {
        d.gpu_candidates = g.names;
        d.notes.push(g.note);
    }
    Ok((d, mode))
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
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // An empty paste is a mistake upstream (the log went to another stream or file), not a
    // log without an OOM in it: say so instead of "not an out-of-memory".
    if text.trim().is_empty() {
        let what = if path.as_os_str() == "-" {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        return Err(Error::new(format!(
            "{what} is empty: nothing to diagnose; give the whole error output, e.g. \
             `python train.py 2>&1 | tee run.log`, then `vramplan diagnose run.log`"
        )));
    }
    Ok(text)
}

/// How far the total a driver reports for one card can sit from its profile's: ECC, the
/// display and WSL reserve a few percent. Used only to list the cards a capacity could be,
/// never to size anything.
const SAME_CARD_TOLERANCE_PERCENT: u64 = 5;

/// The card the fixes are computed for, and how it was chosen.
struct Card {
    profile: GpuProfile,
    /// When no --gpu named the card: the catalogue cards whose total is within
    /// [`SAME_CARD_TOLERANCE_PERCENT`] of the log's capacity (the nearest if none), nearest first.
    guesses: Vec<GpuProfile>,
}

/// The card as the log states it: --gpu, else the catalogue card whose CUDA total is closest
/// to the log's total capacity (its total replaced by the log's), with every card the
/// capacity could be.
fn card(args: &DiagnoseArgs, total: Option<u64>) -> Result<Card> {
    if let Some(name) = &args.gpu {
        return Ok(Card {
            profile: find(name)?,
            guesses: Vec::new(),
        });
    }
    let Some(total) = total else {
        return Err(Error::new(
            "the log states no total capacity: add --gpu NAME to compute fixes",
        ));
    };
    let mut by_distance: Vec<&GpuProfile> = catalogue().iter().collect();
    by_distance.sort_by_key(|g| g.total_bytes.abs_diff(total));
    let nearest = *by_distance
        .first()
        .ok_or_else(|| Error::new("the GPU catalogue is empty"))?;
    let close = |g: &&&GpuProfile| {
        g.total_bytes.abs_diff(total).saturating_mul(100)
            <= total.saturating_mul(SAME_CARD_TOLERANCE_PERCENT)
    };
    let mut guesses: Vec<GpuProfile> = by_distance
        .iter()
        .filter(close)
        .map(|g| (*g).clone())
        .collect();
    if guesses.is_empty() {
        guesses.push(nearest.clone());
    }
    let mut profile = nearest.clone();
    profile.total_bytes = total;
    Ok(Card { profile, guesses })
}

/// What the diagnosis says about a card guessed from a capacity: which cards it could be, and
/// what that means for the dtype (a written dtype is kept; nanoGPT's default depends on the
/// card, and the nearest one decides it).
fn guess_note(card: &Card, total: u64, cfg: &TrainConfig) -> String {
    let names: Vec<String> = card
        .guesses
        .iter()
        .map(|g| {
            let bf16 = if g.bf16 { "" } else { ", no bf16" };
            format!("{} ({}{bf16})", g.name, crate::units::human(g.total_bytes))
        })
        .collect();
    let mut note = format!(
        "no --gpu: the log states only a total capacity of {}, which could be {}; fixes use \
         that capacity with {}'s other traits",
        crate::units::human(total),
        names.join(", "),
        card.profile.name
    );
    let bf16_differs = card.guesses.iter().any(|g| g.bf16 != card.profile.bf16);
    if cfg.dtype == Precision::BFloat16 && cfg.dtype_written.0 {
        note.push_str(
            "; dtype = 'bfloat16' is kept as the config writes it, whichever card it was \
             (nanoGPT's float16 fallback applies only to its default dtype)",
        );
    } else if cfg.dtype == Precision::BFloat16 && bf16_differs {
        note.push_str(&format!(
            "; nanoGPT's default dtype is bfloat16 on a card with bf16 and float16 on one \
             without: simulated as {} ({}); pass --gpu to settle it",
            effective_precision(cfg, Some(&card.profile)).as_str(),
            card.profile.name
        ));
    }
    note
}

/// The cards a capacity could be, for the diagnosis (a card guessed, not named).
struct Guess {
    names: Vec<String>,
    note: String,
}

/// The matching context for `text` under the user's config; `mode` receives the run's mode.
fn context(
    args: &DiagnoseArgs,
    text: &str,
    mode: &mut Option<config::Mode>,
) -> Result<(MatchContext, Option<Guess>)> {
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
    *mode = Some(cfg.mode);
    let facts = parsed.facts;
    let card = card(args, facts.total_capacity_bytes)?;
    let guess = match facts.total_capacity_bytes {
        Some(total) if !card.guesses.is_empty() => Some(Guess {
            names: card.guesses.iter().map(|g| g.name.clone()).collect(),
            note: guess_note(&card, total, &cfg),
        }),
        _ => None,
    };
    let mut gpu = card.profile;
    if parsed.format == Some(Format::Vllm) && parsed.phase == DiagPhase::KvCache {
        return Ok((
            crate::diagnose::vllm_fixes::vllm_context(&cfg, &gpu)?,
            guess,
        ));
    }
    // The log states this process's memory outside PyTorch (context, kernels): use it rather
    // than a per-card default.
    if let Some(own) = facts.non_framework_in_process_bytes() {
        gpu.context_bytes = own;
    }
    let sim = crate::run::run(&cfg, Some(&gpu))?;
    let live = sim_phase(parsed.phase.as_str()).map(|p| sim.profile.phase(p).peak_allocated);
    let (fixes, notes) = suggest_fixes(args, &cfg, &gpu, &facts)?;
    let ctx = MatchContext {
        candidates: candidates(&sim.timeline, &sim.profile),
        simulated_live_bytes_at_phase: live,
        fixes,
        explanation: None,
        notes,
    };
    Ok((ctx, guess))
}

/// suggest's configurations on the card, less what other processes hold now: each a fix with
/// its predicted peak, or one fix that says nothing fits (the diagnoser turns a fix list where
/// nothing fits into the model_too_large cause); and a note when the simulation says the
/// crashed config fits.
fn suggest_fixes(
    args: &DiagnoseArgs,
    cfg: &TrainConfig,
    gpu: &GpuProfile,
    facts: &Facts,
) -> Result<(Vec<Fix>, Vec<String>)> {
    // What the run can have: the card less what other processes hold now, less the margin.
    let outside = facts.outside_process_bytes().unwrap_or(0);
    let budget = match Budget::from_profile(gpu.clone(), crate::budget::DEFAULT_MARGIN_BYTES) {
        Ok(b) => b.less_held_by_others(outside),
        // A margin as large as the card leaves nothing to suggest.
        Err(_) => return Ok((Vec::new(), Vec::new())),
    };
    let usable = budget.usable_bytes;
    if usable == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let script = script(
        args.config.as_deref(),
        model_source(&args.model, &args.hf_config),
        cfg,
    );
    let s = suggest(cfg, &budget, &[], &script)?;
    if s.best.is_none() {
        let fix = Fix {
            change: s.notes.join(" "),
            command: None,
            code_changes: Vec::new(),
            predicted_peak_bytes: Some(s.baseline.peak_device_bytes),
            fits: Some(false),
        };
        return Ok((vec![fix], Vec::new()));
    }
    let mut notes = Vec::new();
    if s.baseline.fits {
        notes.push(disagreement(facts, s.baseline.peak_device_bytes, usable));
    }
    let held = if outside > 0 {
        format!(
            " (with {} still held by other processes)",
            crate::units::human(outside)
        )
    } else {
        String::new()
    };
    let fixes = s
        .best
        .into_iter()
        .chain(s.alternatives)
        // The configuration that just crashed is no fix, whatever the simulation says.
        .filter(|c| c.config != *cfg)
        .map(|c| Fix {
            change: format!(
                "{}: batch_size {}, gradient_accumulation_steps {}{held}",
                // In a diagnosis "as configured" would read as the crashed run: it is the
                // same settings at another batch.
                c.label
                    .replacen("as configured", "same settings, smaller batch", 1),
                c.config.batch_size,
                c.config.gradient_accumulation_steps,
            ),
            command: Some(c.command),
            code_changes: c.code_changes,
            predicted_peak_bytes: Some(c.peak_device_bytes),
            fits: Some(c.fits),
        })
        .collect();
    Ok((fixes, notes))
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

/// The simulator's tensors in allocation order, each named once per phase, with the most the
/// run had allocated just before any of that name's allocations in the phase, and a tensor of
/// the same size alive at that moment, if any.
fn candidates(tl: &Timeline, profile: &MemoryProfile) -> Vec<Candidate> {
    use crate::sim::timeline::EventKind;
    let mut index = std::collections::HashMap::new();
    // Candidate-sized tensors alive now, by size.
    let mut live: std::collections::HashMap<u64, Vec<u32>> = std::collections::HashMap::new();
    let mut out: Vec<Candidate> = Vec::new();
    for (i, ev) in tl.events.iter().enumerate() {
        let r = &tl.tensors[ev.tensor as usize];
        if r.bytes < MIN_CANDIDATE_BYTES {
            continue;
        }
        let same_size = live.entry(r.bytes).or_default();
        if ev.kind == EventKind::Free {
            same_size.retain(|&t| t != ev.tensor);
            continue;
        }
        let twin = same_size
            .first()
            .map(|&t| tl.tensors[t as usize].name.to_string());
        same_size.push(ev.tensor);
        let before = i.checked_sub(1).map_or(0, |j| profile.allocated_after[j]);
        let name = r.name.to_string();
        let at = *index.entry((name.clone(), r.phase)).or_insert_with(|| {
            out.push(Candidate {
                name,
                shape: r.shape.dims().to_vec(),
                dtype: r.dtype.short().to_string(),
                bytes: r.bytes,
                phase: r.phase.key().to_string(),
                allocated_before_bytes: Some(before),
                live_twin: twin.clone(),
            });
            out.len() - 1
        });
        let c = &mut out[at];
        if Some(before) > c.allocated_before_bytes {
            c.allocated_before_bytes = Some(before);
            c.live_twin = twin;
        }
    }
    out
}
