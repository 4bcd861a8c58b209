//! The check report: phases, the peak in its three meanings, the verdict against the card,
//! the largest tensors at the peak and where the memory goes by category.

use crate::budget::{Budget, GpuProfile};
use crate::config::TrainConfig;
use crate::config::{Mode, Precision};
use crate::error::Result;
use crate::run::{Decisions, Run, Verdict};
use crate::sim::replay::live_blocks_at;
use crate::sim::timeline::EventKind;
use crate::sim::{Category, MemoryProfile, Phase, Timeline};
use serde::Serialize;

/// CUDA context and loaded kernels when no card is known: the middle of the 200-520 MiB that
/// PyTorch OOM messages imply on desktop and data-centre cards (shared/reference/README.md).
pub const DEFAULT_CONTEXT_BYTES: u64 = 400 << 20;

/// How many of the largest tensors alive at the peak the report lists.
pub const TOP_TENSORS: usize = 12;

impl Target {
    pub fn from_budget(b: &Budget) -> Target {
        Target {
            name: b.name.clone(),
            total_bytes: b.total_bytes,
            usable_bytes: b.usable_bytes,
            margin_bytes: b.margin_bytes,
            safety_pct: b.safety_pct,
            safety_bytes: b.safety_bytes,
            source: b.source,
            context_bytes: b.profile.context_bytes,
        }
    }
}

/// The card the run is checked against.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub total_bytes: u64,
    pub usable_bytes: u64,
    /// Everything kept free (`--margin` + `--safety`).
    pub margin_bytes: u64,
    /// `--safety`: percentage of the total kept free, and those bytes (inside margin_bytes).
    pub safety_pct: f64,
    pub safety_bytes: u64,
    /// "profile", "live", or "fake-nvml" (readings from VRAMPLAN_FAKE_NVML).
    pub source: crate::budget::BudgetSource,
    /// Memory the process holds outside the allocator (context, kernels).
    pub context_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: &'static str,
    pub peak_allocated_bytes: u64,
    pub end_allocated_bytes: u64,
    pub peak_reserved_bytes: u64,
    pub peak_device_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeakReport {
    pub phase: &'static str,
    pub allocated_bytes: u64,
    pub reserved_bytes: u64,
    pub device_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Categories {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub logits: u64,
    pub autocast_copies: u64,
    pub workspace: u64,
    pub other: u64,
    /// Inference only (0 in a training run).
    pub kv_cache: u64,
    /// Multi-GPU buffers (0 in a one-GPU run).
    pub communication: u64,
}

impl Categories {
    fn add(&mut self, c: Category, bytes: u64) {
        let slot = match c {
            Category::Parameters => &mut self.parameters,
            Category::Gradients => &mut self.gradients,
            Category::Optimizer => &mut self.optimizer,
            Category::Activations => &mut self.activations,
            Category::Logits => &mut self.logits,
            Category::AutocastCopies => &mut self.autocast_copies,
            Category::Workspace => &mut self.workspace,
            Category::Other => &mut self.other,
            Category::KvCache => &mut self.kv_cache,
            Category::Communication => &mut self.communication,
        };
        *slot += bytes;
    }

    pub fn get(&self, c: Category) -> u64 {
        match c {
            Category::Parameters => self.parameters,
            Category::Gradients => self.gradients,
            Category::Optimizer => self.optimizer,
            Category::Activations => self.activations,
            Category::Logits => self.logits,
            Category::AutocastCopies => self.autocast_copies,
            Category::Workspace => self.workspace,
            Category::Other => self.other,
            Category::KvCache => self.kv_cache,
            Category::Communication => self.communication,
        }
    }

    pub fn total(&self) -> u64 {
        Category::ALL.iter().map(|&c| self.get(c)).sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: &'static str,
    pub bytes: u64,
    pub category: &'static str,
    pub phase: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeReport {
    pub name: &'static str,
    /// The precision simulated (nanoGPT's default bf16 falls back to fp16 on cards without
    /// bf16; a written dtype is kept).
    pub dtype: &'static str,
    pub attention: &'static str,
    /// Inference: the KV cache's element type as simulated (after the card's bf16 fallback);
    /// null in training.
    pub kv_cache_dtype: Option<&'static str>,
    /// true when the figures are an upper bound rather than a prediction (torch.compile).
    pub upper_bound: bool,
    /// Whose semantics were simulated and how they were checked.
    pub semantics: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub config: TrainConfig,
    pub gpu: Option<Target>,
    pub runtime: RuntimeReport,
    /// Every choice the simulation was made under, with its source.
    pub decisions: Decisions,
    pub n_params: u64,
    pub phases: Vec<PhaseReport>,
    pub peak: PeakReport,
    pub first_overflow_phase: Option<&'static str>,
    pub categories: Categories,
    pub tensors: Vec<TensorReport>,
    /// None when no card was given: the figures come without a verdict.
    pub fits: Option<bool>,
    pub headroom_bytes: Option<i64>,
    /// The verdict with each figure's provenance and band (None: no card).
    pub verdict: Option<Verdict>,
    /// What `fits` and `headroom_bytes` judge: "simulation" (the simulated run's device peak,
    /// `verdict`), or "vllm_startup" for serving over several GPUs (vLLM's start-up on every
    /// rank: fits when it starts, headroom = the binding rank's KV-cache memory), where the
    /// simulated run (one GPU holding the whole model) is shown only for comparison.
    pub judged_by: &'static str,
    pub context_bytes: u64,
    /// Inference on a known card: what vLLM's start-up would size the KV cache to.
    pub vllm: Option<crate::plan::vllm::VllmBudget>,
    pub warnings: Vec<String>,
    /// Multi-GPU runs: the figures are one rank's (rank 0).
    pub ranks: Option<RanksReport>,
    /// Host memory the run keeps outside the GPU (an offloading engine's state, offloaded
    /// checkpoint inputs at their most); 0 without offload.
    pub host_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RanksReport {
    pub world_size: u64,
    pub parallelism: &'static str,
    pub rank: u64,
    /// gradient_accumulation_steps / world_size: the micro-steps each rank runs per step.
    pub micro_steps_per_rank: u64,
    /// Host memory one rank's offloading engine keeps (0 without offload; not GPU memory).
    pub host_bytes: u64,
}

/// Simulate `cfg` on the budget's card (None: figures without a verdict) and report.
pub fn build(cfg: &TrainConfig, budget: Option<&Budget>) -> Result<CheckReport> {
    let run = crate::run::run(cfg, budget.map(|b| &b.profile))?;
    let report = build_from(cfg, &run, budget);
    // The report keeps no reference to the Timeline: its tables serve the next simulation on
    // this thread (`sim::spare`) instead of going back to the system. On deep models they are
    // tens of megabytes, which the C allocator maps afresh for each run (page faults were a
    // third of a 1,000-layer check repeated in one process).
    crate::sim::spare::give_back(run.timeline);
    report
}

/// The report on a run already simulated (`check --svg` draws the same Run).
pub fn build_from(cfg: &TrainConfig, run: &Run, budget: Option<&Budget>) -> Result<CheckReport> {
    let gpu = budget.map(|b| &b.profile);
    let d = &run.decisions;
    let warnings = warnings(cfg, d, gpu);
    let context = budget.map_or(DEFAULT_CONTEXT_BYTES, |b| b.profile.context_bytes);
    let verdict = budget.map(|b| b.judge(run));
    let (_, _, _, device) = run.figures(context);
    let p = &run.profile;
    let phases = phase_reports(p, context);
    let peak = PeakReport {
        phase: p.peak_phase.key(),
        allocated_bytes: p.peak_allocated,
        reserved_bytes: p.peak_reserved,
        device_bytes: device.band.high,
    };
    let (categories, tensors) = peak_contents(&run.timeline, p);
    let vllm = match (budget, cfg.mode) {
        (Some(b), Mode::Inference) => {
            Some(crate::plan::vllm::vllm_startup(cfg, gpu, b.total_bytes)?)
        }
        _ => None,
    };
    // Serving over several GPUs: the simulated run is one GPU holding the whole model, which
    // is not what runs; vLLM's start-up on every rank is the verdict.
    let sharded = vllm.as_ref().filter(|v| v.sharded());
    // The model's parameter count (adapters included), whatever their storage on the device
    // (4-bit weights pack two per byte).
    let n_params = crate::model::n_params(cfg);
    Ok(CheckReport {
        config: cfg.clone(),
        gpu: budget.map(Target::from_budget),
        runtime: runtime_report(cfg, d),
        decisions: *d,
        n_params,
        phases,
        peak,
        first_overflow_phase: match sharded {
            Some(_) => None,
            None => verdict.and_then(|v| v.first_overflow).map(Phase::key),
        },
        categories,
        tensors,
        fits: sharded.map_or(verdict.map(|v| v.fits), |v| Some(v.error.is_none())),
        headroom_bytes: sharded.map_or(verdict.map(|v| v.headroom_bytes), |v| {
            Some(v.kv_cache_bytes)
        }),
        verdict,
        judged_by: if sharded.is_some() {
            "vllm_startup"
        } else {
            "simulation"
        },
        context_bytes: context,
        vllm,
        warnings,
        ranks: (cfg.world_size > 1 || cfg.parallelism != crate::config::Parallelism::Ddp).then(
            || RanksReport {
                world_size: cfg.world_size,
                parallelism: cfg.parallelism.as_str(),
                rank: 0,
                micro_steps_per_rank: crate::sim::parallel::micro_steps(cfg),
                host_bytes: run.timeline.host_bytes,
            },
        ),
        host_bytes: run.timeline.host_bytes,
    })
}

/// Only the phases the run went through: training's six, or inference's init, prefill and
/// decode; the device figure is reserved + the context.
fn phase_reports(p: &MemoryProfile, context: u64) -> Vec<PhaseReport> {
    Phase::ALL
        .iter()
        .filter(|&&ph| p.phase(ph).seen)
        .map(|&ph| {
            let s = p.phase(ph);
            PhaseReport {
                name: ph.key(),
                peak_allocated_bytes: s.peak_allocated,
                end_allocated_bytes: s.end_allocated,
                peak_reserved_bytes: s.peak_reserved,
                peak_device_bytes: s.peak_reserved.saturating_add(context),
            }
        })
        .collect()
}

/// The runtime the figures were simulated with, and its KV cache's dtype in inference.
fn runtime_report(cfg: &TrainConfig, d: &Decisions) -> RuntimeReport {
    RuntimeReport {
        name: d.runtime.value.as_str(),
        dtype: d.precision.value.as_str(),
        attention: d.attention.value.as_str(),
        kv_cache_dtype: (cfg.mode == Mode::Inference).then(|| {
            // The cache follows the weights' dtype, and the weights the precision simulated.
            let simulated = TrainConfig {
                dtype: d.precision.value,
                ..cfg.clone()
            };
            crate::run::infer::kv_dtype(&simulated).short()
        }),
        upper_bound: d.compile_fallback.is_some(),
        semantics: crate::sim::runtime::semantics(d.runtime.value),
    }
}

/// What the user should know about the decisions: a precision fallback or a dtype kept on a
/// card without it, compile simulated with eager rules, NCCL's buffers.
fn warnings(cfg: &TrainConfig, d: &Decisions, gpu: Option<&GpuProfile>) -> Vec<String> {
    let mut warnings = Vec::new();
    let precision = d.precision.value;
    let card = gpu.map_or("this card", |g| g.name.as_str());
    if precision != cfg.dtype {
        warnings.push(format!(
            "{card} has no bfloat16: nanoGPT's default dtype falls back to float16 there, and that is what is simulated"
        ));
    } else if precision == Precision::BFloat16 && gpu.is_some_and(|g| !g.bf16) {
        warnings.push(format!(
            "{card} has no bfloat16, but dtype = 'bfloat16' is written in the config: it is kept \
             and simulated as written (same bytes as float16); on this card PyTorch's autocast \
             either refuses bfloat16 or emulates it slowly; write dtype = 'float16' to run it natively"
        ));
    }
    if let Some(what) = d.compile_fallback {
        warnings.push(format!(
            "compile=True: {what} is simulated with eager PyTorch's rules, an upper bound — \
             the compile runtime's rules are derived for nanoGPT's GPT on one GPU or DDP"
        ));
    }
    warnings.extend(cfg.sliding_window_notes());
    warnings.extend(cfg.moe_notes());
    if cfg.world_size > 1 {
        // Their size depends on the topology NCCL detects (channels, NVLink SHARP), which no
        // profile describes: named, not guessed.
        warnings.push(
            "NCCL's own buffers are not in these figures: NCCL allocates them with cudaMalloc, \
             outside PyTorch's allocator, per channel and peer (about 9 MiB per connection with \
             the default protocols, far more with NVLink SHARP on NVSwitch systems) — keep \
             headroom for them"
                .to_string(),
        );
    }
    warnings
}

/// Category sums (of allocator blocks, so they add up to the allocated peak) and the largest
/// tensors alive at the peak event.
fn peak_contents(tl: &Timeline, p: &MemoryProfile) -> (Categories, Vec<TensorReport>) {
    let live = live_blocks_at(tl, p, p.peak_event);
    let mut cats = Categories::default();
    for &(t, block) in &live {
        cats.add(tl.tensors[t as usize].category, block);
    }
    let mut by_size: Vec<u32> = live.iter().map(|&(t, _)| t).collect();
    by_size.sort_by_key(|&t| std::cmp::Reverse(tl.tensors[t as usize].bytes));
    let tensors = by_size
        .into_iter()
        .take(TOP_TENSORS)
        .map(|t| {
            let r = &tl.tensors[t as usize];
            TensorReport {
                name: r.name.to_string(),
                shape: r.shape.dims().to_vec(),
                dtype: r.dtype.short(),
                bytes: r.bytes,
                category: r.category.key(),
                phase: r.phase.key(),
            }
        })
        .collect();
    (cats, tensors)
}

/// Event index where each tensor is born and dies (None: alive at the end) — for `explain`.
pub fn lifetime(tl: &Timeline, tensor: u32) -> (usize, Option<usize>) {
    let mut born = 0;
    let mut died = None;
    for (i, e) in tl.events.iter().enumerate() {
        if e.tensor == tensor {
            match e.kind {
                EventKind::Alloc => born = i,
                EventKind::Free => died = Some(i),
            }
        }
    }
    (born, died)
}
