//! The memory knobs suggest may turn, each a config key `check` understands. How a user turns
//! them (a train.py flag, an environment variable, the lines to change) is `command`'s.

use crate::config::{Framework, LossKind, OptimizerKind, Precision, Quantization, TrainConfig};

/// How the user starts their run (the printed commands repeat it).
pub use super::script::Script;

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
        apply: |_| {},
        applies: |_, _| true,
        combines: true,
    },
    // torch.compile changes what is alive (fusion.rs): either way can fit more, so where
    // the compile runtime is derived for the config, the other setting is a candidate.
    Knob {
        id: KnobId::WithoutCompile,
        label: "without torch.compile",
        apply: |c| c.compile = false,
        applies: |c, _| c.compile && crate::sim::runtime::compile_fallback(c).is_none(),
        combines: false,
    },
    Knob {
        id: KnobId::Compile,
        label: "torch.compile",
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
        apply: |c| c.flash = true,
        applies: |c, _| !c.flash,
        combines: true,
    },
    Knob {
        id: KnobId::Bf16Autocast,
        label: "bfloat16 autocast",
        apply: |c| c.dtype = Precision::BFloat16,
        applies: |c, bf16| bf16 && c.dtype == Precision::Float32,
        combines: true,
    },
    Knob {
        id: KnobId::Checkpointing,
        label: "activation checkpointing",
        apply: |c| c.activation_checkpointing = true,
        applies: |c, _| !c.activation_checkpointing,
        combines: true,
    },
    Knob {
        id: KnobId::FusedLoss,
        label: "chunked cross-entropy",
        // What the printed change runs: Liger's function under the Trainer and axolotl
        // (use_liger_kernel / liger_fused_linear_cross_entropy), a chunked loss elsewhere.
        apply: |c| c.loss = fused_loss(c).unwrap_or(c.loss),
        applies: |c, _| c.loss == LossKind::Standard && fused_loss(c).is_some(),
        combines: true,
    },
    Knob {
        id: KnobId::AdamW8bit,
        label: "8-bit AdamW",
        apply: |c| c.optimizer = OptimizerKind::AdamW8bit,
        applies: |c, _| c.optimizer == OptimizerKind::AdamW,
        combines: true,
    },
    Knob {
        id: KnobId::Qlora,
        label: "4-bit base weights (QLoRA)",
        apply: |c| c.quantization = Quantization::Nf4,
        applies: |c, _| c.lora_rank > 0 && c.quantization == Quantization::None,
        combines: true,
    },
    Knob {
        id: KnobId::ExpandableSegments,
        label: "expandable segments",
        apply: |c| c.alloc_conf = Some("expandable_segments:True".to_string()),
        applies: |c, _| !c.expandable_segments(),
        combines: true,
    },
];
