//! The enum-valued keys of the run: precision, optimizer, loss, multi-GPU strategy.

use serde::{Deserialize, Serialize};

/// The variant of `all` that configs write as `s`.
pub(crate) fn parse_name<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    s: &str,
) -> Option<T> {
    all.iter().copied().find(|t| name(*t) == s)
}

/// "'a', 'b', ..." for messages: the names of `all`, quoted.
pub(crate) fn quoted_names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    let names: Vec<String> = all.iter().map(|t| format!("'{}'", name(*t))).collect();
    names.join(", ")
}

/// Training precision, as nanoGPT's `dtype` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[serde(rename = "float32")]
    Float32,
    #[serde(rename = "bfloat16")]
    BFloat16,
    #[serde(rename = "float16")]
    Float16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::BFloat16 => "bfloat16",
            Precision::Float16 => "float16",
        }
    }
}

/// Whether autocast runs over fp32 master weights, or the weights themselves are half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PrecisionMode {
    /// fp32 parameters, gradients and optimizer state; `dtype` is autocast's (nanoGPT's
    /// `torch.amp.autocast`, HF Trainer's `bf16=True`/`fp16=True`). float16 adds nanoGPT's
    /// GradScaler (`GradScaler(enabled=(dtype == 'float16'))` in train.py).
    #[default]
    #[serde(rename = "mixed")]
    Mixed,
    /// Parameters, gradients and optimizer state in `dtype`, no autocast, no fp32 master copy,
    /// no GradScaler: torchtune's default (`dtype: bf16`), LitGPT's `--precision bf16-true`,
    /// a Hugging Face model loaded with `torch_dtype=torch.bfloat16` trained without
    /// `bf16=True`.
    #[serde(rename = "pure")]
    Pure,
}

impl PrecisionMode {
    pub const ALL: [PrecisionMode; 2] = [PrecisionMode::Mixed, PrecisionMode::Pure];

    pub fn as_str(self) -> &'static str {
        match self {
            PrecisionMode::Mixed => "mixed",
            PrecisionMode::Pure => "pure",
        }
    }
}

/// What a checkpointed block keeps from its forward for the backward's recomputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CheckpointPolicy {
    /// Only the block's inputs: every op is recomputed (torch.utils.checkpoint as nanoGPT,
    /// HF's gradient_checkpointing, torchtune and torchtitan's `FullAC` call it).
    #[default]
    #[serde(rename = "full")]
    Full,
    /// torchtitan's per-op selective AC (torchtitan/distributed/activation_checkpoint.py
    /// `SelectiveAC`): the outputs of compute-intensive ops are kept, every second matmul and
    /// everything else recomputed (`sim::sac`).
    #[serde(rename = "op")]
    Op,
    /// axolotl's `gradient_checkpointing: offload` (`CPU_Offloaded_Gradient_Checkpointer`,
    /// Unsloth's offloaded checkpointer): the block's input is copied to host memory and back
    /// for the recomputation; the backward holds like a reentrant checkpoint.
    #[serde(rename = "offload")]
    Offload,
}

impl CheckpointPolicy {
    pub const ALL: [CheckpointPolicy; 3] = [
        CheckpointPolicy::Full,
        CheckpointPolicy::Op,
        CheckpointPolicy::Offload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointPolicy::Full => "full",
            CheckpointPolicy::Op => "op",
            CheckpointPolicy::Offload => "offload",
        }
    }
}

/// Optimizer implementation (memory of its state and its step's temporaries differ;
/// `sim::optim` cites each one's source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// torch.optim.AdamW(fused=True), nanoGPT's choice on CUDA (HF `adamw_torch_fused`).
    #[serde(rename = "adamw")]
    AdamW,
    /// torch.optim.AdamW() with its defaults on CUDA: the foreach implementation (HF
    /// `adamw_torch`).
    #[serde(rename = "adamw_foreach")]
    AdamWForeach,
    /// torch.optim.AdamW(foreach=False): the single-tensor loop.
    #[serde(rename = "adamw_single")]
    AdamWSingle,
    /// bitsandbytes AdamW8bit: 1 byte per state element plus block-wise quantisation constants.
    #[serde(rename = "adamw8bit")]
    AdamW8bit,
    /// bitsandbytes PagedAdamW8bit (HF `paged_adamw_8bit`): large states in unified memory.
    #[serde(rename = "paged_adamw8bit")]
    PagedAdamW8bit,
    /// bitsandbytes PagedAdamW / PagedAdamW32bit (HF `paged_adamw_32bit`).
    #[serde(rename = "paged_adamw")]
    PagedAdamW,
    /// transformers' Adafactor with its defaults (factored second moments, no first moment).
    #[serde(rename = "adafactor")]
    Adafactor,
    /// bitsandbytes Lion, 32-bit state (HF `lion_32bit`): one fp32 moment.
    #[serde(rename = "lion")]
    Lion,
    /// torch.optim.SGD with momentum (foreach): one momentum buffer per parameter.
    #[serde(rename = "sgd")]
    Sgd,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 9] = [
        OptimizerKind::AdamW,
        OptimizerKind::AdamWForeach,
        OptimizerKind::AdamWSingle,
        OptimizerKind::AdamW8bit,
        OptimizerKind::PagedAdamW8bit,
        OptimizerKind::PagedAdamW,
        OptimizerKind::Adafactor,
        OptimizerKind::Lion,
        OptimizerKind::Sgd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::AdamWForeach => "adamw_foreach",
            OptimizerKind::AdamWSingle => "adamw_single",
            OptimizerKind::AdamW8bit => "adamw8bit",
            OptimizerKind::PagedAdamW8bit => "paged_adamw8bit",
            OptimizerKind::PagedAdamW => "paged_adamw",
            OptimizerKind::Adafactor => "adafactor",
            OptimizerKind::Lion => "lion",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// How the cross-entropy over the vocabulary is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// `F.cross_entropy(logits.view(-1, V), targets)`, nanoGPT's model.py.
    #[serde(rename = "standard")]
    Standard,
    /// Cross-entropy over chunks of rows, each chunk's logits recomputed in backward.
    #[serde(rename = "chunked")]
    Chunked,
    /// Liger-Kernel's fused linear cross-entropy (`use_liger_kernel`): chunks whose gradients
    /// are computed in the forward and kept for the backward (`sim::ops::liger`).
    #[serde(rename = "liger")]
    Liger,
}

impl LossKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::Standard => "standard",
            LossKind::Chunked => "chunked",
            LossKind::Liger => "liger",
        }
    }
}

/// Multi-GPU strategy (per-rank memory differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parallelism {
    #[serde(rename = "ddp")]
    Ddp,
    /// FSDP FULL_SHARD.
    #[serde(rename = "fsdp")]
    Fsdp,
    /// FSDP SHARD_GRAD_OP: parameters stay gathered from a unit's forward to its backward.
    #[serde(rename = "fsdp_grad_op")]
    FsdpGradOp,
    #[serde(rename = "zero1")]
    Zero1,
    #[serde(rename = "zero2")]
    Zero2,
    #[serde(rename = "zero3")]
    Zero3,
    /// Megatron-style tensor parallelism of degree world_size (no data parallelism).
    #[serde(rename = "tp")]
    Tp,
}

impl Parallelism {
    pub fn as_str(self) -> &'static str {
        match self {
            Parallelism::Ddp => "ddp",
            Parallelism::Fsdp => "fsdp",
            Parallelism::FsdpGradOp => "fsdp_grad_op",
            Parallelism::Zero1 => "zero1",
            Parallelism::Zero2 => "zero2",
            Parallelism::Zero3 => "zero3",
            Parallelism::Tp => "tp",
        }
    }
}

/// Whose semantics the run follows: which defaults fill the keys a file leaves out, how
/// gradient accumulation is counted, and in which format `suggest` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Framework {
    /// nanoGPT's train.py: its globals' defaults, accumulation over all ranks.
    #[default]
    #[serde(rename = "nanogpt")]
    NanoGpt,
    /// Hugging Face Trainer (TrainingArguments, TRL's SFTConfig): accumulation per rank.
    #[serde(rename = "hf-trainer")]
    HfTrainer,
    /// axolotl (a Trainer underneath): accumulation per rank.
    #[serde(rename = "axolotl")]
    Axolotl,
    /// torchtune's recipes: accumulation per rank.
    #[serde(rename = "torchtune")]
    Torchtune,
    /// LitGPT's finetune: a global batch in samples, divided over devices.
    #[serde(rename = "litgpt")]
    Litgpt,
}

impl Framework {
    pub const ALL: [Framework; 5] = [
        Framework::NanoGpt,
        Framework::HfTrainer,
        Framework::Axolotl,
        Framework::Torchtune,
        Framework::Litgpt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Framework::NanoGpt => "nanogpt",
            Framework::HfTrainer => "hf-trainer",
            Framework::Axolotl => "axolotl",
            Framework::Torchtune => "torchtune",
            Framework::Litgpt => "litgpt",
        }
    }

    /// The framework's own name for the report's run line.
    pub fn display_name(self) -> &'static str {
        match self {
            Framework::NanoGpt => "nanoGPT train.py",
            Framework::HfTrainer => "Hugging Face Trainer",
            Framework::Axolotl => "axolotl",
            Framework::Torchtune => "torchtune",
            Framework::Litgpt => "LitGPT",
        }
    }

    /// Its `gradient_accumulation_steps` counts micro-steps of one rank (Trainer:
    /// `TrainingArguments.gradient_accumulation_steps`; torchtune's recipes), not of all ranks
    /// together as nanoGPT's train.py does (`gradient_accumulation_steps //= ddp_world_size`).
    /// LitGPT derives it from a global batch, so it is not per rank either.
    pub fn accumulation_per_rank(self) -> bool {
        matches!(
            self,
            Framework::HfTrainer | Framework::Axolotl | Framework::Torchtune
        )
    }

    /// Whether the training loop still references the model's logits during the backward
    /// (and until the next micro-step's forward replaces them). nanoGPT's
    /// `logits, loss = model(X, Y)` and LitGPT's `logits = model(input_ids)` are locals of the
    /// loop. Trainer.training_step (transformers trainer.py, read in 4.40-5.25) calls
    /// `loss = self.compute_loss(model, inputs)`, which returns the loss alone, so the
    /// outputs go before `accelerator.backward(loss)`; torchtune's recipes `del logits`
    /// ("free logits otherwise it peaks backward memory") before `loss.backward()`.
    pub fn holds_logits_through_backward(self) -> bool {
        matches!(self, Framework::NanoGpt | Framework::Litgpt)
    }
}
