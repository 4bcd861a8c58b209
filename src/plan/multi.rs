//! `suggest` over several GPUs: the smallest world size (powers of two up to the limit) at
//! which some parallelism fits, each candidate re-simulated as rank 0 of that run with the
//! largest per-rank batch that fits, and the line that launches it.
//!
//! Parallelisms are tried from the least communication to the most (DDP, ZeRO-1, ZeRO-2,
//! FSDP SHARD_GRAD_OP, FSDP FULL_SHARD, ZeRO-3); the tokens per optimizer step stay the
//! user's, with gradient_accumulation_steps a multiple of the world size (nanoGPT asserts it).

use super::batch::{max_batch, with_batch};
use super::command::command;
use super::ctx::Ctx;
use super::script::Script;
use crate::config::{ModelType, Parallelism, Precision, TrainConfig};
use crate::error::Result;
use serde::Serialize;
use serde_json::{json, Value};

/// The parallelisms, least communication first.
pub const ORDER: [Parallelism; 6] = [
    Parallelism::Ddp,
    Parallelism::Zero1,
    Parallelism::Zero2,
    Parallelism::FsdpGradOp,
    Parallelism::Fsdp,
    Parallelism::Zero3,
];

/// World sizes tried when the model does not fit one card and no --gpus was given.
pub const DEFAULT_MAX_GPUS: u64 = 8;

#[derive(Debug, Clone, Serialize)]
pub struct MultiCandidate {
    pub world_size: u64,
    pub parallelism: &'static str,
    pub config: TrainConfig,
    pub tokens_per_step: u64,
    pub peak_allocated_bytes: u64,
    /// One rank's device peak.
    pub peak_device_bytes: u64,
    pub launch: String,
    /// What the training script must change for this parallelism (nanoGPT's train.py has
    /// only DDP), or the Trainer's arguments.
    pub code_changes: Vec<String>,
    /// DeepSpeed's config file for the ZeRO candidates.
    pub ds_config: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MultiReport {
    pub max_gpus: u64,
    /// The world size planned for: the user's `--gpus N` exactly, else the smallest that fits.
    pub planned_world_size: u64,
    /// Every parallelism that fits at `planned_world_size`, least communication first.
    pub fitting: Vec<MultiCandidate>,
    /// The smallest world size at which some parallelism fits (1: one card already does);
    /// None when none up to `max_gpus` does.
    pub smallest_world_size: Option<u64>,
}

/// `cfg` over `world` ranks with `mode`, micro-batch `b` per rank, keeping `tokens` per step.
pub fn per_rank(
    cfg: &TrainConfig,
    world: u64,
    mode: Parallelism,
    b: u64,
    tokens: u64,
) -> TrainConfig {
    let mut c = with_batch(cfg, b, tokens);
    c.world_size = world;
    c.parallelism = mode;
    c.gradient_accumulation_steps = c.gradient_accumulation_steps.div_ceil(world) * world;
    c
}

/// Where to plan: `Exactly(n)` for the user's `--gpus n`, `Smallest(max)` when nothing fits
/// one card and the user named no count.
#[derive(Debug, Clone, Copy)]
pub enum Plan {
    Exactly(u64),
    Smallest(u64),
}

pub(super) fn search(
    base: &TrainConfig,
    ctx: &Ctx,
    tokens: u64,
    plan: Plan,
    one_card_fits: bool,
    script: &Script,
) -> Result<MultiReport> {
    let max_gpus = match plan {
        Plan::Exactly(n) | Plan::Smallest(n) => n,
    };
    // The smallest world size: powers of two below the limit, then the limit itself.
    let mut worlds: Vec<u64> = std::iter::successors(Some(2u64), |w| w.checked_mul(2))
        .take_while(|w| *w < max_gpus)
        .collect();
    worlds.push(max_gpus);
    let mut smallest = one_card_fits.then_some(1);
    let mut found_at = None;
    if smallest.is_none() {
        for &w in &worlds {
            if matches!(plan, Plan::Exactly(n) if w == n) {
                break;
            }
            let fitting = fits_at(base, ctx, tokens, w, script)?;
            if !fitting.is_empty() {
                smallest = Some(w);
                found_at = Some((w, fitting));
                break;
            }
        }
    }
    let (planned_world_size, fitting) = match plan {
        Plan::Exactly(n) => {
            let fitting = fits_at(base, ctx, tokens, n, script)?;
            if smallest.is_none() && !fitting.is_empty() {
                smallest = Some(n);
            }
            (n, fitting)
        }
        Plan::Smallest(max) => found_at.unwrap_or((max, Vec::new())),
    };
    Ok(MultiReport {
        max_gpus,
        planned_world_size,
        fitting,
        smallest_world_size: smallest,
    })
}

/// Every parallelism the run's framework can use that fits at `world` ranks, each at its
/// largest per-rank batch. The parallelisms are searched side by side (`parallel`), their
/// candidates kept in `ORDER`.
fn fits_at(
    base: &TrainConfig,
    ctx: &Ctx,
    tokens: u64,
    world: u64,
    script: &Script,
) -> Result<Vec<MultiCandidate>> {
    // Modes the run cannot take (LoRA under FSDP or ZeRO) are not candidates.
    let modes: Vec<Parallelism> = ORDER
        .into_iter()
        .filter(|&mode| super::convention::runs(base.framework, mode))
        .filter(|&mode| per_rank(base, world, mode, 1, tokens).validate().is_ok())
        .collect();
    let found = super::parallel::map(&modes, super::parallel::cores(), |&mode| {
        let make = |b: u64| per_rank(base, world, mode, b, tokens);
        // Beyond one micro-step per rank reaching the tokens, a larger batch only grows them.
        let cap = tokens.div_ceil(base.block_size.saturating_mul(world));
        let Some((b, peak)) = max_batch(ctx, &make, cap)? else {
            return Ok(None);
        };
        let config = make(b);
        Ok(Some(MultiCandidate {
            world_size: world,
            parallelism: mode.as_str(),
            tokens_per_step: config.tokens_per_step().unwrap_or(0),
            peak_allocated_bytes: peak.allocated.bytes,
            peak_device_bytes: peak.device.band.high,
            launch: launch(&config, base, script),
            code_changes: launch_code_changes(&config, base, script),
            ds_config: ds_config(&config),
            config,
        }))
    })?;
    Ok(found.into_iter().flatten().collect())
}

/// The launch line. nanoGPT's train.py starts its process group from torchrun's environment
/// (`ddp = int(os.environ.get('RANK', -1)) != -1`) and reads only its config file and
/// `--key=value` overrides, so every nanoGPT candidate launches with torchrun; the sharded ones
/// need the train.py change [`launch_code_changes`] names. A Trainer script launches with
/// accelerate (FSDP) or deepspeed (ZeRO), its arguments in the code changes.
pub fn launch(cfg: &TrainConfig, base: &TrainConfig, script: &Script) -> String {
    let w = cfg.world_size;
    // Megatron-LM: one data-parallel replica of degree-w tensor parallelism.
    if cfg.parallelism == Parallelism::Tp {
        return format!(
            "torchrun --nproc_per_node={w} pretrain_gpt.py --tensor-model-parallel-size {w} \
             --micro-batch-size {} --global-batch-size {} --seq-length {}",
            cfg.batch_size,
            cfg.batch_size
                .saturating_mul(cfg.gradient_accumulation_steps),
            cfg.block_size
        );
    }
    if let Some(line) = super::convention::launch(cfg, base, script) {
        return line;
    }
    if cfg.model_type == ModelType::Gpt2 {
        let single = command(cfg, base, script);
        let torchrun = format!("torchrun --standalone --nproc_per_node={w} train.py");
        return single.replacen("python train.py", &torchrun, 1);
    }
    let env = super::script::env_prefix(cfg, base);
    match cfg.parallelism {
        Parallelism::Fsdp | Parallelism::FsdpGradOp => format!(
            "{env}accelerate launch --num_processes {w} --use_fsdp --fsdp_sharding_strategy {} \
             --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP --mixed_precision {} train.py",
            if cfg.parallelism == Parallelism::Fsdp {
                "FULL_SHARD"
            } else {
                "SHARD_GRAD_OP"
            },
            match cfg.dtype {
                Precision::BFloat16 => "bf16",
                Precision::Float16 => "fp16",
                Precision::Float32 => "no",
            }
        ),
        Parallelism::Zero1 | Parallelism::Zero2 | Parallelism::Zero3 => {
            format!("{env}deepspeed --num_gpus {w} train.py")
        }
        Parallelism::Ddp | Parallelism::Tp => {
            format!("{env}torchrun --standalone --nproc_per_node={w} train.py")
        }
    }
}

/// What the script must change for `cfg`'s parallelism, beyond the single-GPU changes.
pub fn launch_code_changes(cfg: &TrainConfig, base: &TrainConfig, script: &Script) -> Vec<String> {
    let mut out = super::command::code_changes(cfg, base);
    // A framework's own file: its keys, accumulation as that framework counts it.
    if let Some(changes) = super::convention::file_changes(cfg, base, script) {
        out.insert(0, changes);
        return out;
    }
    if cfg.model_type != ModelType::Gpt2 {
        // TrainingArguments count accumulation per process, as ds_config.json does.
        let mut args = super::hf_args::command(cfg, base);
        if matches!(
            cfg.parallelism,
            Parallelism::Zero1 | Parallelism::Zero2 | Parallelism::Zero3
        ) {
            args = args.replacen(
                "TrainingArguments(",
                "TrainingArguments(deepspeed=\"ds_config.json\", ",
                1,
            );
        }
        out.insert(0, format!("train.py: {args}"));
        return out;
    }
    let sharded = match cfg.parallelism {
        Parallelism::Fsdp | Parallelism::FsdpGradOp => Some(format!(
            "train.py: nanoGPT has only DDP — replace model = DDP(model, \
             device_ids=[ddp_local_rank]) with FSDP(model, \
             sharding_strategy=ShardingStrategy.{}, auto_wrap_policy=functools.partial(\
             transformer_auto_wrap_policy, transformer_layer_cls={{Block}}), \
             device_id=ddp_local_rank) and build the optimizer after wrapping (FSDP flattens the \
             parameters)",
            if cfg.parallelism == Parallelism::Fsdp {
                "FULL_SHARD"
            } else {
                "SHARD_GRAD_OP"
            }
        )),
        Parallelism::Zero1 | Parallelism::Zero2 | Parallelism::Zero3 => Some(
            "train.py: nanoGPT has only DDP — replace model = DDP(...) with model, optimizer, \
             _, _ = deepspeed.initialize(model=model, optimizer=optimizer, \
             config='ds_config.json'), then model.backward(loss) and model.step() in place of \
             the scaler, clip_grad_norm_, optimizer.step and zero_grad (pip install deepspeed)"
                .to_string(),
        ),
        Parallelism::Ddp | Parallelism::Tp => None,
    };
    out.splice(0..0, sharded);
    out
}

/// ds_config.json for a ZeRO candidate: DeepSpeed's batch keys are per GPU and per rank.
pub fn ds_config(cfg: &TrainConfig) -> Option<Value> {
    let stage = match cfg.parallelism {
        Parallelism::Zero1 => 1,
        Parallelism::Zero2 => 2,
        Parallelism::Zero3 => 3,
        _ => return None,
    };
    Some(json!({
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps / cfg.world_size.max(1),
        "bf16": { "enabled": cfg.dtype == Precision::BFloat16 },
        "fp16": { "enabled": cfg.dtype == Precision::Float16 },
        "zero_optimization": { "stage": stage },
    }))
}
