//! The search. For each set of knobs: the largest batch_size whose device peak (reserved +
//! context, over every phase, both evals included) fits, with gradient accumulation raised so
//! the tokens per optimizer step stay at least the user's (`batch`). The searches are
//! independent and run side by side (`parallel`); the candidates are then ranked.

use super::batch::max_batch;
pub use super::batch::with_batch;
use super::candidate::Found;
pub use super::candidate::{Baseline, Candidate, GpuSummary, Origin, SuggestReport};
pub(super) use super::ctx::Ctx;
use super::knobs::{knobs, KnobId};
use super::script::Script;
use super::speed::tokens_per_second;
use crate::budget::{catalogue, Budget, GpuProfile};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::run::run;
use crate::sim::replay::category_peak;
use crate::sim::Category;

const BLOCK_HALVED: &str = "block_size halved (changes the context length)";

/// One search of `suggest`: the batch of a set of knobs, the eval batch, a shorter block.
enum Search {
    Knobs(Box<Variant>),
    EvalBatch,
    ShorterBlock,
}

/// A set of knobs to search the batch for: labels, origin, config.
struct Variant {
    label: &'static str,
    origin: Origin,
    config: TrainConfig,
}

/// Each applicable knob alone, then all of them at once when more than two apply.
fn variants(base: &TrainConfig, bf16: bool) -> Vec<Variant> {
    let applicable: Vec<_> = knobs().iter().filter(|k| (k.applies)(base, bf16)).collect();
    let mut out: Vec<Variant> = applicable
        .iter()
        .map(|k| {
            let mut config = base.clone();
            (k.apply)(&mut config);
            Variant {
                label: k.label,
                origin: Origin::Knob(k.id),
                config,
            }
        })
        .collect();
    if applicable.len() > 2 {
        let mut config = base.clone();
        for k in applicable.iter().filter(|k| k.combines) {
            (k.apply)(&mut config);
        }
        out.push(Variant {
            label: "every memory knob at once",
            origin: Origin::EveryKnob,
            config,
        });
    }
    out
}

/// The largest batch of one variant that fits at the user's tokens per step, and the largest
/// smaller one that keeps those tokens exactly when that one does not; with batch or
/// accumulation kept, the variant as it is, if it fits.
fn search_variant(
    ctx: &Ctx,
    found: &Found,
    v: &Variant,
    tokens: u64,
    batch_kept: bool,
) -> Result<Vec<Candidate>> {
    let labels = (v.label, v.label);
    if batch_kept {
        return Ok(match ctx.if_fits(&v.config, None)? {
            Some(p) => vec![found.candidate(labels, v.origin, v.config.clone(), p)],
            None => Vec::new(),
        });
    }
    let make = |b: u64| with_batch(&v.config, b, tokens);
    let cap = tokens.div_ceil(v.config.block_size);
    let Some((b, p)) = max_batch(ctx, &make, cap)? else {
        return Ok(Vec::new());
    };
    let mut out = vec![found.candidate(labels, v.origin, make(b), p)];
    if make(b).tokens_per_step() != Some(tokens) {
        let exact = (1..b)
            .rev()
            .find(|&e| make(e).tokens_per_step() == Some(tokens));
        if let Some(e) = exact {
            if let Some(p) = ctx.if_fits(&make(e), None)? {
                let exact_label = format!("{}, exact tokens/step", v.label);
                out.push(found.candidate((&exact_label, v.label), v.origin, make(e), p));
            }
        }
    }
    Ok(out)
}

/// nanoGPT's estimate_loss() uses the training batch: when only the evaluations overflow, a
/// smaller eval batch fixes it without touching training.
fn eval_batch(ctx: &Ctx, found: &Found, base_fits: bool) -> Result<Option<Candidate>> {
    let base = found.base;
    if base_fits || base.eval_batch_size.is_some() {
        return Ok(None);
    }
    let make = |b: u64| {
        let mut c = base.clone();
        c.eval_batch_size = Some(b.min(base.batch_size));
        c
    };
    let label = "smaller eval batch";
    Ok(max_batch(ctx, &make, base.batch_size)?
        .filter(|&(b, _)| b < base.batch_size)
        .map(|(b, p)| found.candidate((label, label), Origin::EvalBatch, make(b), p)))
}

/// block_size halved, when the user lets it change (and it is at least 256).
fn shorter_block(ctx: &Ctx, found: &Found, tokens: u64) -> Result<Option<Candidate>> {
    let mut v = found.base.clone();
    v.block_size = found.base.block_size / 2;
    let make = |b: u64| with_batch(&v, b, tokens);
    let labels = (BLOCK_HALVED, "block_size halved");
    Ok(max_batch(ctx, &make, tokens.div_ceil(v.block_size))?
        .map(|(b, p)| found.candidate(labels, Origin::ShorterBlock, make(b), p)))
}

/// What the table alone does not say: fragmentation that expandable segments would lift, and
/// accumulation rounded up.
fn search_notes(found: &[Candidate], tokens: u64) -> Vec<String> {
    let mut notes = Vec::new();
    let batch_of = |id| {
        found
            .iter()
            .find(|c| c.origin == Origin::Knob(id))
            .map(|c| c.config.batch_size)
    };
    if let (Some(b), Some(exp)) = (
        batch_of(KnobId::AsConfigured),
        batch_of(KnobId::ExpandableSegments),
    ) {
        if exp > b {
            notes.push(format!(
                "fragmentation: the caching allocator's segments cap batch_size at {b}; with \
                 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (reserved ≈ allocated, in 2 MiB \
                 pages) batch_size {exp} fits"
            ));
        }
    }
    if found.iter().any(|c| c.tokens_per_step != tokens) {
        notes.push(format!(
            "accumulation is the smallest that reaches your {tokens} tokens per step; where the \
             batch does not divide it, a step has a few more tokens (the tokens/step column)"
        ));
    }
    notes
}

/// Runs that train the same model first (a shorter block_size changes what the model learns),
/// then predicted tokens/s, then fewer changes; the same config once.
fn rank(found: &mut Vec<Candidate>) {
    found.sort_by(|a, b| {
        let sa = a.relative_throughput.unwrap_or(0.0);
        let sb = b.relative_throughput.unwrap_or(0.0);
        let shorter = |c: &Candidate| c.origin == Origin::ShorterBlock;
        shorter(a)
            .cmp(&shorter(b))
            .then(sb.total_cmp(&sa))
            .then(a.changes.len().cmp(&b.changes.len()))
    });
    found.dedup_by(|a, b| a.config == b.config);
}

/// Search and rank. `script` is how the printed nanoGPT command lines start train.py.
pub fn suggest(
    base: &TrainConfig,
    budget: &Budget,
    keep: &[String],
    script: &Script,
) -> Result<SuggestReport> {
    let gpu = &budget.profile;
    let ctx = Ctx::new(budget);
    let tokens = base.tokens_per_step().unwrap_or(u64::MAX);
    let base_peak = ctx.peak(base)?;
    let kept = |k: &str| keep.iter().any(|x| x == k);
    let found_as = Found {
        base,
        gpu,
        script,
        base_speed: tokens_per_second(base, gpu),
    };
    let batch_kept = kept("batch_size") || kept("gradient_accumulation_steps");
    let mut searches: Vec<Search> = variants(base, gpu.bf16)
        .into_iter()
        .map(|v| Search::Knobs(Box::new(v)))
        .collect();
    searches.push(Search::EvalBatch);
    if !kept("block_size") && !kept("batch_size") && base.block_size >= 256 {
        searches.push(Search::ShorterBlock);
    }
    let found = super::parallel::map(&searches, super::parallel::cores(), |search| {
        Ok(match search {
            Search::Knobs(v) => search_variant(&ctx, &found_as, v, tokens, batch_kept)?,
            Search::EvalBatch => eval_batch(&ctx, &found_as, base_peak.fits)?
                .into_iter()
                .collect(),
            Search::ShorterBlock => shorter_block(&ctx, &found_as, tokens)?
                .into_iter()
                .collect(),
        })
    })?;
    let mut found: Vec<Candidate> = found.into_iter().flatten().collect();
    let mut notes = search_notes(&found, tokens);
    rank(&mut found);
    if found.is_empty() {
        notes.push(nothing_fits(&ctx, base, budget)?);
    }
    let mut it = found.into_iter();
    Ok(SuggestReport {
        gpu: GpuSummary {
            name: budget.name.clone(),
            total_bytes: budget.total_bytes,
            usable_bytes: budget.usable_bytes,
            safety_pct: budget.safety_pct,
            safety_bytes: budget.safety_bytes,
        },
        margin_bytes: budget.margin_bytes,
        baseline: Baseline {
            config: base.clone(),
            tokens_per_step: tokens,
            peak_allocated_bytes: base_peak.allocated.bytes,
            peak_device_bytes: base_peak.device.band.high,
            fits: base_peak.fits,
        },
        best: it.next(),
        alternatives: it.collect(),
        notes,
        multi_gpu: None,
    })
}

/// `base` over several GPUs: exactly `--gpus N`, or the smallest world size up to a limit
/// when nothing fits one card; and the smallest world size that fits either way.
///
/// Tokens per step are kept as the run's framework counts them: nanoGPT's and LitGPT's
/// accumulation is global, so the step is the user's; the Trainer's, axolotl's and
/// torchtune's are per rank, so a config written for one device and launched on N
/// (`--gpus N`) steps on N times its per-device tokens.
pub fn suggest_multi(
    base: &TrainConfig,
    budget: &Budget,
    plan: super::multi::Plan,
    one_card_fits: bool,
    script: &Script,
) -> Result<super::multi::MultiReport> {
    let ctx = Ctx::new(budget);
    let mut tokens = base.tokens_per_step().unwrap_or(u64::MAX);
    if let super::multi::Plan::Exactly(n) = plan {
        if base.framework.accumulation_per_rank() && base.world_size == 1 {
            tokens = tokens.saturating_mul(n);
        }
    }
    super::multi::search(base, &ctx, tokens, plan, one_card_fits, script)
}

/// Batch 1 does not fit: say what the run needs at its smallest and which cards have it.
fn nothing_fits(ctx: &Ctx, base: &TrainConfig, budget: &Budget) -> Result<String> {
    let mut smallest = base.clone();
    smallest.batch_size = 1;
    smallest.eval_batch_size = None;
    let sim = run(&smallest, Some(&ctx.budget.profile))?;
    let need = sim.device_peak_bytes(ctx.budget.profile.context_bytes);
    // Weights, gradients and optimizer state at their largest together, as simulated.
    let states = category_peak(
        &sim.timeline,
        &[
            Category::Parameters,
            Category::Gradients,
            Category::Optimizer,
        ],
    );
    let mut cards: Vec<&GpuProfile> = catalogue()
        .iter()
        .filter(|g| g.total_bytes.saturating_sub(budget.margin_bytes) >= need)
        .collect();
    cards.sort_by_key(|g| g.total_bytes);
    let names: Vec<String> = cards.iter().take(3).map(|g| g.key.clone()).collect();
    Ok(format!(
        "nothing fits: even batch_size 1 needs {} on the device (weights, gradients and \
         optimizer state alone reach {}), and {} has {} usable. {}",
        crate::units::human(need),
        crate::units::human(states),
        budget.name,
        crate::units::human(budget.usable_bytes),
        if names.is_empty() {
            "No single card in the catalogue has that: shard the model states over several GPUs (FSDP / ZeRO).".to_string()
        } else {
            format!("Cards that fit it: {}.", names.join(", "))
        }
    ))
}
