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
mod mlp;
mod moe;
pub mod neox;
pub mod phi3;
mod pipeline;
mod variant;

pub use count::{base_params, lora_params, n_params};
pub use gpt2::Gpt2;
pub use llama::Llama;
pub use neox::Neox;
pub use phi3::Phi3;
pub use pipeline::pp_layers;

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
        Model::build_stage(e, cfg, Stage::whole(cfg))
    }

    /// One pipeline-parallel rank's share of the model: the decoders on Llama's layers are
    /// split (llama.rs); the others, for which validation refuses pipeline parallelism, are
    /// built whole.
    pub fn build_stage(e: &mut Engine, cfg: &TrainConfig, stage: Stage) -> Model {
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
            | ModelType::Qwen3 => Model::Llama(Llama::build_stage(e, cfg, stage)),
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

    /// Inference on one stage: from its input to the last position's logits (the last
    /// stage) or to the hidden states it hands on.
    pub fn stage_logits(&self, e: &mut Engine, input: StageInput) -> StageOutput {
        let head = Head::Logits { all: false };
        match (self, input) {
            (Model::Llama(m), input) => m.forward_stage(e, input, head),
            (_, StageInput::Ids(idx)) => StageOutput::Done(self.run(e, idx, head)),
            // Never split (see build_stage): nothing to run on received hidden states.
            (_, StageInput::Hidden(h)) => StageOutput::Hidden(h),
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

/// One pipeline-parallel rank's share of the model, as vLLM 0.10.1 builds it
/// (vllm/model_executor/models/): `make_layers` keeps the layers `start..end`
/// ([`pp_layers`]), the others are `PPMissingLayer`s without
/// weights. The ends depend on the model's file ([`Stage::ends_on_every_rank`]). The first
/// rank embeds and the last runs the final norm, lm_head and sampler either way. The whole
/// model is one stage, first and last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub start: u64,
    pub end: u64,
    pub first: bool,
    pub last: bool,
}

impl Stage {
    pub fn whole(cfg: &TrainConfig) -> Stage {
        Stage {
            start: 0,
            end: cfg.n_layer,
            first: true,
            last: true,
        }
    }

    /// Rank `rank` of `cfg.pipeline_parallel_size`; None when there is no such rank.
    pub fn of_rank(cfg: &TrainConfig, rank: u64) -> Option<Stage> {
        let size = cfg.pipeline_parallel_size;
        let layers = pp_layers(cfg.n_layer, rank, size)?;
        Some(Stage {
            start: layers.start,
            end: layers.end,
            first: rank == 0,
            last: rank + 1 == size,
        })
    }

    /// Whether vLLM builds `embed_tokens`, the final norm and the lm_head on every rank.
    /// llama.py (Llama, Mistral) and qwen2.py (Qwen2, Qwen3's `Qwen3Model`) do not:
    /// `embed_tokens` only `if get_pp_group().is_first_rank or (config.tie_word_embeddings and
    /// get_pp_group().is_last_rank)` (the last rank's lm_head then ties to that copy), the
    /// norm and lm_head only on the last rank, `PPMissingLayer()` elsewhere. gemma.py,
    /// gemma2.py, gemma3.py, olmo2.py, mixtral.py, qwen2_moe.py and qwen3_moe.py build
    /// `embed_tokens` and
    /// `norm` unconditionally in their `*Model.__init__`, and their lm_head (a
    /// `ParallelLMHead`, or the embedding when tied; Gemma always uses the embedding) in
    /// `*ForCausalLM.__init__`: every rank holds them.
    pub fn ends_on_every_rank(cfg: &TrainConfig) -> bool {
        !matches!(
            cfg.model_type,
            ModelType::Llama | ModelType::Mistral | ModelType::Qwen2 | ModelType::Qwen3
        )
    }

    /// This rank holds `embed_tokens` (see [`Stage::ends_on_every_rank`]).
    pub fn has_embeddings(&self, cfg: &TrainConfig) -> bool {
        self.first || (self.last && cfg.tie_word_embeddings) || Stage::ends_on_every_rank(cfg)
    }

    /// This rank holds the final norm and the lm_head (the embedding, when tied).
    pub fn has_head(&self, cfg: &TrainConfig) -> bool {
        self.last || Stage::ends_on_every_rank(cfg)
    }

    /// The tensors one rank hands the next (`make_empty_intermediate_tensors_factory`):
    /// hidden_states and the fused residual stream, or olmo2.py's hidden_states alone (its
    /// post-norm layers carry no separate residual).
    pub fn intermediate_tensors(cfg: &TrainConfig) -> &'static [&'static str] {
        match cfg.model_type {
            ModelType::Olmo2 => &["hidden_states"],
            _ => &["hidden_states", "residual"],
        }
    }
}

/// What one stage's forward starts from: the token ids (the first rank), or the hidden states
/// received from the rank before (vLLM's `IntermediateTensors["hidden_states"]`, a slice of
/// the runner's buffer, which outlives the forward).
#[derive(Debug, Clone, Copy)]
pub enum StageInput {
    Ids(T),
    Hidden(V),
}

/// What one stage's forward ends in: the head's output (the last rank), or the last layer's
/// hidden states for the next rank.
pub enum StageOutput {
    Done(Output),
    Hidden(V),
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
        return crate::sim::ops::lm_head(e, x, weight);
    }
    let name = crate::sim::Name::top("lm_head", "input_last");
    let last = crate::sim::ops::last_position(e, x, copy, name);
    let logits = crate::sim::ops::lm_head(e, last, weight);
    e.drop_value(last);
    logits
}
