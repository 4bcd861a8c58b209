//! The config files fine-tuning users already have, read in their framework's own terms:
//! Hugging Face `TrainingArguments` / TRL `SFTConfig` (JSON or YAML, the keys
//! `TrainingArguments.to_dict()` writes), axolotl YAML, torchtune recipe YAML, LitGPT finetune
//! YAML, and beside them a DeepSpeed `ds_config.json` and an `accelerate config` YAML.
//!
//! Each file becomes one layer of assignments in vramplan's keys, on top of its framework's
//! defaults ([`defaults`]) and under the command line's overrides, so everything after this
//! module is the one pipeline every config goes through (`apply`). A key that changes memory
//! and that the simulator cannot represent is an error naming it; a key that does not change
//! memory is ignored and listed with `--verbose`; where a framework's mechanism is mapped onto
//! the closest one the simulator has, a note says so.

mod accelerate;
mod axolotl;
mod deepspeed;
mod doc;
mod fsdp;
mod hf_trainer;
mod litgpt;
mod load;
mod optim;
mod torchtune;

pub(crate) use doc::{Doc, Mapped};
pub use load::{load_sources, Sources};

use super::value::{Assignment, Origin, Rhs, Value};
use super::Framework;
use crate::error::{Error, Result};
use std::path::Path;

/// What kind of file a framework config is, told by its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Trainer,
    Axolotl,
    Torchtune,
    Litgpt,
    DeepSpeed,
    Accelerate,
}

/// The file's kind by extension and content; None for a nanoGPT .py or a flat TOML file.
pub fn detect(name: &str, text: &str) -> Option<Kind> {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("json" | "yaml" | "yml")) {
        return None;
    }
    let doc = Doc::parse(name, text).ok()?;
    Some(doc::kind_of(&doc))
}

/// The framework whose semantics a kind of file brings (DeepSpeed and accelerate configs only
/// complete another file).
pub fn framework_of(kind: Kind) -> Framework {
    match kind {
        Kind::Axolotl => Framework::Axolotl,
        Kind::Torchtune => Framework::Torchtune,
        Kind::Litgpt => Framework::Litgpt,
        Kind::Trainer | Kind::DeepSpeed | Kind::Accelerate => Framework::HfTrainer,
    }
}

/// A framework file as vramplan's layers: its framework, the model it names (a preset name or
/// a path, with where it was named), and its assignments.
pub(crate) fn map_file(name: &str, text: &str) -> Result<(Framework, Mapped)> {
    let doc = Doc::parse(name, text)?;
    let kind = doc::kind_of(&doc);
    let mapped = match kind {
        Kind::Trainer => hf_trainer::map(&doc)?,
        Kind::Axolotl => axolotl::map(&doc)?,
        Kind::Torchtune => torchtune::map(&doc)?,
        Kind::Litgpt => litgpt::map(&doc)?,
        Kind::DeepSpeed => {
            return Err(Error::new(format!(
                "{name}: this is a DeepSpeed config (zero_optimization, train_micro_batch_size_per_gpu): pass it as --deepspeed {name} beside the training config (or with --model NAME)"
            )))
        }
        Kind::Accelerate => {
            return Err(Error::new(format!(
                "{name}: this is an `accelerate config` file (distributed_type, num_processes): pass it as --accelerate-config {name} beside the training config (or with --model NAME)"
            )))
        }
    };
    Ok((framework_of(kind), mapped))
}

/// A `--deepspeed ds_config.json` as a layer.
pub(crate) fn map_deepspeed(name: &str, text: &str) -> Result<Mapped> {
    deepspeed::map(&Doc::parse(name, text)?)
}

/// An `--accelerate-config FILE.yaml` as a layer.
pub(crate) fn map_accelerate(name: &str, text: &str) -> Result<Mapped> {
    accelerate::map(&Doc::parse(name, text)?)
}

/// The framework's defaults for the keys a file leaves out, each with its source. nanoGPT's
/// are TrainConfig's own (train.py's globals), so it has none here.
pub(crate) fn defaults(framework: Framework) -> Vec<Assignment> {
    let whose = match framework {
        Framework::NanoGpt => return Vec::new(),
        Framework::HfTrainer => "the Trainer",
        Framework::Axolotl => "axolotl",
        Framework::Torchtune => "torchtune",
        Framework::Litgpt => "LitGPT",
    };
    let int = |v: u64| Value::Int(v.into());
    // What every one of these runs shares, unlike nanoGPT's train.py:
    // - transformers 4.57 training_args.py, TrainingArguments: gradient_accumulation_steps = 1,
    //   torch_compile = False, bf16 = fp16 = False (fp32 weights and math), optim
    //   "adamw_torch" ("adamw_torch_fused" with torch >= 2.8), eval_strategy = "no",
    //   weight_decay = 0.0, max_grad_norm = 1.0; the model is loaded with
    //   attn_implementation "sdpa" (PreTrainedModel._autoset_attn_implementation).
    // - axolotl builds a Trainer with its own defaults on top (micro_batch_size 1, no eval
    //   without val_set_size); torchtune's recipes (recipes/lora_finetune_single_device.py,
    //   full_finetune_single_device.py: cfg.get("compile", False),
    //   cfg.get("gradient_accumulation_steps", 1), cfg.get("clip_grad_norm", None)) and LitGPT's
    //   finetune/lora.py (no compile, TrainArgs.max_norm None) neither compile nor accumulate
    //   unless asked.
    // "No eval" is eval_interval past max_iters: no estimate_loss() after a training step; and
    // a framework other than nanoGPT never evaluates before training (src/run/train.rs
    // `schedule`).
    let mut out = vec![
        ("framework", Value::Str(framework.as_str().into())),
        ("gradient_accumulation_steps", int(1)),
        ("compile", Value::Bool(false)),
        ("dtype", Value::Str("float32".into())),
        ("optimizer", Value::Str("adamw".into())),
        (
            "eval_interval",
            int(super::TrainConfig::default().max_iters + 1),
        ),
        ("weight_decay", Value::Float(0.0)),
        ("dropout", Value::Float(0.0)),
        ("flash", Value::Bool(true)),
    ];
    match framework {
        // TrainingArguments.per_device_train_batch_size = 8; SFTConfig.max_length = 1024.
        Framework::HfTrainer => {
            out.push(("batch_size", int(8)));
            out.push(("block_size", int(1024)));
            out.push(("grad_clip", Value::Float(1.0)));
        }
        // axolotl's schema: micro_batch_size 1, sequence_len 512, max_grad_norm (Trainer's) 1.0.
        Framework::Axolotl => {
            out.push(("batch_size", int(1)));
            out.push(("block_size", int(512)));
            out.push(("grad_clip", Value::Float(1.0)));
        }
        // torchtune: clip_grad_norm None; LitGPT: TrainArgs.max_norm None, micro_batch_size 1.
        Framework::Torchtune => out.push(("grad_clip", Value::Float(0.0))),
        Framework::Litgpt => {
            out.push(("grad_clip", Value::Float(0.0)));
            out.push(("batch_size", int(1)));
        }
        Framework::NanoGpt => {}
    }
    out.into_iter()
        .map(|(k, v)| Assignment {
            key: k.to_string(),
            rhs: Rhs::Known(v),
            origin: Origin::Default(whose.to_string()),
        })
        .collect()
}

/// Frameworks that count accumulation per rank write per-rank counts in every layer (their
/// files and the user's overrides alike); TrainConfig counts over all ranks as nanoGPT does.
/// Convert each written count once, with the world size the layers end with.
pub(crate) fn accumulation_to_global(framework: Framework, assignments: &mut [Assignment]) {
    if !framework.accumulation_per_rank() {
        return;
    }
    let world = assignments
        .iter()
        .rev()
        .find_map(|a| match (&a.key[..], &a.rhs) {
            ("world_size", Rhs::Known(Value::Int(w))) if *w > 0 => Some(*w),
            _ => None,
        })
        .unwrap_or(1);
    for a in assignments.iter_mut() {
        if a.key == "gradient_accumulation_steps" {
            if let Rhs::Known(Value::Int(n)) = &mut a.rhs {
                *n = n.saturating_mul(world);
            }
        }
    }
}

/// The framework an assignment list ends with (the last `framework` key), nanoGPT if none.
pub(crate) fn framework_in(assignments: &[Assignment]) -> Framework {
    assignments
        .iter()
        .rev()
        .find_map(|a| match (&a.key[..], &a.rhs) {
            ("framework", Rhs::Known(Value::Str(s))) => {
                Framework::ALL.iter().copied().find(|f| f.as_str() == s)
            }
            _ => None,
        })
        .unwrap_or_default()
}
