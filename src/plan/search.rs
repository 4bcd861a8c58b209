//! The search. For each set of knobs: the largest batch_size whose device peak (reserved +
//! context, over every phase, both evals included) fits, with gradient accumulation raised so
//! the tokens per optimizer step stay at least the user's.
//!
//! Live bytes grow with the batch and are a lower bound on reserved memory, so they bound the
//! search from above (binary search, no allocator replay needed); every batch under that bound
//! is then checked from the top with the full allocator replay — reserved is not monotone in the
//! batch (best-fit splitting makes it jump), so the first that fits is the maximum: every larger
//! batch either fails the bound or was simulated and failed.

use super::knobs::{code_changes, command, knobs, KnobId, Script};
use super::speed::tokens_per_second;
use crate::budget::{catalogue, Budget, GpuProfile};
use crate::config::TrainConfig;
use crate::error::Result;
use crate::run::{run, run_timeline_within, Verdict};
use crate::sim::replay::{category_peak, live_peak};
use crate::sim::{spare, Category, Timeline};
use serde::Serialize;
use serde_json::{Map, Value};
use std::cell::RefCell;

const BLOCK_HALVED: &str = "block_size halved (changes the context length)";

/// The largest micro-batch considered.
pub const MAX_BATCH: u64 = 1 << 14;

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub label: String,
    /// What it is, for the search's decisions (not printed: the label says it).
    #[serde(skip)]
    pub origin: Origin,
    /// The knob alone, for the table (the label says "exact tokens/step" where this run keeps
    /// the user's tokens per step at a smaller batch; the table's tokens/step column shows it).
    pub knob: String,
    pub config: TrainConfig,
    pub changes: Map<String, Value>,
    pub tokens_per_step: u64,
    pub peak_allocated_bytes: u64,
    pub peak_device_bytes: u64,
    pub fits: bool,
    /// Predicted tokens/s relative to the user's config (None: card throughput unknown).
    pub relative_throughput: Option<f64>,
    pub command: String,
    /// Changes nanoGPT has no flag for.
    pub code_changes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuSummary {
    pub name: String,
    pub total_bytes: u64,
    pub usable_bytes: u64,
    /// `--safety`: percentage of the total kept free, and those bytes (inside the margin).
    pub safety_pct: f64,
    pub safety_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub config: TrainConfig,
    pub tokens_per_step: u64,
    pub peak_allocated_bytes: u64,
    pub peak_device_bytes: u64,
    pub fits: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuggestReport {
    pub gpu: GpuSummary,
    pub margin_bytes: u64,
    pub baseline: Baseline,
    pub best: Option<Candidate>,
    pub alternatives: Vec<Candidate>,
    /// Fragmentation, tokens per step that cannot be matched exactly, what would fit instead.
    pub notes: Vec<String>,
    /// Over several GPUs (`--gpus N`, or when nothing fits one card).
    pub multi_gpu: Option<super::multi::MultiReport>,
}

pub(super) struct Ctx<'a> {
    pub(super) budget: &'a Budget,
    /// Verdicts already simulated, by config: the searches meet the same configs again (the
    /// baseline is one of the batches searched), and a config is simulated once.
    verdicts: RefCell<Vec<(TrainConfig, Verdict)>>,
    /// Configs known not to fit without a verdict: their replay stopped where reserved memory
    /// passed what can fit (`if_fits`).
    too_large: RefCell<Vec<TrainConfig>>,
    /// Lower bounds already taken, by config with `alloc_conf` cleared: the Timeline does not
    /// depend on the allocator's configuration, so the expandable-segments knob's search
    /// repeats the plain one's bounds without simulating them.
    bounds: RefCell<Vec<(TrainConfig, Bound)>>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(budget: &'a Budget) -> Ctx<'a> {
        Ctx {
            budget,
            verdicts: RefCell::new(Vec::new()),
            too_large: RefCell::new(Vec::new()),
            bounds: RefCell::new(Vec::new()),
        }
    }

    /// The verdict on `cfg` on this card.
    fn peak(&self, cfg: &TrainConfig) -> Result<Verdict> {
        if let Some(v) = self.known_verdict(cfg) {
            return Ok(v);
        }
        let tl = crate::run::timeline(cfg, Some(&self.budget.profile))?;
        Ok(self
            .judge_timeline(cfg, tl, u64::MAX)
            .expect("no reserved figure is above u64::MAX"))
    }

    /// The verdict on `cfg` if it fits, None if it does not: the replay stops where reserved
    /// memory passes what can fit. `tl`: its Timeline, when it was simulated already.
    fn if_fits(&self, cfg: &TrainConfig, tl: Option<Timeline>) -> Result<Option<Verdict>> {
        if let Some(v) = self.known_verdict(cfg) {
            return Ok(v.fits.then_some(v));
        }
        if self.too_large.borrow().contains(cfg) {
            return Ok(None);
        }
        let tl = match tl {
            Some(tl) => tl,
            None => crate::run::timeline(cfg, Some(&self.budget.profile))?,
        };
        let v = self.judge_timeline(cfg, tl, self.budget.reserved_limit());
        Ok(v.filter(|v| v.fits))
    }

    fn known_verdict(&self, cfg: &TrainConfig) -> Option<Verdict> {
        let verdicts = self.verdicts.borrow();
        verdicts.iter().find(|(c, _)| c == cfg).map(|&(_, v)| v)
    }

    /// The verdict on `cfg` from its Timeline, kept for the next time; None (and `cfg` kept as
    /// too large) when reserved memory passed `reserved_limit` and the replay stopped there.
    fn judge_timeline(
        &self,
        cfg: &TrainConfig,
        tl: Timeline,
        reserved_limit: u64,
    ) -> Option<Verdict> {
        let profile = Some(&self.budget.profile);
        match run_timeline_within(cfg, profile, tl, reserved_limit) {
            Ok(run) => {
                let v = self.budget.judge(&run);
                self.verdicts.borrow_mut().push((cfg.clone(), v));
                spare::give_back(run.timeline);
                Some(v)
            }
            Err(tl) => {
                self.too_large.borrow_mut().push(cfg.clone());
                spare::give_back(tl);
                None
            }
        }
    }

    /// Whether live bytes + context fit: no larger than the device peak, so a config that
    /// fails this fails the verdict too. With the Timeline when it was simulated here (None:
    /// the bound was known).
    fn lower_bound(&self, cfg: &TrainConfig) -> Result<(Bound, Option<Timeline>)> {
        let key = TrainConfig {
            alloc_conf: None,
            ..cfg.clone()
        };
        if let Some(&(_, bound)) = self.bounds.borrow().iter().find(|(c, _)| *c == key) {
            return Ok((bound, None));
        }
        let tl = crate::run::timeline(cfg, Some(&self.budget.profile))?;
        let live = live_peak(&tl);
        let bound = Bound {
            live,
            fits: self.fits_live(live),
        };
        self.bounds.borrow_mut().push((key, bound));
        Ok((bound, Some(tl)))
    }

    /// Live bytes (a lower bound on reserved) within what a run that fits can reserve.
    fn fits_live(&self, live: u64) -> bool {
        live <= self.budget.reserved_limit()
    }
}

/// A lower bound: the run's largest live bytes, and whether they fit with the context.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    live: u64,
    fits: bool,
}

/// `cfg` at micro-batch `b`, with the smallest accumulation that keeps `tokens` per step.
pub fn with_batch(cfg: &TrainConfig, b: u64, tokens: u64) -> TrainConfig {
    let mut c = cfg.clone();
    c.batch_size = b;
    let per_micro = b.saturating_mul(cfg.block_size).max(1);
    c.gradient_accumulation_steps = tokens.div_ceil(per_micro).max(1);
    c
}

/// The largest batch for which `make(b)` fits, and its peak; None when batch 1 does not.
/// `cap` bounds the batch (beyond the batch that reaches the tokens per step in one micro-step,
/// a larger one only changes the optimisation).
pub(super) fn max_batch(
    ctx: &Ctx,
    make: &dyn Fn(u64) -> TrainConfig,
    cap: u64,
) -> Result<Option<(u64, Verdict)>> {
    let cap = cap.clamp(1, MAX_BATCH);
    // The Timeline of the last batch whose bound fitted: every probe above `lo` that fits
    // becomes `lo`, so this is the search's `lo` when it ends, where the full check starts (it
    // needs only the allocator replay then).
    let mut top: Option<(u64, Timeline)> = None;
    let mut bound = |b: u64| -> Result<Bound> {
        let (bound, tl) = ctx.lower_bound(&make(b))?;
        let Some(tl) = tl else { return Ok(bound) };
        if bound.fits {
            if let Some((_, old)) = top.replace((b, tl)) {
                spare::give_back(old);
            }
        } else {
            spare::give_back(tl);
        }
        Ok(bound)
    };
    let first = bound(1)?;
    if !first.fits {
        return Ok(None);
    }
    let lo = largest_fitting_bound(&mut bound, ctx.budget.reserved_limit(), first.live, cap)?;
    first_that_fits(ctx, make, lo, top)
}

/// Rounds that look where live bytes are predicted to cross the limit before the search
/// falls back to halving (or, with no failing batch known, doubling) the interval.
const PREDICTED_ROUNDS: u32 = 4;

/// The largest b ≤ cap whose bound fits, given that b = 1 fits with `live_at_one` bytes.
///
/// Live bytes grow about linearly in the batch (activations, logits), so each round looks
/// where the line through two known points crosses `limit` — the smallest batch known to fail
/// and the largest known to fit, or with none known to fail, batch 1 and the largest that
/// fits — and at one batch above that. The prediction only decides where to look: the answer
/// is the largest b whose bound fits, as the bounds say, with `lo` always fitting and `hi`
/// always failing (cap + 1 where none is known to).
fn largest_fitting_bound(
    bound: &mut dyn FnMut(u64) -> Result<Bound>,
    limit: u64,
    live_at_one: u64,
    cap: u64,
) -> Result<u64> {
    let mut lo = (1, live_at_one);
    let mut hi: Option<(u64, u64)> = None;
    for round in 0.. {
        let hi_b = hi.map_or(cap + 1, |(b, _)| b);
        if hi_b - lo.0 <= 1 {
            break;
        }
        // A predicted crossing is probed with the batch above it: where the prediction is
        // right, that pair ends the search.
        let (guess, pair) = match (round < PREDICTED_ROUNDS, hi) {
            (true, Some(h)) => (crossing(lo, h, limit), true),
            (true, None) if lo.0 > 1 => (crossing((1, live_at_one), lo, limit), true),
            (true, None) => (lo.0 + 1, false),
            (false, Some(_)) => (lo.0 + (hi_b - lo.0) / 2, false),
            (false, None) => (lo.0.saturating_mul(2), false),
        };
        let guess = guess.clamp(lo.0 + 1, hi_b - 1);
        for b in [guess, guess + 1].into_iter().take(1 + usize::from(pair)) {
            if b >= hi.map_or(cap + 1, |(h, _)| h) {
                break;
            }
            let r = bound(b)?;
            if !r.fits {
                hi = Some((b, r.live));
                break;
            }
            lo = (b, r.live);
        }
    }
    Ok(lo.0)
}

/// The largest batch at which the line through points `a` and `b` (batch, live bytes) is at
/// most `limit`; u64::MAX where the line does not rise. A guess: the caller clamps it.
fn crossing(a: (u64, u64), b: (u64, u64), limit: u64) -> u64 {
    let ((b0, l0), (b1, l1)) = (a.min(b), a.max(b));
    if l1 <= l0 || b1 == b0 {
        return u64::MAX;
    }
    let per_batch = (l1 - l0) as f64 / (b1 - b0) as f64;
    let room = limit as f64 - l0 as f64;
    let at = b0 as f64 + (room / per_batch).floor();
    if at <= 0.0 {
        0
    } else {
        at.min(u64::MAX as f64) as u64
    }
}

/// The full simulation from the bound down: the first batch that fits, replaying the
/// Timeline the search kept for `lo` where it has one.
fn first_that_fits(
    ctx: &Ctx,
    make: &dyn Fn(u64) -> TrainConfig,
    lo: u64,
    mut top: Option<(u64, Timeline)>,
) -> Result<Option<(u64, Verdict)>> {
    for b in (1..=lo).rev() {
        let tl = match top.take() {
            Some((at, tl)) if at == b => Some(tl),
            Some((_, tl)) => {
                spare::give_back(tl);
                None
            }
            None => None,
        };
        if let Some(p) = ctx.if_fits(&make(b), tl)? {
            return Ok(Some((b, p)));
        }
    }
    Ok(None)
}

fn changes(cfg: &TrainConfig, base: &TrainConfig) -> Map<String, Value> {
    let a = serde_json::to_value(cfg).unwrap_or(Value::Null);
    let b = serde_json::to_value(base).unwrap_or(Value::Null);
    let mut out = Map::new();
    if let (Value::Object(a), Value::Object(b)) = (a, b) {
        for (k, v) in a {
            if b.get(&k) != Some(&v) {
                out.insert(k, v);
            }
        }
    }
    out
}

/// What a candidate is, for the search's own decisions (its label is for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// One knob of `knobs()` (the plain run is the first, `as configured`).
    Knob(KnobId),
    /// Every combinable knob at once, for runs no single knob rescues.
    EveryKnob,
    /// A smaller estimate_loss() batch: only the evaluations overflowed.
    EvalBatch,
    /// block_size halved: a different model is trained, so it ranks last.
    ShorterBlock,
}

/// A set of knobs to search the batch for: labels, origin, config.
struct Variant {
    label: &'static str,
    exact_label: &'static str,
    origin: Origin,
    config: TrainConfig,
}

/// How a found config becomes a Candidate: what it is compared with and how it is printed.
struct Found<'a> {
    base: &'a TrainConfig,
    gpu: &'a GpuProfile,
    script: &'a Script,
    base_speed: Option<f64>,
}

impl Found<'_> {
    fn candidate(
        &self,
        (label, knob): (&str, &str),
        origin: Origin,
        cfg: TrainConfig,
        p: Verdict,
    ) -> Candidate {
        let speed = tokens_per_second(&cfg, self.gpu);
        Candidate {
            label: label.to_string(),
            knob: knob.to_string(),
            origin,
            changes: changes(&cfg, self.base),
            tokens_per_step: cfg.tokens_per_step().unwrap_or(0),
            peak_allocated_bytes: p.allocated.bytes,
            peak_device_bytes: p.device.band.high,
            fits: p.fits,
            relative_throughput: speed.zip(self.base_speed).map(|(s, b)| s / b),
            command: command(&cfg, self.base, self.script),
            code_changes: code_changes(&cfg, self.base),
            config: cfg,
        }
    }
}

/// Each applicable knob alone, then all of them at once when more than two apply.
fn variants(base: &TrainConfig, bf16: bool) -> Vec<Variant> {
    let applicable: Vec<_> = knobs()
        .into_iter()
        .filter(|k| (k.applies)(base, bf16))
        .collect();
    let mut out: Vec<Variant> = applicable
        .iter()
        .map(|k| {
            let mut config = base.clone();
            (k.apply)(&mut config);
            Variant {
                label: k.label,
                exact_label: k.exact_label,
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
            exact_label: "every memory knob at once, exact tokens/step",
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
    v: Variant,
    tokens: u64,
    batch_kept: bool,
) -> Result<Vec<Candidate>> {
    let labels = (v.label, v.label);
    if batch_kept {
        return Ok(match ctx.if_fits(&v.config, None)? {
            Some(p) => vec![found.candidate(labels, v.origin, v.config, p)],
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
                out.push(found.candidate((v.exact_label, v.label), v.origin, make(e), p));
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
    let mut found: Vec<Candidate> = Vec::new();
    for v in variants(base, gpu.bf16) {
        found.extend(search_variant(&ctx, &found_as, v, tokens, batch_kept)?);
    }
    found.extend(eval_batch(&ctx, &found_as, base_peak.fits)?);
    if !kept("block_size") && !kept("batch_size") && base.block_size >= 256 {
        found.extend(shorter_block(&ctx, &found_as, tokens)?);
    }
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
