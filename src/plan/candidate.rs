//! What `suggest` reports: each candidate config with its peak, speed and the command that
//! runs it, and how a config the search found becomes one.

use super::command::{code_changes, command};
use super::knobs::KnobId;
use super::script::Script;
use super::speed::tokens_per_second;
use crate::budget::GpuProfile;
use crate::config::TrainConfig;
use crate::run::Verdict;
use serde::Serialize;
use serde_json::{Map, Value};

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

/// How a found config becomes a Candidate: what it is compared with and how it is printed.
pub(super) struct Found<'a> {
    pub(super) base: &'a TrainConfig,
    pub(super) gpu: &'a GpuProfile,
    pub(super) script: &'a Script,
    pub(super) base_speed: Option<f64>,
}

impl Found<'_> {
    pub(super) fn candidate(
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
