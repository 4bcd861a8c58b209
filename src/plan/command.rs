//! How to run a config `suggest` found: nanoGPT's train.py with flags, the Trainer's
//! arguments, or a framework file's keys (`convention`), and the code nanoGPT has no flag for.

use super::script::{env_prefix, Script};
use crate::config::{
    is_nanogpt_key, to_overrides, Framework, LossKind, ModelType, OptimizerKind, TrainConfig,
};

/// How to run `cfg` with nanoGPT's train.py (Hugging Face models: the Trainer's arguments).
pub fn command(cfg: &TrainConfig, base: &TrainConfig, script: &Script) -> String {
    if let Some(changes) = super::convention::file_changes(cfg, base, script) {
        return changes;
    }
    if cfg.model_type != ModelType::Gpt2 {
        return super::hf_args::command(cfg, base);
    }
    // train.py reads only its own python config files: for a TOML (or no) config the flags
    // spell out everything that differs from train.py's defaults instead.
    let nanogpt_file = script.config_path.as_deref().filter(|p| p.ends_with(".py"));
    let defaults = TrainConfig::default();
    let from = if nanogpt_file.is_some() {
        &script.file_config
    } else {
        &defaults
    };
    let overrides = to_overrides(cfg, from);
    let flags: Vec<String> = overrides
        .iter()
        .filter(|o| {
            let key = o.trim_start_matches('-').split('=').next().unwrap_or("");
            is_nanogpt_key(key)
        })
        .cloned()
        .collect();
    let mut cmd = env_prefix(cfg, base).to_string();
    cmd.push_str("python train.py");
    if let Some(p) = nanogpt_file {
        cmd.push(' ');
        cmd.push_str(p);
    }
    for f in flags {
        cmd.push(' ');
        cmd.push_str(&f);
    }
    cmd
}

/// Changes nanoGPT has no flag for: the code to change, named precisely.
pub fn code_changes(cfg: &TrainConfig, base: &TrainConfig) -> Vec<String> {
    // torchtune and LitGPT runs change only their config file's keys.
    if matches!(cfg.framework, Framework::Torchtune | Framework::Litgpt) {
        return Vec::new();
    }
    if cfg.model_type != ModelType::Gpt2 {
        return super::hf_args::code_changes(cfg, base);
    }
    let mut out = Vec::new();
    if cfg.flash && !base.flash {
        out.push(
            "model.py, CausalSelfAttention.__init__: use F.scaled_dot_product_attention \
             (self.flash = True; needs PyTorch >= 2.0)"
                .to_string(),
        );
    }
    if cfg.eval_batch_size != base.eval_batch_size {
        if let Some(b) = cfg.eval_batch_size {
            out.push(format!(
                "train.py, estimate_loss(): evaluate with batch {b} — e.g. X, Y = get_batch(split); \
                 X, Y = X[:{b}], Y[:{b}] — training keeps its batch"
            ));
        }
    }
    if cfg.loss == LossKind::Chunked && base.loss != LossKind::Chunked {
        out.push(format!(
            "model.py, GPT.forward: compute lm_head + F.cross_entropy over chunks of {} rows of \
             x.view(-1, C), each under torch.utils.checkpoint, summing the losses (no full \
             logits are returned)",
            crate::sim::ops::CHUNK_ROWS
        ));
    }
    if cfg.optimizer == OptimizerKind::AdamW8bit && base.optimizer != OptimizerKind::AdamW8bit {
        out.push(
            "model.py, configure_optimizers: bitsandbytes.optim.AdamW8bit(optim_groups, lr=..., \
             betas=...) instead of torch.optim.AdamW (pip install bitsandbytes)"
                .to_string(),
        );
    }
    if cfg.activation_checkpointing && !base.activation_checkpointing {
        out.push(
            "model.py, GPT.forward: x = torch.utils.checkpoint.checkpoint(block, x, \
             use_reentrant=False) for each block"
                .to_string(),
        );
    }
    out
}
