//! `suggest`'s answer in the convention of the framework the user came with: the keys to
//! change in their own file (JSON or YAML, the framework's key names, accumulation counted as
//! the framework counts it), and the line that launches it over several GPUs.

use super::script::Script;
use crate::config::{
    Framework, LossKind, OptimizerKind, Parallelism, Precision, Quantization, TrainConfig,
};

/// A key of the user's file and its new value, both as the framework spells them.
type Change = (&'static str, String);

/// The changes from `base` to `cfg` in the framework's file, e.g.
/// `run.yml: micro_batch_size: 4, gradient_accumulation_steps: 2`. None for nanoGPT, and for a
/// Trainer run with no file (the caller prints `TrainingArguments(...)`).
pub fn file_changes(cfg: &TrainConfig, base: &TrainConfig, script: &Script) -> Option<String> {
    let path = script.config_path.as_deref()?;
    if cfg.framework == Framework::NanoGpt || !is_framework_file(path) {
        return None;
    }
    let json = path.to_ascii_lowercase().ends_with(".json");
    let changes = changes(cfg, base);
    let body = if changes.is_empty() {
        "no change".to_string()
    } else {
        let items: Vec<String> = changes
            .iter()
            .map(|(k, v)| {
                if json {
                    format!("\"{k}\": {}", json_value(v))
                } else {
                    format!("{k}: {v}")
                }
            })
            .collect();
        items.join(", ")
    };
    Some(format!(
        "{}{path}: {body}",
        super::script::env_prefix(cfg, base)
    ))
}

fn is_framework_file(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p.ends_with(".json") || p.ends_with(".yaml") || p.ends_with(".yml")
}

/// YAML scalars as JSON: booleans and numbers as they are, names quoted.
fn json_value(v: &str) -> String {
    if v == "true" || v == "false" || v == "null" || v.parse::<f64>().is_ok() {
        v.to_string()
    } else {
        format!("\"{}\"", v.trim_matches('\''))
    }
}

/// The keys that differ, in the framework's names: the shape of a step, then the memory
/// knobs, the libraries that swap a component, and attention and sharding.
fn changes(cfg: &TrainConfig, base: &TrainConfig) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    if cfg.framework == Framework::NanoGpt {
        return out;
    }
    for part in [
        step_shape,
        memory_knobs,
        swapped_components,
        attention_and_sharding,
    ] {
        part(cfg, base, &mut out);
    }
    out
}

/// Batch, accumulation (as the framework counts it), sequence length and devices.
fn step_shape(cfg: &TrainConfig, base: &TrainConfig, out: &mut Vec<Change>) {
    let f = cfg.framework;
    let accum = cfg.accumulation_as_counted();
    let batch_or_accum = cfg.batch_size != base.batch_size
        || accum != base.accumulation_as_counted()
        || cfg.world_size != base.world_size;
    match f {
        Framework::HfTrainer => {
            if batch_or_accum {
                out.push(("per_device_train_batch_size", cfg.batch_size.to_string()));
                out.push(("gradient_accumulation_steps", accum.to_string()));
            }
            if cfg.block_size != base.block_size {
                out.push(("max_length", cfg.block_size.to_string()));
            }
        }
        Framework::Axolotl => {
            if batch_or_accum {
                out.push(("micro_batch_size", cfg.batch_size.to_string()));
                out.push(("gradient_accumulation_steps", accum.to_string()));
            }
            if cfg.block_size != base.block_size {
                out.push(("sequence_len", cfg.block_size.to_string()));
            }
        }
        Framework::Torchtune => {
            if batch_or_accum {
                out.push(("batch_size", cfg.batch_size.to_string()));
                out.push(("gradient_accumulation_steps", accum.to_string()));
            }
            if cfg.block_size != base.block_size {
                out.push(("tokenizer.max_seq_len", cfg.block_size.to_string()));
            }
        }
        Framework::Litgpt => {
            if batch_or_accum {
                // LitGPT's global batch in samples: micro-batch x global micro-steps.
                out.push(("train.micro_batch_size", cfg.batch_size.to_string()));
                out.push((
                    "train.global_batch_size",
                    cfg.batch_size
                        .saturating_mul(cfg.gradient_accumulation_steps)
                        .to_string(),
                ));
            }
            if cfg.block_size != base.block_size {
                out.push(("train.max_seq_length", cfg.block_size.to_string()));
            }
            if cfg.world_size != base.world_size {
                out.push(("devices", cfg.world_size.to_string()));
            }
        }
        Framework::NanoGpt => {}
    }
}

/// The eval batch, activation checkpointing and the precision.
fn memory_knobs(cfg: &TrainConfig, base: &TrainConfig, out: &mut Vec<Change>) {
    let f = cfg.framework;
    let tt = f == Framework::Torchtune;
    if cfg.eval_batch_size != base.eval_batch_size {
        if let Some(b) = cfg.eval_batch_size {
            let key = if f == Framework::HfTrainer {
                "per_device_eval_batch_size"
            } else {
                "eval_batch_size"
            };
            out.push((key, b.to_string()));
        }
    }
    if cfg.activation_checkpointing && !base.activation_checkpointing {
        let key = if tt {
            "enable_activation_checkpointing"
        } else {
            "gradient_checkpointing"
        };
        out.push((key, "true".into()));
    }
    if cfg.dtype != base.dtype {
        match (f, cfg.dtype) {
            (Framework::Torchtune, Precision::BFloat16) => out.push(("dtype", "bf16".into())),
            (Framework::Litgpt, Precision::BFloat16) => {
                out.push(("precision", "bf16-mixed".into()))
            }
            (_, Precision::BFloat16) => out.push(("bf16", "true".into())),
            (_, Precision::Float16) => out.push(("fp16", "true".into())),
            (_, Precision::Float32) => {}
        }
    }
}

/// The 8-bit optimizer, the chunked loss and 4-bit weights, each the framework's component.
fn swapped_components(cfg: &TrainConfig, base: &TrainConfig, out: &mut Vec<Change>) {
    let f = cfg.framework;
    if cfg.optimizer != base.optimizer && cfg.optimizer == OptimizerKind::AdamW8bit {
        match f {
            Framework::HfTrainer => out.push(("optim", "adamw_bnb_8bit".into())),
            Framework::Axolotl => out.push(("optimizer", "adamw_bnb_8bit".into())),
            Framework::Torchtune => out.push((
                "optimizer._component_",
                "bitsandbytes.optim.AdamW8bit".into(),
            )),
            Framework::Litgpt => out.push(("optimizer", "bitsandbytes.optim.AdamW8bit".into())),
            Framework::NanoGpt => {}
        }
    }
    if cfg.loss == LossKind::Liger && base.loss != LossKind::Liger {
        match f {
            Framework::HfTrainer => out.push(("use_liger_kernel", "true".into())),
            Framework::Axolotl => out.push(("liger_fused_linear_cross_entropy", "true".into())),
            _ => {}
        }
    }
    if cfg.loss == LossKind::Chunked && base.loss != LossKind::Chunked && f == Framework::Torchtune
    {
        out.push((
            "loss._component_",
            "torchtune.modules.loss.CEWithChunkedOutputLoss".into(),
        ));
    }
    if cfg.quantization == Quantization::Nf4 && base.quantization != Quantization::Nf4 {
        match f {
            Framework::HfTrainer => out.push(("load_in_4bit", "true".into())),
            Framework::Axolotl => {
                out.push(("adapter", "qlora".into()));
                out.push(("load_in_4bit", "true".into()));
            }
            Framework::Torchtune => out.push((
                "model._component_",
                "the qlora_ builder of your model".into(),
            )),
            Framework::Litgpt => out.push(("quantize", "bnb.nf4-dq".into())),
            Framework::NanoGpt => {}
        }
    }
}

/// SDPA attention and the sharding engine (leaving DeepSpeed drops the file's ds_config).
fn attention_and_sharding(cfg: &TrainConfig, base: &TrainConfig, out: &mut Vec<Change>) {
    let f = cfg.framework;
    let (tt, lit) = (f == Framework::Torchtune, f == Framework::Litgpt);
    if cfg.flash && !base.flash && !tt && !lit {
        let (k, v) = if f == Framework::Axolotl {
            ("sdp_attention", "true")
        } else {
            ("attn_implementation", "sdpa")
        };
        out.push((k, v.into()));
    }
    if cfg.parallelism != base.parallelism {
        let zero = |p: Parallelism| {
            matches!(
                p,
                Parallelism::Zero1 | Parallelism::Zero2 | Parallelism::Zero3
            )
        };
        // Leaving DeepSpeed: the file's own ds_config must go.
        if zero(base.parallelism)
            && !zero(cfg.parallelism)
            && matches!(f, Framework::HfTrainer | Framework::Axolotl)
        {
            out.push(("deepspeed", "null".into()));
        }
        match (f, cfg.parallelism) {
            (Framework::HfTrainer, Parallelism::Fsdp) => {
                out.push(("fsdp", "full_shard auto_wrap".into()))
            }
            (Framework::HfTrainer, Parallelism::FsdpGradOp) => {
                out.push(("fsdp", "shard_grad_op auto_wrap".into()))
            }
            (Framework::Axolotl, Parallelism::Fsdp) => {
                out.push(("fsdp", "[full_shard, auto_wrap]".into()))
            }
            (Framework::Axolotl, Parallelism::FsdpGradOp) => {
                out.push(("fsdp", "[shard_grad_op, auto_wrap]".into()))
            }
            (
                Framework::HfTrainer | Framework::Axolotl,
                Parallelism::Zero1 | Parallelism::Zero2 | Parallelism::Zero3,
            ) => out.push(("deepspeed", "ds_config.json".into())),
            _ => {}
        }
    }
}

/// Whether the framework can run `mode` at all (torchtune's distributed recipes and LitGPT's
/// `--devices N` shard with FSDP; neither runs DeepSpeed).
pub fn runs(framework: Framework, mode: Parallelism) -> bool {
    match framework {
        Framework::Torchtune | Framework::Litgpt => mode == Parallelism::Fsdp,
        _ => true,
    }
}

/// The launch line of a framework run over `cfg.world_size` GPUs; None for nanoGPT and a
/// Trainer script without a file (the caller keeps its torchrun / accelerate lines).
pub fn launch(cfg: &TrainConfig, base: &TrainConfig, script: &Script) -> Option<String> {
    let path = script
        .config_path
        .as_deref()
        .filter(|p| is_framework_file(p))?;
    let w = cfg.world_size;
    let env = super::script::env_prefix(cfg, base);
    Some(match cfg.framework {
        Framework::NanoGpt => return None,
        // The Trainer reads its arguments in the user's script; accelerate starts the ranks.
        Framework::HfTrainer => {
            format!("{env}accelerate launch --num_processes {w} train.py {path}")
        }
        Framework::Axolotl => {
            format!("{env}accelerate launch --num_processes {w} -m axolotl.cli.train {path}")
        }
        Framework::Torchtune => {
            let recipe = if cfg.lora_rank > 0 {
                "lora_finetune_distributed"
            } else {
                "full_finetune_distributed"
            };
            format!("{env}tune run --nproc_per_node {w} {recipe} --config {path}")
        }
        Framework::Litgpt => {
            let method = if cfg.lora_rank > 0 { "lora" } else { "full" };
            format!("{env}litgpt finetune {method} --config {path} --devices {w}")
        }
    })
}
