//! The memory knobs suggest may turn, each a config key `check` understands, and how to tell a
//! nanoGPT user to turn it: a train.py flag, an environment variable, or the lines to change.

use crate::config::{
    is_nanogpt_key, to_overrides, Framework, LossKind, ModelType, OptimizerKind, Precision,
    Quantization, TrainConfig,
};

/// Which knob: what the search decides by (the labels are for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobId {
    AsConfigured,
    WithoutCompile,
    Compile,
    Flash,
    Bf16Autocast,
    Checkpointing,
    FusedLoss,
    AdamW8bit,
    Qlora,
    ExpandableSegments,
}

/// A change of knobs on top of the user's config (batch and accumulation are searched after).
#[derive(Debug, Clone)]
pub struct Knob {
    pub id: KnobId,
    pub label: &'static str,
    /// Label of the same knobs at the largest batch that keeps tokens per step exactly.
    pub exact_label: &'static str,
    pub apply: fn(&mut TrainConfig),
    /// Whether this knob applies to the user's config at all.
    pub applies: fn(&TrainConfig, bool) -> bool,
    /// Whether "every memory knob at once" turns it too: false for a switch that saves memory
    /// in one run and costs it in another (torch.compile on or off).
    pub combines: bool,
}

/// The loss that never materialises the logits, as the run's framework turns it on: Liger's
/// under the Trainer and axolotl, for the decoders Liger patches (none: GPT-2 and GPT-NeoX
/// there have no such flag); a chunked loss elsewhere.
fn fused_loss(c: &TrainConfig) -> Option<LossKind> {
    match c.framework {
        Framework::HfTrainer | Framework::Axolotl => c.liger_runs().then_some(LossKind::Liger),
        _ => Some(LossKind::Chunked),
    }
}

/// The knobs, in the order they are tried.
pub fn knobs() -> &'static [Knob] {
    &KNOBS
}

/// The table behind [`knobs`]: data, one entry per knob (`applies` is told whether the card
/// has bfloat16).
static KNOBS: [Knob; 10] = [
    Knob {
        id: KnobId::AsConfigured,
        label: "as configured",
        exact_label: "as configured, exact tokens/step",
        apply: |_| {},
        applies: |_, _| true,
        combines: true,
    },
    // torch.compile changes what is alive (fusion.rs): either way can fit more, so where
    // the compile runtime is derived for the config, the other setting is a candidate.
    Knob {
        id: KnobId::WithoutCompile,
        label: "without torch.compile",
        exact_label: "without torch.compile, exact tokens/step",
        apply: |c| c.compile = false,
        applies: |c, _| c.compile && crate::sim::runtime::compile_fallback(c).is_none(),
        combines: false,
    },
    Knob {
        id: KnobId::Compile,
        label: "torch.compile",
        exact_label: "torch.compile, exact tokens/step",
        apply: |c| c.compile = true,
        applies: |c, _| {
            !c.compile
                && crate::sim::runtime::compile_fallback(&TrainConfig {
                    compile: true,
                    ..c.clone()
                })
                .is_none()
        },
        combines: false,
    },
    Knob {
        id: KnobId::Flash,
        label: "flash attention",
        exact_label: "flash attention, exact tokens/step",
        apply: |c| c.flash = true,
        applies: |c, _| !c.flash,
        combines: true,
    },
    Knob {
        id: KnobId::Bf16Autocast,
        label: "bfloat16 autocast",
        exact_label: "bfloat16 autocast, exact tokens/step",
        apply: |c| c.dtype = Precision::BFloat16,
        applies: |c, bf16| bf16 && c.dtype == Precision::Float32,
        combines: true,
    },
    Knob {
        id: KnobId::Checkpointing,
        label: "activation checkpointing",
        exact_label: "activation checkpointing, exact tokens/step",
        apply: |c| c.activation_checkpointing = true,
        applies: |c, _| !c.activation_checkpointing,
        combines: true,
    },
    Knob {
        id: KnobId::FusedLoss,
        label: "chunked cross-entropy",
        exact_label: "chunked cross-entropy, exact tokens/step",
        // What the printed change runs: Liger's function under the Trainer and axolotl
        // (use_liger_kernel / liger_fused_linear_cross_entropy), a chunked loss elsewhere.
        apply: |c| c.loss = fused_loss(c).unwrap_or(c.loss),
        applies: |c, _| c.loss == LossKind::Standard && fused_loss(c).is_some(),
        combines: true,
    },
    Knob {
        id: KnobId::AdamW8bit,
        label: "8-bit AdamW",
        exact_label: "8-bit AdamW, exact tokens/step",
        apply: |c| c.optimizer = OptimizerKind::AdamW8bit,
        applies: |c, _| c.optimizer == OptimizerKind::AdamW,
        combines: true,
    },
    Knob {
        id: KnobId::Qlora,
        label: "4-bit base weights (QLoRA)",
        exact_label: "4-bit base weights (QLoRA), exact tokens/step",
        apply: |c| c.quantization = Quantization::Nf4,
        applies: |c, _| c.lora_rank > 0 && c.quantization == Quantization::None,
        combines: true,
    },
    Knob {
        id: KnobId::ExpandableSegments,
        label: "expandable segments",
        exact_label: "expandable segments, exact tokens/step",
        apply: |c| c.alloc_conf = Some("expandable_segments:True".to_string()),
        applies: |c, _| !c.expandable_segments(),
        combines: true,
    },
];

/// How the user starts train.py: the config file on its command line and what that file alone
/// sets, so a printed command repeats the user's own overrides (`--compile=False`) as well as
/// the suggested changes.
#[derive(Debug, Clone)]
pub struct Script {
    pub config_path: Option<String>,
    /// The config the file gives before any `--key=value` (train.py's defaults without a file).
    pub file_config: TrainConfig,
}

impl Script {
    /// train.py with no config file.
    pub fn defaults() -> Script {
        Script {
            config_path: None,
            file_config: TrainConfig::default(),
        }
    }
}

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

/// The environment a command needs that the user's run did not set: expandable segments.
pub fn env_prefix(cfg: &TrainConfig, base: &TrainConfig) -> &'static str {
    if cfg.expandable_segments() && !base.expandable_segments() {
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
    } else {
        ""
    }
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
