//! Architectures as sequences of ops on the simulator's engine: nanoGPT's GPT, and the Hugging
//! Face decoders (Llama, Mistral, Qwen2, Gemma; GPT-NeoX). The training loop (sim/train.rs)
//! sees one `Model`; `config.model_type` picks which one is built.

pub mod count;
pub mod gpt2;
pub mod hf;
pub mod llama;
pub mod lora;
pub mod neox;

pub use count::{base_params, lora_params, n_params};
pub use gpt2::Gpt2;
pub use llama::Llama;
pub use neox::Neox;

use crate::config::{ModelType, TrainConfig};
use crate::sim::engine::{Engine, T, V};

pub enum Model {
    Gpt2(Gpt2),
    Llama(Llama),
    Neox(Neox),
}

impl Model {
    /// Build the model's parameters on the device (`model.to(device)`).
    pub fn build(e: &mut Engine, cfg: &TrainConfig) -> Model {
        match cfg.model_type {
            ModelType::Gpt2 => Model::Gpt2(Gpt2::build(e, cfg)),
            ModelType::GptNeox => Model::Neox(Neox::build(e, cfg)),
            ModelType::Llama | ModelType::Mistral | ModelType::Qwen2 | ModelType::Gemma => {
                Model::Llama(Llama::build(e, cfg))
            }
        }
    }

    /// `logits, loss = model(X, Y)`; `logits` is None when no full logits exist (chunked loss).
    pub fn forward(&self, e: &mut Engine, idx: T, targets: T) -> (Option<V>, V) {
        // FSDP's root unit (embeddings, final norm, lm_head) is gathered before the first op.
        crate::sim::parallel::unit_enter(e, None);
        match self {
            Model::Gpt2(m) => m.forward(e, idx, targets),
            Model::Llama(m) => m.forward(e, idx, targets),
            Model::Neox(m) => m.forward(e, idx, targets),
        }
    }
}
