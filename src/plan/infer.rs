//! `suggest --mode inference`: the largest batch at the configured context, the largest context
//! at batch 1 and at the configured batch, and the vLLM flags that fit. Every candidate is a
//! full inference simulation (weights, KV cache, prefill, decode) replayed through the
//! allocator; the search is binary on the device peak, so the answer `n` was simulated to fit
//! and `n + 1` was simulated not to.

use super::search::GpuSummary;
use super::vllm::{vllm_startup, VllmBudget, BLOCK_TOKENS};
use crate::budget::Budget;
use crate::config::{Mode, TrainConfig};
use crate::error::Result;
use crate::run::{run, Verdict};
use serde::Serialize;

/// The largest batch or context considered.
pub const MAX_SEARCH: u64 = 1 << 24;

/// One configuration and its simulated device peak.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub batch_size: u64,
    pub block_size: u64,
    pub peak_device_bytes: u64,
    /// The `vramplan check` overrides that reproduce it.
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InferenceSuggestion {
    pub gpu: GpuSummary,
    pub margin_bytes: u64,
    /// The configuration as given.
    pub baseline: Fit,
    pub baseline_fits: bool,
    /// Serving over several GPUs (tensor or pipeline parallel): the baseline is one GPU holding
    /// the whole model, for comparison only; the `largest_*` searches (that same one-GPU run)
    /// are skipped, and vLLM's start-up on every rank is the answer.
    pub sharded: bool,
    /// The most sequences at the configured block_size.
    pub largest_batch: Option<Fit>,
    /// The longest context for one sequence.
    pub largest_context_batch1: Option<Fit>,
    /// The longest context at the configured batch_size.
    pub largest_context: Option<Fit>,
    /// vLLM's start-up at the configured gpu_memory_utilization.
    pub vllm: VllmBudget,
    /// `vllm serve` command lines that start on this card.
    pub vllm_commands: Vec<String>,
    pub notes: Vec<String>,
}

struct Ctx<'a> {
    budget: &'a Budget,
    /// `--model NAME` when the model came from a preset, for the printed commands.
    model: String,
}

impl Ctx<'_> {
    fn judge(&self, cfg: &TrainConfig) -> Result<Verdict> {
        Ok(self.budget.judge(&run(cfg, Some(&self.budget.profile))?))
    }

    fn fit(&self, cfg: &TrainConfig) -> Result<Option<Fit>> {
        let v = self.judge(cfg)?;
        Ok(v.fits.then(|| fit(cfg, v.device.band.high, &self.model)))
    }

    /// The largest n in 1..=MAX_SEARCH with `make(n)` fitting, by doubling then bisection.
    fn largest(&self, make: &dyn Fn(u64) -> TrainConfig) -> Result<Option<Fit>> {
        let Some(mut best) = self.fit(&make(1))? else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (1u64, None);
        while hi.is_none() && lo < MAX_SEARCH {
            let n = (lo * 2).min(MAX_SEARCH);
            match self.fit(&make(n))? {
                Some(f) => {
                    lo = n;
                    best = f;
                }
                None => hi = Some(n),
            }
        }
        let Some(mut hi) = hi else {
            return Ok(Some(best));
        };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.fit(&make(mid))? {
                Some(f) => {
                    lo = mid;
                    best = f;
                }
                None => hi = mid,
            }
        }
        Ok(Some(best))
    }
}

fn fit(cfg: &TrainConfig, peak: u64, model: &str) -> Fit {
    Fit {
        batch_size: cfg.batch_size,
        block_size: cfg.block_size,
        peak_device_bytes: peak,
        command: format!(
            "vramplan check{model} --mode inference --batch_size={} --block_size={}",
            cfg.batch_size, cfg.block_size
        ),
    }
}

/// `cfg` with another context; a prompt longer than it is cut to it.
fn with_context(cfg: &TrainConfig, block: u64) -> TrainConfig {
    let mut c = cfg.clone();
    c.block_size = block;
    c.prompt_len = cfg.prompt_len.map(|p| p.min(block));
    c
}

/// Search on `budget`'s card; `model` is the user's `--model` (repeated in the vramplan
/// lines), `served` what the `vllm serve` lines load (a Hub id or a directory; None: MODEL).
pub fn suggest_inference(
    base: &TrainConfig,
    budget: &Budget,
    model: Option<&str>,
    served: Option<&str>,
) -> Result<InferenceSuggestion> {
    let mut base = base.clone();
    base.mode = Mode::Inference;
    let ctx = Ctx {
        budget,
        model: model.map_or(String::new(), |m| format!(" --model {m}")),
    };
    let base_verdict = ctx.judge(&base)?;
    let vllm = vllm_startup(&base, Some(&budget.profile), budget.total_bytes)?;
    let sharded = vllm.sharded();
    let (largest_batch, largest_context_batch1, largest_context) = if sharded {
        (None, None, None)
    } else {
        one_gpu_searches(&ctx, &base)?
    };
    let name = served.unwrap_or("MODEL");
    let mut vllm_commands = Vec::new();
    let mut notes = Vec::new();
    // The utilization that gives a full context, and the context the configured one gives.
    match vllm.utilization_for(base.block_size) {
        Some(u) => vllm_commands.push(vllm.command(name, u, base.block_size)),
        None => notes.push(format!(
            "vLLM cannot hold one sequence of {} tokens on this card even at --gpu-memory-utilization 1.0: weights {} and the profile run's peak leave too little for the KV cache",
            base.block_size,
            crate::units::human(vllm.weights_bytes)
        )),
    }
    let len = vllm.max_model_len_that_fits();
    if len >= BLOCK_TOKENS {
        // At the configured utilization: the configured context if it fits, else what does.
        vllm_commands.push(vllm.command(name, vllm.gpu_memory_utilization, len));
    }
    let seqs = vllm.max_num_seqs_that_fit(base.block_size);
    if seqs > 0 {
        notes.push(format!(
            "at --gpu-memory-utilization {:.2} the KV cache holds {seqs} request(s) of {} tokens at once: with --max-num-seqs {seqs} no full-length request is preempted",
            vllm.gpu_memory_utilization, base.block_size
        ));
    }
    Ok(InferenceSuggestion {
        gpu: GpuSummary {
            name: budget.name.clone(),
            total_bytes: budget.total_bytes,
            usable_bytes: budget.usable_bytes,
            safety_pct: budget.safety_pct,
            safety_bytes: budget.safety_bytes,
        },
        margin_bytes: budget.margin_bytes,
        baseline_fits: base_verdict.fits,
        sharded,
        baseline: fit(&base, base_verdict.device.band.high, &ctx.model),
        largest_batch,
        largest_context_batch1,
        largest_context,
        vllm,
        vllm_commands,
        notes,
    })
}

/// transformers' inference on one GPU: the largest batch at the configured context, the longest
/// context at batch 1 and at the configured batch.
fn one_gpu_searches(
    ctx: &Ctx,
    base: &TrainConfig,
) -> Result<(Option<Fit>, Option<Fit>, Option<Fit>)> {
    let largest_batch = ctx.largest(&|b| {
        let mut c = base.clone();
        c.batch_size = b;
        c
    })?;
    let largest_context_batch1 = ctx.largest(&|t| {
        let mut c = with_context(base, t);
        c.batch_size = 1;
        c
    })?;
    let largest_context = if base.batch_size == 1 {
        largest_context_batch1.clone()
    } else {
        ctx.largest(&|t| with_context(base, t))?
    };
    Ok((largest_batch, largest_context_batch1, largest_context))
}

/// The report for people.
pub fn render(r: &InferenceSuggestion) -> String {
    use crate::units::human;
    use std::fmt::Write;
    let mut out = String::new();
    super::render::gpu_line(&mut out, &r.gpu, r.margin_bytes);
    let b = &r.baseline;
    let _ = writeln!(
        out,
        "Your inference{}: batch_size {} x block_size {} — peak {} on the device: {}",
        if r.sharded {
            " (transformers, the whole model on one GPU, for comparison)"
        } else {
            ""
        },
        b.batch_size,
        b.block_size,
        human(b.peak_device_bytes),
        if r.baseline_fits {
            "fits"
        } else {
            "does not fit"
        }
    );
    let _ = writeln!(out);
    let line = |out: &mut String, what: &str, f: &Option<Fit>| {
        let _ = match f {
            Some(f) => writeln!(
                out,
                "{what}: batch_size {} x block_size {} (peak {})\n  {}",
                f.batch_size,
                f.block_size,
                human(f.peak_device_bytes),
                f.command
            ),
            None => writeln!(out, "{what}: nothing fits, not even 1"),
        };
    };
    if !r.sharded {
        line(&mut out, "Largest batch at this context", &r.largest_batch);
        line(
            &mut out,
            "Longest context at batch 1",
            &r.largest_context_batch1,
        );
        line(
            &mut out,
            "Longest context at this batch",
            &r.largest_context,
        );
        let _ = writeln!(out);
    }
    for l in super::vllm::startup_lines(&r.vllm) {
        let _ = writeln!(out, "{l}");
    }
    for c in &r.vllm_commands {
        let _ = writeln!(out, "  {c}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
