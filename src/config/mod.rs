//! `TrainConfig`: the one resolved description of a training run.
//!
//! Its field names are nanoGPT's `train.py` globals, so a nanoGPT user's config file means the
//! same thing here as there. Keys nanoGPT lacks (`flash`, `activation_checkpointing`, `optimizer`,
//! `eval_batch_size`, `loss`, `alloc_conf`, `world_size`, `parallelism`) are named in the same
//! style. Defaults are nanoGPT's train.py defaults (GPT-2 124M on OpenWebText).

use serde::{Deserialize, Serialize};

mod apply;
pub mod attn_keys;
mod blame;
mod fields;
pub mod frameworks;
mod hf_gemma;
pub mod hf_json;
pub mod infer_keys;
mod kinds;
pub mod limits;
mod load;
pub mod lora;
pub mod model_keys;
pub mod models;
pub mod moe_keys;
mod nanogpt_py;
mod overflow;
mod overrides;
pub mod presets;
mod pyexpr;
mod pylex;
pub mod registry;
pub(crate) mod sharded;
mod toml_file;
pub mod transformers;
pub mod validate;
mod value;

pub use frameworks::{load_sources, Sources};
pub use infer_keys::{KvCacheDtype, Mode, VllmVersion};
pub use kinds::{
    CheckpointPolicy, Framework, LossKind, OptimizerKind, Parallelism, Precision, PrecisionMode,
};
pub(crate) use load::{file_assignments, read_text};
pub use load::{format_of, load, load_str, Format, Loaded};
pub use lora::Quantization;
pub use model_keys::ModelType;
pub use models::{load_hf_str, load_with_model, ModelSource};
pub use overrides::{apply_overrides, to_overrides};
pub use registry::{is_nanogpt_key, key_table};
pub use toml_file::to_toml;

/// One training run, fully resolved. Field names are nanoGPT's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    // --- the model (nanoGPT's GPTConfig) ---
    pub n_layer: u64,
    pub n_head: u64,
    pub n_embd: u64,
    pub block_size: u64,
    pub vocab_size: u64,
    pub dropout: f64,
    pub bias: bool,
    // --- the run ---
    pub batch_size: u64,
    pub gradient_accumulation_steps: u64,
    pub dtype: Precision,
    /// Whether `dtype` was written (a config file, an override) rather than left at nanoGPT's
    /// default: only the default falls back to float16 on a card without bf16.
    #[serde(skip)]
    pub dtype_written: Written,
    /// 'mixed' (autocast over fp32 weights) or 'pure' (weights, gradients, state in `dtype`).
    #[serde(default)]
    pub precision_mode: PrecisionMode,
    pub compile: bool,
    pub eval_iters: u64,
    pub eval_interval: u64,
    pub eval_only: bool,
    /// Iterations run (train.py: 0..=max_iters); with eval_interval, whether an
    /// estimate_loss() follows the training steps.
    #[serde(default = "default_max_iters")]
    pub max_iters: u64,
    pub init_from: String,
    pub dataset: String,
    pub weight_decay: f64,
    pub grad_clip: f64,
    // --- vramplan's keys, in nanoGPT's style ---
    /// true = F.scaled_dot_product_attention; false = the manual masked-softmax path.
    pub flash: bool,
    pub activation_checkpointing: bool,
    /// With activation_checkpointing: checkpoint every k-th block (1 = every block).
    #[serde(default = "infer_keys::one")]
    pub checkpoint_every: u64,
    /// With activation checkpointing: what a checkpointed block keeps (torchtitan's op policy).
    #[serde(default)]
    pub checkpoint_policy: CheckpointPolicy,
    /// With activation checkpointing: torch.utils.checkpoint's use_reentrant; None = the
    /// framework's default ([`TrainConfig::reentrant_checkpoint`]).
    #[serde(default)]
    pub use_reentrant: Option<bool>,
    pub optimizer: OptimizerKind,
    /// Batch size of estimate_loss(); nanoGPT uses the training batch_size (None).
    pub eval_batch_size: Option<u64>,
    pub loss: LossKind,
    /// PYTORCH_CUDA_ALLOC_CONF, e.g. "expandable_segments:True"; None = PyTorch's default.
    pub alloc_conf: Option<String>,
    pub world_size: u64,
    pub parallelism: Parallelism,
    /// DDP(gradient_as_bucket_view=True): `.grad` become views into the Reducer's buckets.
    #[serde(default)]
    pub ddp_bucket_view: bool,
    /// ZeRO-Offload (`zero_optimization.offload_optimizer.device = 'cpu'`): fp32 master
    /// partitions, optimizer state and fp32 gradient partitions in host memory.
    #[serde(default)]
    pub offload_optimizer: bool,
    /// ZeRO-3's `offload_param.device = 'cpu'`, or FSDP's `CPUOffload(offload_params=True)`:
    /// the sharded parameters (and under FSDP their gradients and the optimizer) on the host.
    #[serde(default)]
    pub offload_params: bool,
    // --- architectures beyond nanoGPT's GPT (Hugging Face config.json names in brackets) ---
    /// The decoder: nanoGPT's GPT or a Hugging Face architecture [model_type].
    #[serde(default)]
    pub model_type: ModelType,
    /// Key/value heads for grouped-query attention; None = n_head [num_key_value_heads].
    #[serde(default)]
    pub n_kv_head: Option<u64>,
    /// Channels per head; None = n_embd / n_head [head_dim].
    #[serde(default)]
    pub head_dim: Option<u64>,
    /// The MLP's hidden width; None = 4 * n_embd [intermediate_size].
    #[serde(default)]
    pub intermediate_size: Option<u64>,
    /// lm_head shares the token embedding's weight [tie_word_embeddings].
    #[serde(default = "model_keys::yes")]
    pub tie_word_embeddings: bool,
    /// Fraction of each head's dims that rotary rotates [rotary_pct / partial_rotary_factor].
    #[serde(default = "model_keys::one")]
    pub rotary_pct: f64,
    /// Attention and MLP read the same input and add to it together [use_parallel_residual].
    #[serde(default)]
    pub parallel_residual: bool,
    /// Gemma 2: `cap * tanh(scores / cap)` in eager attention [attn_logit_softcapping].
    #[serde(default)]
    pub attn_softcap: Option<f64>,
    /// Gemma 2: `cap * tanh(logits / cap)` before the loss [final_logit_softcapping].
    #[serde(default)]
    pub final_softcap: Option<f64>,
    /// Tokens a sliding-window layer attends over [sliding_window] (src/config/attn_keys.rs).
    #[serde(default)]
    pub sliding_window: Option<u64>,
    /// Every k-th layer attends globally [layer_types, sliding_window_pattern].
    #[serde(default)]
    pub global_every: Option<u64>,
    /// Mixtral: experts per MoE layer [num_local_experts] (src/config/moe_keys.rs).
    #[serde(default)]
    pub num_experts: Option<u64>,
    /// Mixtral: experts each token is routed to [num_experts_per_tok].
    #[serde(default)]
    pub experts_per_token: Option<u64>,
    /// Qwen3-MoE: each expert's hidden width [moe_intermediate_size]; None = intermediate_size.
    #[serde(default)]
    pub moe_intermediate_size: Option<u64>,
    /// Qwen2-MoE: the shared expert's hidden width [shared_expert_intermediate_size]; None
    /// elsewhere (no shared expert).
    #[serde(default)]
    pub shared_expert_intermediate_size: Option<u64>,
    /// Qwen2/Qwen3-MoE: every k-th layer (1-based) is sparse, the others dense
    /// [decoder_sparse_step]; None = 1.
    #[serde(default)]
    pub decoder_sparse_step: Option<u64>,
    /// Qwen2/Qwen3-MoE: the 0-based layers whose MLP is dense, comma-separated
    /// [mlp_only_layers]; "" = none.
    #[serde(default)]
    pub mlp_only_layers: String,
    /// The top-k routing weights are renormalised to sum to 1 [norm_topk_prob] (Mixtral: always).
    #[serde(default = "model_keys::yes")]
    pub norm_topk_prob: bool,
    /// MoE: every MoE layer's router logits are returned and the auxiliary load-balancing
    /// loss is added to the loss [output_router_logits].
    #[serde(default)]
    pub output_router_logits: bool,
    // --- LoRA (PEFT): frozen base weights in `dtype`, fp32 adapters A (r x in), B (out x r) ---
    /// Adapter rank; 0 = full fine-tuning [LoraConfig.r].
    #[serde(default)]
    pub lora_rank: u64,
    /// Adapter scale numerator (scaling = alpha / r); no memory effect [lora_alpha].
    #[serde(default = "model_keys::sixteen")]
    pub lora_alpha: f64,
    /// Dropout on the adapters' input [lora_dropout].
    #[serde(default)]
    pub lora_dropout: f64,
    /// Comma-separated Linear names, 'all-linear', or '' for PEFT's default [target_modules].
    #[serde(default = "model_keys::lora_default_targets")]
    pub lora_targets: String,
    // --- inference (src/config/infer_keys.rs) ---
    /// Train (nanoGPT's train.py) or serve the model.
    #[serde(default)]
    pub mode: Mode,
    /// Tokens of the prefill; None = block_size.
    #[serde(default)]
    pub prompt_len: Option<u64>,
    /// The KV cache's element type; None = the weights' dtype.
    #[serde(default)]
    pub kv_cache_dtype: Option<KvCacheDtype>,
    /// Logits of every prompt position instead of the last one.
    #[serde(default = "infer_keys::no")]
    pub logits_all: bool,
    /// vLLM's --gpu-memory-utilization.
    #[serde(default = "infer_keys::default_utilization")]
    pub gpu_memory_utilization: f64,
    /// vLLM's --max-num-batched-tokens (the profile forward's tokens); None = vLLM's default.
    #[serde(default)]
    pub max_num_batched_tokens: Option<u64>,
    /// vLLM's --max-num-seqs; None = the default of `vllm_version` on the card.
    #[serde(default)]
    pub max_num_seqs: Option<u64>,
    /// Which vLLM engine sizes the KV cache: V1 (the default since vLLM 0.8) or V0.
    #[serde(default)]
    pub vllm_version: VllmVersion,
    /// vLLM's --tensor-parallel-size: GPUs that split each layer (weights, KV heads).
    #[serde(default = "infer_keys::one")]
    pub tensor_parallel_size: u64,
    /// vLLM's --pipeline-parallel-size: GPUs that each hold a consecutive share of the layers.
    #[serde(default = "infer_keys::one")]
    pub pipeline_parallel_size: u64,
    /// vLLM's --enable-expert-parallel: the MoE layers' experts are spread whole over the
    /// tensor-parallel ranks instead of each expert's width being split.
    #[serde(default)]
    pub enable_expert_parallel: bool,
    /// Experts the simulated rank holds (vLLM expert parallelism: set by the vLLM planner's
    /// `rank_config`); None = every expert.
    #[serde(skip)]
    pub rank_experts: Option<u64>,
    /// Decode CUDA graphs captured (vLLM without --enforce-eager): their memory pool.
    #[serde(default = "infer_keys::no")]
    pub cuda_graphs: bool,
    // --- bitsandbytes quantization of the base Linear weights (QLoRA, 4/8-bit inference) ---
    /// 'none', 'nf4' or 'fp4' (Linear4bit), 'int8' (Linear8bitLt) [BitsAndBytesConfig].
    #[serde(default)]
    pub quantization: Quantization,
    /// 4-bit absmax constants quantized again to 8 bits [bnb_4bit_use_double_quant].
    #[serde(default = "model_keys::yes")]
    pub double_quant: bool,
    /// Whose semantics the run follows (defaults, how accumulation is counted, the format of
    /// `suggest`'s answer): src/config/frameworks/.
    #[serde(default)]
    pub framework: Framework,
    /// The transformers release a Hugging Face model runs in (its lm_head-to-loss chain);
    /// None = the newest chain.
    #[serde(default)]
    pub transformers_version: transformers::TransformersVersion,
}

impl Default for TrainConfig {
    /// nanoGPT's train.py defaults: GPT-2 124M, OpenWebText, batch 12 x accumulation 40.
    fn default() -> Self {
        TrainConfig {
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            block_size: 1024,
            vocab_size: 50304,
            dropout: 0.0,
            bias: false,
            batch_size: 12,
            gradient_accumulation_steps: 5 * 8,
            dtype: Precision::BFloat16,
            dtype_written: Written(false),
            precision_mode: PrecisionMode::Mixed,
            compile: true,
            eval_iters: 200,
            eval_interval: 2000,
            eval_only: false,
            max_iters: default_max_iters(),
            init_from: "scratch".to_string(),
            dataset: "openwebtext".to_string(),
            weight_decay: 1e-1,
            grad_clip: 1.0,
            flash: true,
            activation_checkpointing: false,
            checkpoint_every: 1,
            checkpoint_policy: CheckpointPolicy::Full,
            use_reentrant: None,
            optimizer: OptimizerKind::AdamW,
            eval_batch_size: None,
            loss: LossKind::Standard,
            alloc_conf: None,
            world_size: 1,
            parallelism: Parallelism::Ddp,
            ddp_bucket_view: false,
            offload_optimizer: false,
            offload_params: false,
            model_type: ModelType::Gpt2,
            n_kv_head: None,
            head_dim: None,
            intermediate_size: None,
            tie_word_embeddings: true,
            rotary_pct: 1.0,
            parallel_residual: false,
            attn_softcap: None,
            final_softcap: None,
            sliding_window: None,
            global_every: None,
            num_experts: None,
            experts_per_token: None,
            moe_intermediate_size: None,
            shared_expert_intermediate_size: None,
            decoder_sparse_step: None,
            mlp_only_layers: String::new(),
            norm_topk_prob: true,
            output_router_logits: false,
            lora_rank: 0,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            lora_targets: model_keys::lora_default_targets(),
            mode: Mode::Train,
            prompt_len: None,
            kv_cache_dtype: None,
            logits_all: false,
            gpu_memory_utilization: infer_keys::default_utilization(),
            max_num_batched_tokens: None,
            max_num_seqs: None,
            vllm_version: VllmVersion::V1,
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
            enable_expert_parallel: false,
            rank_experts: None,
            cuda_graphs: false,
            quantization: Quantization::None,
            double_quant: true,
            framework: Framework::NanoGpt,
            transformers_version: transformers::TransformersVersion(None),
        }
    }
}

/// Whether a key was written by the user. Provenance, not a property of the run: two configs
/// that run the same are equal whoever wrote their keys, so this always compares equal (a
/// config written out with `to_toml` and read back is the same run).
#[derive(Debug, Clone, Copy, Default)]
pub struct Written(pub bool);

impl PartialEq for Written {
    fn eq(&self, _: &Written) -> bool {
        true
    }
}

/// nanoGPT train.py's max_iters.
fn default_max_iters() -> u64 {
    600_000
}

impl TrainConfig {
    /// The batch size estimate_loss() runs with.
    pub fn eval_batch(&self) -> u64 {
        self.eval_batch_size.unwrap_or(self.batch_size)
    }

    /// Tokens per optimizer step, over all ranks: batch_size x block_size x accumulation.
    pub fn tokens_per_step(&self) -> Option<u64> {
        self.batch_size
            .checked_mul(self.block_size)?
            .checked_mul(self.gradient_accumulation_steps)
    }

    /// The checks every loader runs (sizes positive and within `limits::LIMITS`, n_embd % n_head == 0,
    /// dropout in [0, 1), bytes that fit in u64, ...), for configs built in code, e.g. by
    /// `suggest`. Messages name the key.
    pub fn validate(&self) -> crate::error::Result<()> {
        validate::validate(self, &std::collections::HashMap::new())
    }

    /// gradient_accumulation_steps as the run's framework counts it: per rank for the Trainer,
    /// axolotl and torchtune, over all ranks for nanoGPT (and LitGPT's global batch).
    pub fn accumulation_as_counted(&self) -> u64 {
        if self.framework.accumulation_per_rank() {
            self.gradient_accumulation_steps / self.world_size.max(1)
        } else {
            self.gradient_accumulation_steps
        }
    }

    /// Whether activation checkpointing runs torch.utils.checkpoint with use_reentrant=True:
    /// as written, else the framework's default. transformers' `gradient_checkpointing_enable`
    /// passes `{"use_reentrant": True}` when given no kwargs in 4.x (read in 4.40 and 4.57,
    /// modeling_utils.py) and False from 5.0; an unknown release takes the 4.x default, the
    /// one that holds more. nanoGPT's change as vramplan prints it, torchtune's
    /// `CheckpointImpl.NO_REENTRANT` wrapper and LitGPT's policy are non-reentrant.
    /// torchtitan's op policy runs non-reentrant (`ptd_checkpoint_wrapper`'s default
    /// `CheckpointImpl.NO_REENTRANT`; torch/utils/checkpoint.py accepts a `context_fn` only with
    /// use_reentrant=False, and validation refuses an explicit True).
    /// axolotl's offloading checkpointer is an autograd Function whose backward holds the
    /// recomputed output and the incoming gradient until `torch.autograd.backward` returns, as
    /// a reentrant checkpoint does (it ignores use_reentrant).
    pub fn reentrant_checkpoint(&self) -> bool {
        match self.checkpoint_policy {
            CheckpointPolicy::Op => return false,
            CheckpointPolicy::Offload => return true,
            CheckpointPolicy::Full => {}
        }
        self.use_reentrant.unwrap_or(match self.framework {
            Framework::HfTrainer | Framework::Axolotl => !self.on_transformers_5(),
            Framework::NanoGpt | Framework::Torchtune | Framework::Litgpt => false,
        })
    }

    /// The transformers release is 5.x: as written, or, with none written, for a
    /// mixture-of-experts model, whose path is simulated for 5.x only (moe_keys.rs refuses 4.x);
    /// any other unnamed release is taken as 4.49+, the form that holds more.
    pub fn on_transformers_5(&self) -> bool {
        match self.transformers_version.0 {
            Some(_) => self.transformers_version.at_least((5, 0)),
            None => self.num_experts.is_some(),
        }
    }

    /// Liger's fused cross-entropy can run this config: `use_liger_kernel` patches the
    /// decoders Liger has kernels for (liger_kernel/transformers/monkey_patch.py: not GPT-NeoX
    /// nor transformers' GPT-2), nanoGPT's GPT can call the loss module itself, and there is no
    /// vocabulary-parallel form.
    pub fn liger_runs(&self) -> bool {
        let patched = match self.model_type {
            ModelType::GptNeox => false,
            ModelType::Gpt2 => self.framework == Framework::NanoGpt,
            _ => true,
        };
        patched && self.parallelism != Parallelism::Tp
    }

    /// PYTORCH_CUDA_ALLOC_CONF asks for expandable segments.
    pub fn expandable_segments(&self) -> bool {
        self.alloc_conf.as_deref().is_some_and(|c| {
            c.replace(' ', "")
                .to_ascii_lowercase()
                .contains("expandable_segments:true")
        })
    }
}
