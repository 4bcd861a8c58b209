//! How to run a suggested config with Hugging Face's Trainer (or TRL's SFTTrainer, which takes
//! the same arguments): the `TrainingArguments` that differ, and the loading and PEFT changes
//! that have no argument. nanoGPT's runs get train.py command lines instead (knobs.rs).

use crate::config::{LossKind, OptimizerKind, Precision, TrainConfig};

/// `TrainingArguments(...)` for `cfg`, with the environment prefix it needs. The Trainer's
/// gradient_accumulation_steps is per process (TrainConfig's is over all ranks).
pub fn command(cfg: &TrainConfig, base: &TrainConfig) -> String {
    let mut args = vec![
        format!("per_device_train_batch_size={}", cfg.batch_size),
        format!(
            "gradient_accumulation_steps={}",
            cfg.gradient_accumulation_steps / cfg.world_size.max(1)
        ),
    ];
    if cfg.eval_batch() != cfg.batch_size {
        args.push(format!("per_device_eval_batch_size={}", cfg.eval_batch()));
    }
    if cfg.activation_checkpointing {
        args.push("gradient_checkpointing=True".into());
    }
    // Pure half precision is the model loaded in its dtype with neither flag (no autocast).
    match cfg.dtype {
        _ if cfg.precision_mode == crate::config::PrecisionMode::Pure => {}
        Precision::BFloat16 => args.push("bf16=True".into()),
        Precision::Float16 => args.push("fp16=True".into()),
        Precision::Float32 => {}
    }
    args.push(
        match cfg.optimizer {
            OptimizerKind::AdamW => "optim=\"adamw_torch_fused\"",
            OptimizerKind::AdamWForeach => "optim=\"adamw_torch\"",
            // transformers has no name for torch's foreach=False AdamW (Trainer passes no
            // optim_args to torch.optim.AdamW): adamw_torch is the nearest.
            OptimizerKind::AdamWSingle => "optim=\"adamw_torch\"",
            OptimizerKind::AdamW8bit => "optim=\"adamw_bnb_8bit\"",
            OptimizerKind::PagedAdamW8bit => "optim=\"paged_adamw_8bit\"",
            OptimizerKind::PagedAdamW => "optim=\"paged_adamw_32bit\"",
            OptimizerKind::Adafactor => "optim=\"adafactor\"",
            OptimizerKind::Lion => "optim=\"lion_32bit\"",
            OptimizerKind::Sgd => "optim=\"sgd\"",
        }
        .into(),
    );
    if cfg.loss == LossKind::Liger {
        // Liger's fused linear cross-entropy never materialises the full logits.
        args.push("use_liger_kernel=True".into());
    }
    let mut cmd = super::script::env_prefix(cfg, base).to_string();
    cmd.push_str(&format!(
        "TrainingArguments({}), sequences of {} tokens",
        args.join(", "),
        cfg.block_size
    ));
    cmd
}

/// What no TrainingArguments flag changes.
pub fn code_changes(cfg: &TrainConfig, base: &TrainConfig) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.flash && !base.flash {
        out.push(
            "the model's loading: from_pretrained(..., attn_implementation=\"sdpa\") instead of \"eager\""
                .into(),
        );
    }
    if cfg.quantization.is_4bit() && !base.quantization.is_4bit() {
        out.push(
            "the model's loading: from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True, \
             bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True, \
             bnb_4bit_compute_dtype=torch.bfloat16)), then \
             peft.prepare_model_for_kbit_training(model) before get_peft_model"
                .to_string(),
        );
    }
    if cfg.loss == LossKind::Liger && base.loss != LossKind::Liger {
        out.push(
            "the environment: pip install liger-kernel (use_liger_kernel=True patches the model's loss)"
                .into(),
        );
    }
    if cfg.optimizer == OptimizerKind::AdamW8bit && base.optimizer != OptimizerKind::AdamW8bit {
        out.push("the environment: pip install bitsandbytes (optim=\"adamw_bnb_8bit\")".into());
    }
    out
}
