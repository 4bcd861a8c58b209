//! Architectures as sequences of ops on the simulator's engine: nanoGPT's GPT, and the Hugging
//! Face decoders (Llama, Mistral, Qwen2, Gemma, Gemma 2, Gemma 3, Qwen3, Olmo2 on Llama's
//! layers; Phi-3; GPT-NeoX). The training loop (run/train.rs)
//! sees one `Model`; `config.model_type` picks which one is built.

pub mod count;
pub mod gpt2;
pub mod hf;
pub mod hf_loss;
pub mod llama;
mod llama_layer;
pub mod lora;
mod moe;
pub mod neox;
pub mod phi3;
mod variant;

pub use count::{base_params, lora_params, n_params};
pub use gpt2::Gpt2;
pub use llama::Llama;
pub use neox::Neox;
pub use phi3::Phi3;

use crate::config::{ModelType, TrainConfig};
use crate::sim::engine::{Engine, T, V};

pub enum Model {
    Gpt2(Gpt2),
    Llama(Llama),
    Neox(Neox),
    Phi3(Phi3),
}

impl Model {
    /// Build the model's parameters on the device (`model.to(device)`).
    pub fn build(e: &mut Engine, cfg: &TrainConfig) -> Model {
        match cfg.model_type {
            ModelType::Gpt2 => Model::Gpt2(Gpt2::build(e, cfg)),
            ModelType::GptNeox => Model::Neox(Neox::build(e, cfg)),
            ModelType::Phi3 => Model::Phi3(Phi3::build(e, cfg)),
            ModelType::Llama
            | ModelType::Mistral
            | ModelType::Qwen2
            | ModelType::Gemma
            | ModelType::Gemma2
            | ModelType::Gemma3
            | ModelType::Olmo2
            | ModelType::Mixtral
            | ModelType::Qwen3Moe
            | ModelType::Qwen2Moe
            | ModelType::Qwen3 => Model::Llama(Llama::build(e, cfg)),
        }
    }

    /// `logits, loss = model(X, Y)`; `logits` is None when no full logits exist (chunked loss).
    pub fn forward(&self, e: &mut Engine, idx: T, targets: T) -> (Option<V>, V) {
        match self.run(e, idx, Head::Loss(targets)) {
            Output::Loss(logits, loss) => (logits, loss),
            // Head::Loss always ends in a loss; were it not, the logits are the closest value.
            Output::Logits(logits) => (None, logits),
        }
    }

    /// Inference: `logits = model(idx)` with no targets — the last position's logits of each
    /// sequence, or every position's with `all`.
    pub fn logits(&self, e: &mut Engine, idx: T, all: bool) -> V {
        match self.run(e, idx, Head::Logits { all }) {
            Output::Logits(logits) => logits,
            Output::Loss(logits, loss) => {
                if let Some(l) = logits {
                    e.drop_value(l);
                }
                loss
            }
        }
    }

    fn run(&self, e: &mut Engine, idx: T, head: Head) -> Output {
        // FSDP's root unit (embeddings, final norm, lm_head) is gathered before the first op.
        crate::sim::parallel::unit_enter(e, None);
        match self {
            Model::Gpt2(m) => m.forward(e, idx, head),
            Model::Llama(m) => m.forward(e, idx, head),
            Model::Neox(m) => m.forward(e, idx, head),
            Model::Phi3(m) => m.forward(e, idx, head),
        }
    }
}

/// Which blocks activation checkpointing wraps: every block (nanoGPT-style
/// `torch.utils.checkpoint` per block, HF's gradient_checkpointing, torchtitan's `mode = "full"`)
/// or every k-th (torchtitan's `mode = "selective"`, `selective_ac_option = "k"`:
/// torchtitan/distributed/activation_checkpoint.py increments a counter before each block and
/// wraps it when `_count % ac_freq == 0`, so the 1-based k-th, 2k-th, ... blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointing {
    /// None: off.
    every: Option<u64>,
}

impl Checkpointing {
    pub fn new(cfg: &TrainConfig) -> Checkpointing {
        Checkpointing {
            every: cfg
                .activation_checkpointing
                .then_some(cfg.checkpoint_every.max(1)),
        }
    }

    /// Some block is checkpointed.
    pub fn any(self) -> bool {
        self.every.is_some()
    }

    /// Block `layer` (0-based) is checkpointed.
    pub fn wraps(self, layer: u32) -> bool {
        self.every.is_some_and(|k| (u64::from(layer) + 1) % k == 0)
    }
}

/// What the model computes after its last norm.
#[derive(Debug, Clone, Copy)]
pub enum Head {
    /// Training and estimate_loss(): logits and the loss against these targets.
    Loss(T),
    /// Inference: logits only, of the last position (or of every position with `all`).
    Logits { all: bool },
}

/// The model's return value for each `Head`.
pub enum Output {
    /// (logits, None when no full logits exist: the chunked loss), loss.
    Loss(Option<V>, V),
    Logits(V),
}

/// Inference's lm_head over the last position (`copy`: nanoGPT's gather; otherwise HF's view)
/// or over all positions.
pub(crate) fn logits_head(e: &mut Engine, x: V, weight: usize, all: bool, copy: bool) -> V {
    if all {
        return crate::sim::ops::linear(e, x, weight, None, None, "lm_head");
    }
    let name = crate::sim::Name::top("lm_head", "input_last");
    let last = crate::sim::ops::last_position(e, x, copy, name);
    let logits = crate::sim::ops::linear(e, last, weight, None, None, "lm_head");
    e.drop_value(last);
    logits
}
