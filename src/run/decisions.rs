//! The choices a run is simulated under, each with where it comes from: which runtime, the
//! precision after nanoGPT's fallback, the attention kernel, the allocator's mode and whose
//! training loop. Front-ends print these; none re-derives them.

use crate::budget::GpuProfile;
use crate::config::transformers::LossChain;
use crate::config::{Framework, ModelType, Precision, TrainConfig};
use crate::sim::ops::{sdpa_kernel, SdpaKernel};
use crate::sim::runtime::{compile_fallback, effective_precision, Runtime, RuntimeKind};
use serde::Serialize;

/// One choice and the rule that made it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decision<T> {
    pub value: T,
    /// Why this value: the config key, the card's property or the framework's source.
    pub source: &'static str,
}

/// The attention kernel the forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKernel {
    /// SDPA's FlashAttention-2 kernel (half precision).
    Flash,
    /// SDPA's memory-efficient kernel (fp32, one kv head per query head).
    MemoryEfficient,
    /// SDPA's math kernel (fp32 with grouped-query attention).
    Math,
    /// nanoGPT's hand-written attention (flash=False): the T×T scores are materialised.
    Manual,
    /// Hugging Face's eager attention (attn_implementation="eager").
    Eager,
}

impl AttentionKernel {
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionKernel::Flash => "flash",
            AttentionKernel::MemoryEfficient => "memory-efficient",
            AttentionKernel::Math => "math",
            AttentionKernel::Manual => "manual",
            AttentionKernel::Eager => "eager",
        }
    }
}

/// How the caching allocator hands out memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocatorMode {
    /// Fixed segments (2 MiB small pool, 20 MiB or the request for large blocks).
    Segments,
    /// PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: large blocks mapped in 2 MiB pages.
    ExpandableSegments,
}

/// Every choice one simulation made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decisions {
    pub runtime: Decision<RuntimeKind>,
    pub precision: Decision<Precision>,
    pub attention: Decision<AttentionKernel>,
    pub allocator: Decision<AllocatorMode>,
    pub framework: Decision<Framework>,
    /// Hugging Face models: what runs from the lm_head to the loss in the configured
    /// transformers release (None: nanoGPT's GPT, whose model.py has one loss).
    pub loss_chain: Option<Decision<LossChain>>,
    /// With activation checkpointing: whether torch.utils.checkpoint runs reentrant.
    pub reentrant_checkpoint: Option<Decision<bool>>,
    /// compile=True simulated with eager rules (`sim::runtime::compile_fallback`): what is not
    /// derived yet. The figures are then an upper bound rather than a prediction.
    pub compile_fallback: Option<&'static str>,
}

impl Decisions {
    /// The decisions for `cfg` run by PyTorch on `gpu` (None: no card known).
    pub fn pytorch(cfg: &TrainConfig, gpu: Option<&GpuProfile>, rt: &Runtime) -> Decisions {
        let precision = effective_precision(cfg, gpu);
        Decisions {
            runtime: runtime(cfg, rt),
            precision: Decision {
                value: precision,
                source: if precision != cfg.dtype {
                    "train.py's default dtype: 'bfloat16' if torch.cuda.is_bf16_supported() \
                     else 'float16', and this card has no bfloat16"
                } else if cfg.dtype_written.0 {
                    "dtype as written in the config (train.py passes it to autocast as is)"
                } else {
                    "train.py's default dtype"
                },
            },
            attention: attention(cfg, precision, rt),
            allocator: if cfg.expandable_segments() {
                Decision {
                    value: AllocatorMode::ExpandableSegments,
                    source: "alloc_conf / PYTORCH_CUDA_ALLOC_CONF sets expandable_segments:True",
                }
            } else {
                Decision {
                    value: AllocatorMode::Segments,
                    source: "PyTorch's default (CUDACachingAllocator without expandable segments)",
                }
            },
            framework: Decision {
                value: cfg.framework,
                source: if cfg.framework == Framework::NanoGpt {
                    "nanoGPT's train.py: its loop and defaults (micro-steps, AdamW, estimate_loss())"
                } else {
                    "the config file's framework: its defaults, its accumulation convention and \
                     whether its loop holds the logits through the backward; the rest of the \
                     loop is nanoGPT's"
                },
            },
            loss_chain: (cfg.model_type != ModelType::Gpt2).then(|| Decision {
                value: cfg.transformers_version.loss_chain(cfg.model_type),
                source: if cfg.transformers_version.0.is_some() {
                    "transformers_version as written"
                } else {
                    "transformers_version not given: the newest chain (4.49 and later)"
                },
            }),
            reentrant_checkpoint: cfg.activation_checkpointing.then(|| Decision {
                value: cfg.reentrant_checkpoint(),
                source: match (cfg.use_reentrant, cfg.framework) {
                    _ if cfg.checkpoint_policy == crate::config::CheckpointPolicy::Op => {
                        "checkpoint_policy = 'op', torchtitan's per-op selective AC: keeps the \
                         outputs of every other mm and of addmm, bmm and SDPA; recomputes the rest"
                    }
                    _ if cfg.checkpoint_policy == crate::config::CheckpointPolicy::Offload => {
                        "checkpoint_policy = 'offload', axolotl's CPU_Offloaded_Gradient_Checkpointer: \
                         each block's input kept in host memory; its backward holds the \
                         recomputed output and gradient as a reentrant checkpoint does"
                    }
                    (Some(_), _) => "use_reentrant as written",
                    (None, Framework::HfTrainer | Framework::Axolotl)
                        if cfg.transformers_version.0.is_none() && cfg.on_transformers_5() =>
                    {
                        "gradient_checkpointing_enable's default in transformers 5.x (the only \
                         release line whose mixture-of-experts path is simulated): use_reentrant=False"
                    }
                    (None, Framework::HfTrainer | Framework::Axolotl) => {
                        "gradient_checkpointing_enable's default: use_reentrant=True in \
                         transformers 4.x (and when transformers_version is not given), False \
                         from 5.0"
                    }
                    (None, _) => "the framework's checkpoint wrapper: non-reentrant",
                },
            }),
            compile_fallback: compile_fallback(cfg),
        }
    }
}

/// The runtime the simulation runs (`Runtime::pytorch` decides it), and why.
fn runtime(cfg: &TrainConfig, rt: &Runtime) -> Decision<RuntimeKind> {
    let source = match (rt.kind, compile_fallback(cfg)) {
        (RuntimeKind::PytorchCompile, _) => {
            "compile=True: AOTAutograd's partition and inductor's fusion (sim::ops::fusion)"
        }
        // compile_fallback names what the compile rules do not cover yet.
        (_, Some(what)) => what,
        _ => "compile=False: PyTorch eager",
    };
    Decision {
        value: rt.kind,
        source,
    }
}

/// The attention kernel the model's forward runs: the model's own choice for `flash=False`,
/// else SDPA's (`sim::ops::sdpa_kernel`, on the card the runtime was made for).
fn attention(cfg: &TrainConfig, precision: Precision, rt: &Runtime) -> Decision<AttentionKernel> {
    let half = precision != Precision::Float32;
    let gqa = cfg.kv_heads() != cfg.n_head;
    let (value, source) = match (cfg.flash, sdpa_kernel(half, gqa, rt.flash_attention)) {
        (true, _) if cfg.model_type == ModelType::Gemma2 => (
            AttentionKernel::Eager,
            "gemma2: Gemma2PreTrainedModel._supports_sdpa = False (softcapping), so from_pretrained falls back to attn_implementation=\"eager\"",
        ),
        (false, _) if cfg.model_type != ModelType::Gpt2 => (
            AttentionKernel::Eager,
            "flash=False on a Hugging Face model: attn_implementation=\"eager\"",
        ),
        (false, _) => (
            AttentionKernel::Manual,
            "flash=False: nanoGPT's model.py computes att = softmax(q @ k.T) @ v",
        ),
        (true, Some(SdpaKernel::Flash)) => (
            AttentionKernel::Flash,
            "flash=True in half precision on sm80+: SDPA's flash kernel",
        ),
        (true, Some(SdpaKernel::Efficient)) if half => (
            AttentionKernel::MemoryEfficient,
            "half precision on a card older than sm80 (no flash kernel): SDPA's memory-efficient kernel",
        ),
        (true, Some(SdpaKernel::Efficient)) => (
            AttentionKernel::MemoryEfficient,
            "flash=True in fp32: SDPA's memory-efficient kernel",
        ),
        (true, None) => (
            AttentionKernel::Math,
            "grouped-query attention without the flash kernel: SDPA's math kernel",
        ),
    };
    Decision { value, source }
}
