//! The check report: phases, the peak in its three meanings, the verdict against the card,
//! the largest tensors at the peak and where the memory goes by category.

use crate::budget::GpuProfile;
use crate::config::TrainConfig;
use crate::config::{Mode, Precision};
use crate::error::Result;
use crate::sim::replay::live_blocks_at;
use crate::sim::runtime::{effective_precision, RuntimeKind};
use crate::sim::timeline::EventKind;
use crate::sim::{
    replay, simulate, simulate_inference, Category, MemoryProfile, Phase, Runtime, Timeline,
};
use serde::Serialize;

/// CUDA context and loaded kernels when no card is known: the middle of the 200-520 MiB that
/// PyTorch OOM messages imply on desktop and data-centre cards (shared/reference/README.md).
pub const DEFAULT_CONTEXT_BYTES: u64 = 400 << 20;

/// How many of the largest tensors alive at the peak the report lists.
pub const TOP_TENSORS: usize = 12;

impl Target {
    pub fn from_budget(b: &crate::budget::Budget) -> Target {
        Target {
            name: b.name.clone(),
            total_bytes: b.total_bytes,
            usable_bytes: b.usable_bytes,
            margin_bytes: b.margin_bytes,
            safety_pct: b.safety_pct,
            safety_bytes: b.safety_bytes,
            source: match b.source {
                crate::budget::BudgetSource::Profile => "profile",
                crate::budget::BudgetSource::Live => "live",
            },
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
    /// "profile" or "live".
    pub source: &'static str,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub config: TrainConfig,
    pub gpu: Option<Target>,
    pub runtime: RuntimeReport,
    pub n_params: u64,
    pub phases: Vec<PhaseReport>,
    pub peak: PeakReport,
    pub first_overflow_phase: Option<&'static str>,
    pub categories: Categories,
    pub tensors: Vec<TensorReport>,
    /// None when no card was given: the figures come without a verdict.
    pub fits: Option<bool>,
    pub headroom_bytes: Option<i64>,
    pub context_bytes: u64,
    /// Inference on a known card: what vLLM's start-up would size the KV cache to.
    pub vllm: Option<crate::plan::vllm::VllmBudget>,
    pub warnings: Vec<String>,
    /// Multi-GPU runs: the figures are one rank's (rank 0).
    pub ranks: Option<RanksReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RanksReport {
    pub world_size: u64,
    pub parallelism: &'static str,
    pub rank: u64,
    /// gradient_accumulation_steps / world_size: the micro-steps each rank runs per step.
    pub micro_steps_per_rank: u64,
}

/// Everything a front-end needs from one simulation.
pub struct Simulated {
    pub runtime: Runtime,
    pub timeline: Timeline,
    pub profile: MemoryProfile,
}

/// Simulate `cfg` as PyTorch would run it on `gpu` (architecture decides the workspaces).
pub fn run_sim(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Result<Simulated> {
    let runtime = Runtime::pytorch(cfg, gpu);
    let mut sim_cfg = cfg.clone();
    sim_cfg.dtype = effective_precision(cfg, gpu);
    let timeline = match cfg.mode {
        Mode::Train => simulate(&sim_cfg, runtime)?,
        Mode::Inference => simulate_inference(&sim_cfg, runtime)?,
    };
    let profile = replay(&timeline, runtime.expandable_segments);
    Ok(Simulated {
        runtime,
        timeline,
        profile,
    })
}

/// Simulate and judge against `target` (None: figures without a verdict).
pub fn build(
    cfg: &TrainConfig,
    gpu: Option<&GpuProfile>,
    target: Option<Target>,
) -> Result<CheckReport> {
    let sim = run_sim(cfg, gpu)?;
    let mut warnings = Vec::new();
    let precision = effective_precision(cfg, gpu);
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
    if let Some(what) = crate::sim::runtime::compile_fallback(cfg) {
        warnings.push(format!(
            "compile=True: {what} is simulated with eager PyTorch's rules, an upper bound — \
             the compile runtime's rules are derived for nanoGPT's GPT on one GPU or DDP"
        ));
    }
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
    let context = target
        .as_ref()
        .map_or(DEFAULT_CONTEXT_BYTES, |t| t.context_bytes);
    let p = &sim.profile;
    // Only the phases the run went through: training's six, or inference's init, prefill and
    // decode.
    let phases: Vec<PhaseReport> = Phase::ALL
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
        .collect();
    let reserved = p
        .peak_reserved
        .max(p.phase(Phase::EvalAfterStep).peak_reserved);
    let peak = PeakReport {
        phase: p.peak_phase.key(),
        allocated_bytes: p.peak_allocated,
        reserved_bytes: p.peak_reserved,
        device_bytes: reserved.saturating_add(context),
    };
    let (fits, headroom, first_overflow) = match &target {
        Some(t) => {
            let headroom = t.usable_bytes as i128 - peak.device_bytes as i128;
            let first = phases
                .iter()
                .find(|ph| ph.peak_device_bytes > t.usable_bytes)
                .map(|ph| ph.name);
            (
                Some(headroom >= 0),
                Some(headroom.clamp(i64::MIN as i128, i64::MAX as i128) as i64),
                first,
            )
        }
        None => (None, None, None),
    };
    let (categories, tensors) = peak_contents(&sim.timeline, p);
    let vllm = match (&target, cfg.mode) {
        (Some(t), Mode::Inference) => {
            Some(crate::plan::vllm::vllm_startup(cfg, gpu, t.total_bytes)?)
        }
        _ => None,
    };
    // The model's parameter count (adapters included), whatever their storage on the device
    // (4-bit weights pack two per byte).
    let n_params = crate::model::n_params(cfg);
    Ok(CheckReport {
        config: cfg.clone(),
        gpu: target,
        runtime: RuntimeReport {
            name: match sim.runtime.kind {
                RuntimeKind::PytorchEager => "pytorch",
                RuntimeKind::PytorchCompile => "pytorch-compile",
                RuntimeKind::Candle => "candle",
            },
            dtype: precision.as_str(),
            attention: match (cfg.flash, precision != crate::config::Precision::Float32) {
                (false, _) if cfg.model_type != crate::config::ModelType::Gpt2 => "eager",
                (false, _) => "manual",
                (true, true) if sim.runtime.flash_attention => "flash",
                // Half on a card older than sm80: no flash kernel (see Runtime::flash_attention).
                (true, true) if cfg.kv_heads() != cfg.n_head => "math",
                (true, true) => "memory-efficient",
                // fp32 with grouped-query attention: SDPA's math kernel.
                (true, false) if cfg.kv_heads() != cfg.n_head => "math",
                (true, false) => "memory-efficient",
            },
            kv_cache_dtype: (cfg.mode == Mode::Inference).then(|| {
                // The cache follows the weights' dtype, and the weights the precision simulated.
                let simulated = TrainConfig {
                    dtype: precision,
                    ..cfg.clone()
                };
                crate::sim::infer::kv_dtype(&simulated).short()
            }),
            upper_bound: crate::sim::runtime::compile_fallback(cfg).is_some(),
        },
        n_params,
        phases,
        peak,
        first_overflow_phase: first_overflow,
        categories,
        tensors,
        fits,
        headroom_bytes: headroom,
        context_bytes: context,
        vllm,
        warnings,
        ranks: (cfg.world_size > 1 || cfg.parallelism != crate::config::Parallelism::Ddp).then(
            || RanksReport {
                world_size: cfg.world_size,
                parallelism: cfg.parallelism.as_str(),
                rank: 0,
                micro_steps_per_rank: crate::sim::parallel::micro_steps(cfg),
            },
        ),
    })
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
