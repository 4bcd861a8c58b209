//! Every key vramplan accepts: its type, whether it changes memory, and how it sets its
//! `TrainConfig` field. One table, so the loaders, the overrides, `to_overrides`, `to_toml` and
//! the README's key table can never disagree about a key.

pub(crate) use super::fields::{get, set};
use super::value::Value;
use super::TrainConfig;

/// The Python type a key takes. nanoGPT's configurator asserts an override has the type of the
/// default; we allow an int where a float is expected (`--dropout=0` means 0.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Float,
    Bool,
    Str,
    /// int or None (vramplan's `eval_batch_size`).
    OptInt,
    /// str or None (vramplan's `alloc_conf`).
    OptStr,
    /// True, False or None (vramplan's `use_reentrant`).
    OptBool,
    /// float or None (Gemma's soft-capping keys).
    OptFloat,
}

impl Ty {
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Ty::Int => "an int",
            Ty::Float => "a float",
            Ty::Bool => "True or False",
            Ty::Str => "a string",
            Ty::OptInt => "an int or None",
            Ty::OptStr => "a string or None",
            Ty::OptBool => "True, False or None",
            Ty::OptFloat => "a float or None",
        }
    }

    pub(crate) fn accepts(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Ty::Int, Value::Int(_))
                | (Ty::Float, Value::Int(_) | Value::Float(_))
                | (Ty::Bool, Value::Bool(_))
                | (Ty::Str, Value::Str(_))
                | (Ty::OptInt, Value::Int(_) | Value::None)
                | (Ty::OptStr, Value::Str(_) | Value::None)
                | (Ty::OptBool, Value::Bool(_) | Value::None)
                | (Ty::OptFloat, Value::Int(_) | Value::Float(_) | Value::None)
        )
    }
}

/// What setting a key does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Sets the `TrainConfig` field of the same name.
    Field,
    /// A nanoGPT key that does not change GPU memory: accepted, type-checked, ignored. The
    /// constant is train.py's default, so config files may refer to it (`lr_decay_iters = max_iters`).
    Ignored(Const),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Const {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    pub ty: Ty,
    pub effect: Effect,
    /// A global of nanoGPT's train.py (so `python train.py --key=value` accepts it).
    pub nanogpt: bool,
    pub doc: &'static str,
}

const fn field(name: &'static str, ty: Ty, nanogpt: bool, doc: &'static str) -> KeySpec {
    KeySpec {
        name,
        ty,
        effect: Effect::Field,
        nanogpt,
        doc,
    }
}

const fn ignored(name: &'static str, ty: Ty, default: Const, doc: &'static str) -> KeySpec {
    KeySpec {
        name,
        ty,
        effect: Effect::Ignored(default),
        nanogpt: true,
        doc,
    }
}

/// The registry, in the order of nanoGPT's train.py where the key is nanoGPT's.
pub const KEYS: &[KeySpec] = &[
    ignored("out_dir", Ty::Str, Const::Str("out"), "checkpoint directory (ignored: no memory effect)"),
    field("eval_interval", Ty::Int, true, "iterations between estimate_loss() calls"),
    ignored("log_interval", Ty::Int, Const::Int(1), "iterations between log lines (ignored)"),
    field("eval_iters", Ty::Int, true, "batches per split in estimate_loss()"),
    field("eval_only", Ty::Bool, true, "exit after the first eval: no training step (a resumed run, starting at iter_num > 0, still trains)"),
    ignored("always_save_checkpoint", Ty::Bool, Const::Bool(true), "save after every eval (no GPU memory: torch.save copies each storage to the host)"),
    field("init_from", Ty::Str, true, "'scratch', 'resume', or 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' (GPT-2 weights: fixes the shape)"),
    ignored("wandb_log", Ty::Bool, Const::Bool(false), "log to Weights & Biases (ignored)"),
    ignored("wandb_project", Ty::Str, Const::Str("owt"), "W&B project (ignored)"),
    ignored("wandb_run_name", Ty::Str, Const::Str("gpt2"), "W&B run name (ignored)"),
    field("dataset", Ty::Str, true, "data/<dataset>; 'shakespeare_char' means vocab_size 65"),
    field("gradient_accumulation_steps", Ty::Int, true, "micro-steps per optimizer step, over all ranks (nanoGPT divides by world_size)"),
    field("batch_size", Ty::Int, true, "micro-batch size per rank"),
    field("block_size", Ty::Int, true, "sequence length T"),
    field("n_layer", Ty::Int, true, "transformer blocks"),
    field("n_head", Ty::Int, true, "attention heads (must divide n_embd)"),
    field("n_embd", Ty::Int, true, "model width"),
    field("dropout", Ty::Float, true, "dropout probability in [0, 1); > 0 keeps dropout masks"),
    field("bias", Ty::Bool, true, "bias in Linear and LayerNorm layers (llama, mistral, gemma: attention_bias; qwen2: q/k/v biases)"),
    ignored("learning_rate", Ty::Float, Const::Float(6e-4), "max learning rate (ignored)"),
    field("max_iters", Ty::Int, true, "last iteration (train.py runs 0..=max_iters); an estimate_loss() follows training only when eval_interval <= max_iters"),
    field("weight_decay", Ty::Float, true, "AdamW weight decay"),
    ignored("beta1", Ty::Float, Const::Float(0.9), "AdamW beta1 (ignored)"),
    ignored("beta2", Ty::Float, Const::Float(0.95), "AdamW beta2 (ignored)"),
    field("grad_clip", Ty::Float, true, "clip gradient norm at this value; 0.0 disables clipping"),
    ignored("decay_lr", Ty::Bool, Const::Bool(true), "cosine learning-rate decay (ignored)"),
    ignored("warmup_iters", Ty::Int, Const::Int(2000), "warm-up iterations (ignored)"),
    ignored("lr_decay_iters", Ty::Int, Const::Int(600000), "decay horizon (ignored)"),
    ignored("min_lr", Ty::Float, Const::Float(6e-5), "final learning rate (ignored)"),
    ignored("backend", Ty::Str, Const::Str("nccl"), "DDP backend (ignored)"),
    ignored("device", Ty::Str, Const::Str("cuda"), "torch device (ignored: vramplan predicts the CUDA run)"),
    field("dtype", Ty::Str, true, "'float32', 'bfloat16' or 'float16' (autocast precision)"),
    field("compile", Ty::Bool, true, "torch.compile the model"),
    field("precision_mode", Ty::Str, false, "'mixed' (autocast in dtype over fp32 weights; float16 adds GradScaler) or 'pure' (weights, gradients and optimizer state in dtype, no autocast: torchtune, LitGPT bf16-true)"),
    // vramplan's own keys, in nanoGPT's style.
    field("vocab_size", Ty::Int, false, "vocabulary; default 50304, 50257 for gpt2* weights, 65 for shakespeare_char"),
    field("flash", Ty::Bool, false, "True = F.scaled_dot_product_attention, False = manual masked softmax"),
    field("activation_checkpointing", Ty::Bool, false, "recompute each block's activations in backward"),
    field("checkpoint_policy", Ty::Str, false, "with activation_checkpointing: 'full' recomputes every op of a checkpointed block; 'op' is torchtitan's per-op selective AC (keeps the outputs of every other matmul, of SDPA and of the other compute-intensive ops; recomputes the rest; non-reentrant); 'offload' is axolotl's gradient_checkpointing: offload (Unsloth's offloaded checkpointer: each block's input kept in host memory, the recomputation and backward as a reentrant checkpoint)"),
    field("use_reentrant", Ty::OptBool, false, "with activation_checkpointing: torch.utils.checkpoint's use_reentrant (True keeps each block's recomputed output and incoming gradient through its backward); None = the framework's default (transformers 4.x: True, 5.x: False; nanoGPT's printed change, torchtune, LitGPT: False)"),
    field("checkpoint_every", Ty::Int, false, "with activation_checkpointing: checkpoint every k-th block, the 1-based k-th, 2k-th, ... (torchtitan's selective_ac_option = 'k'); 1 = every block"),
    field("optimizer", Ty::Str, false, "'adamw' (fused, as nanoGPT), 'adamw_foreach' (torch's default), 'adamw_single', 'adamw8bit', 'paged_adamw8bit', 'paged_adamw', 'adafactor', 'lion' or 'sgd'"),
    field("eval_batch_size", Ty::OptInt, false, "batch size of estimate_loss(); None = batch_size"),
    field("loss", Ty::Str, false, "'standard' (F.cross_entropy), 'chunked' (4096-row chunks, each checkpointed: no full logits) or 'liger' (Liger-Kernel's fused linear cross-entropy, use_liger_kernel: gradients computed in the forward and kept; Hugging Face decoders Liger patches)"),
    field("alloc_conf", Ty::OptStr, false, "PYTORCH_CUDA_ALLOC_CONF, e.g. 'expandable_segments:True'"),
    field("world_size", Ty::Int, false, "number of GPUs (ranks)"),
    field("ddp_bucket_view", Ty::Bool, false, "DDP(gradient_as_bucket_view=True): gradients are views into DDP's buckets"),
    field("offload_optimizer", Ty::Bool, false, "ZeRO-Offload (zero2/zero3): fp32 master weights, optimizer state and fp32 gradient partitions on the CPU"),
    field("offload_params", Ty::Bool, false, "zero3: offload_param to the CPU; fsdp: CPUOffload(offload_params=True) (sharded parameters, gradients and optimizer on the CPU)"),
    field("parallelism", Ty::Str, false, "'ddp', 'fsdp' (FULL_SHARD), 'fsdp_grad_op' (SHARD_GRAD_OP), 'zero1', 'zero2', 'zero3' or 'tp' (tensor parallel of degree world_size)"),
    // Architectures beyond nanoGPT's GPT (src/config/model_keys.rs).
    field("model_type", Ty::Str, false, "'gpt2' (nanoGPT's GPT), or Hugging Face's 'llama', 'mistral', 'qwen2', 'gemma', 'gemma2', 'gemma3_text', 'qwen3', 'phi3', 'olmo2', 'mixtral', 'qwen3_moe', 'qwen2_moe', 'gpt_neox'"),
    field("n_kv_head", Ty::OptInt, false, "key/value heads (grouped-query attention); None = n_head"),
    field("head_dim", Ty::OptInt, false, "channels per attention head; None = n_embd / n_head"),
    field("intermediate_size", Ty::OptInt, false, "MLP hidden width; None = 4 * n_embd"),
    field("tie_word_embeddings", Ty::Bool, false, "lm_head shares the token embedding's weight (nanoGPT: always)"),
    field("rotary_pct", Ty::Float, false, "fraction of head_dim that rotary embeddings rotate (GPT-NeoX: 0.25)"),
    field("parallel_residual", Ty::Bool, false, "x + attn(ln1(x)) + mlp(ln2(x)), GPT-NeoX's use_parallel_residual"),
    field("attn_softcap", Ty::OptFloat, false, "gemma2/gemma3_text: cap * tanh(scores / cap) in eager attention (attn_logit_softcapping; Gemma 2: 50.0); None = off"),
    field("final_softcap", Ty::OptFloat, false, "gemma2/gemma3_text: cap * tanh(logits / cap) on the full logits before the loss (final_logit_softcapping; Gemma 2: 30.0); None = off"),
    field("sliding_window", Ty::OptInt, false, "gemma2/gemma3_text: tokens a sliding-window layer attends over; None = every layer global"),
    field("global_every", Ty::OptInt, false, "gemma2/gemma3_text with sliding_window: every k-th layer (1-based) is global, the rest slide (Gemma 2: 2, Gemma 3: 6, config.json's layer_types); None = every layer slides"),
    field("num_experts", Ty::OptInt, false, "mixtral, qwen3_moe, qwen2_moe: experts per MoE layer (num_local_experts / num_experts; Mixtral 8x7B: 8); None elsewhere"),
    field("experts_per_token", Ty::OptInt, false, "mixtral, qwen3_moe, qwen2_moe: experts each token is routed to (num_experts_per_tok; Mixtral: 2); None elsewhere"),
    field("moe_intermediate_size", Ty::OptInt, false, "qwen3_moe, qwen2_moe: each expert's hidden width (Qwen3-30B-A3B: 768); None = intermediate_size"),
    field("shared_expert_intermediate_size", Ty::OptInt, false, "qwen2_moe: the shared expert's hidden width (Qwen1.5-MoE-A2.7B: 5632); None elsewhere"),
    field("decoder_sparse_step", Ty::OptInt, false, "qwen2_moe, qwen3_moe: every k-th layer (1-based) is sparse, the others dense MLPs of intermediate_size; None = 1"),
    field("mlp_only_layers", Ty::Str, false, "qwen2_moe, qwen3_moe: comma-separated 0-based layers with a dense MLP of intermediate_size (config.json's list); '' = none"),
    field("norm_topk_prob", Ty::Bool, false, "MoE: the top-k routing weights renormalised to sum to 1 (Mixtral always; Qwen2/Qwen3-MoE's norm_topk_prob)"),
    field("output_router_logits", Ty::Bool, false, "MoE training: every MoE layer's router logits kept to the end of the forward for load_balancing_loss_func, its loss added x router_aux_loss_coef (config.json's key; axolotl's model_config); False = no auxiliary loss"),
    field("lora_rank", Ty::Int, false, "LoRA adapter rank; 0 = full fine-tuning (base weights frozen in dtype otherwise)"),
    field("lora_alpha", Ty::Float, false, "LoRA scale numerator (alpha / rank); no memory effect"),
    field("lora_dropout", Ty::Float, false, "dropout on the LoRA adapters' input (keeps a mask per adapter)"),
    field("lora_targets", Ty::Str, false, "Linear layers LoRA wraps: comma-separated names, 'all-linear', or '' for PEFT's default (q_proj,v_proj; NeoX: query_key_value)"),
    // Inference (src/config/infer_keys.rs): block_size is the context, batch_size the sequences.
    field("mode", Ty::Str, false, "'train' (nanoGPT's train.py) or 'inference' (frozen weights, KV cache for block_size tokens, prefill + decode)"),
    field("prompt_len", Ty::OptInt, false, "inference: tokens of the prefill; None = block_size (a full context, the worst case)"),
    field("kv_cache_dtype", Ty::OptStr, false, "inference: KV cache element type, 'float32', 'bfloat16', 'float16' or 'fp8'; None = dtype"),
    field("logits_all", Ty::Bool, false, "inference: logits of every prompt position (False: the last position only, as generate() and vLLM do)"),
    field("gpu_memory_utilization", Ty::Float, false, "inference: vLLM's --gpu-memory-utilization, the fraction of the card vLLM may use"),
    field("max_num_batched_tokens", Ty::OptInt, false, "inference: vLLM's --max-num-batched-tokens, the profile forward's tokens; None = the default of vllm_version on the card (V1 `vllm serve`: 8192 on cards of 70 GiB or more other than A100, else 2048; V0: max(block_size, 2048))"),
    field("max_num_seqs", Ty::OptInt, false, "inference: vLLM's --max-num-seqs (requests in the profile run); None = the default of vllm_version on the card (V1: 1024 on cards of 70 GiB or more other than A100, else 256; V0: 256)"),
    field("vllm_version", Ty::Str, false, "inference: which vLLM engine sizes the KV cache, 'v1' (vLLM 0.10's V1, the default) or 'v0' (vLLM 0.6's V0 worker)"),
    field("enable_expert_parallel", Ty::Bool, false, "inference, MoE models: vLLM's --enable-expert-parallel, each of the tensor_parallel_size ranks holds E // tp whole experts (the first E % tp ranks one more; the rank with most is simulated) instead of every expert at width / tp"),
    field("tensor_parallel_size", Ty::Int, false, "inference: vLLM's --tensor-parallel-size, GPUs that split every layer's weights and KV heads (one rank is simulated)"),
    field("pipeline_parallel_size", Ty::Int, false, "inference: vLLM's --pipeline-parallel-size, GPUs that each hold a consecutive share of the layers (every rank simulated; the one with the fewest KV blocks binds)"),
    field("cuda_graphs", Ty::Bool, false, "inference: keep the private memory pool of vLLM's decode CUDA graphs (False = --enforce-eager, HF generate())"),
    field("quantization", Ty::Str, false, "quantized base Linear weights: bitsandbytes 'none', 'nf4' or 'fp4' (4-bit, QLoRA), 'int8' (LLM.int8); vLLM checkpoints (inference) 'awq', 'gptq' (4-bit, group 128) or 'fp8'"),
    field("double_quant", Ty::Bool, false, "4-bit: quantize the absmax constants again to 8 bits (bnb_4bit_use_double_quant)"),
    field("transformers_version", Ty::OptStr, false, "Hugging Face models: the transformers release that runs them, e.g. '4.44' or '4.46.3' (up to 4.45 the forward upcasts the logits to fp32 and copies them shifted; 4.46-4.48 the loss does; from 4.49 labels are padded instead; Gemma and Gemma 2 scale the embeddings inside the module from 5.4; checkpointing's use_reentrant default is False from 5.0); None = 4.49 or later, taking the older form where later releases differ (it holds more)"),
    field("framework", Ty::Str, false, "whose semantics the run follows: 'nanogpt', 'hf-trainer', 'axolotl', 'torchtune' or 'litgpt' (set by the file's format; changes how accumulation is counted, how suggest answers, and whether the loop holds the logits through the backward: nanoGPT and LitGPT do, a Trainer and torchtune do not)"),
];

/// The spec of a key, if it exists.
pub fn spec(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == name)
}

/// The key's nanoGPT default as an override would write it (`12`, `True`, `'bfloat16'`), for
/// messages that show how to write one.
pub fn example_value(name: &str) -> String {
    match spec(name).map(|s| get(&TrainConfig::default(), s)) {
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Float(x)) => super::value::float_repr(x),
        Some(Value::Bool(b)) => if b { "True" } else { "False" }.to_string(),
        Some(Value::Str(s)) => s,
        Some(Value::None) | None => "None".to_string(),
    }
}

/// True when `python train.py --key=value` accepts the key (vramplan's own keys are not).
pub fn is_nanogpt_key(name: &str) -> bool {
    spec(name).is_some_and(|k| k.nanogpt)
}

/// The known key nearest to `name` by edit distance (ties: first in registry order).
pub fn closest_key(name: &str) -> &'static str {
    KEYS.iter()
        .map(|k| (edit_distance(name, k.name), k.name))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
        .unwrap_or("batch_size")
}

/// The error for an unknown key set at `origin`: "unknown key 'batchsize' (did you mean
/// 'batch_size'?)".
pub(crate) fn unknown_key(origin: impl std::fmt::Display, name: &str) -> crate::error::Error {
    crate::error::Error::with(
        crate::error::ErrorKind::UnknownKey { key: name.into() },
        format!("{origin}: {}", unknown_key_message(name)),
    )
}

/// "unknown key 'batchsize' (did you mean 'batch_size'?)".
fn unknown_key_message(name: &str) -> String {
    format!(
        "unknown key '{}' (did you mean '{}'?); the keys are nanoGPT's train.py globals and vramplan's own, see the key table in README.md",
        name.chars().take(80).collect::<String>(),
        closest_key(name)
    )
}

/// Levenshtein distance over chars, two rows. Inputs are capped so that a pathological
/// "key" cannot make this quadratic in a megabyte.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(256).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// (key, one-line description, default as nanoGPT writes it) for every key, in registry order:
/// the README's key table.
pub fn key_table() -> Vec<(&'static str, &'static str, String)> {
    let defaults = TrainConfig::default();
    KEYS.iter()
        .map(|k| (k.name, k.doc, get(&defaults, k).to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_key_round_trips() {
        let cfg = TrainConfig::default();
        for k in KEYS.iter().filter(|k| k.effect == Effect::Field) {
            let mut c = TrainConfig::default();
            let v = get(&cfg, k);
            set(&mut c, k, &v).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            assert_eq!(c, cfg, "{}", k.name);
        }
    }

    #[test]
    fn closest_key_by_edit_distance() {
        assert_eq!(closest_key("batchsize"), "batch_size");
        assert_eq!(closest_key("n_embed"), "n_embd");
        assert_eq!(
            closest_key("gradient_accumulation"),
            "gradient_accumulation_steps"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn key_table_lists_every_key_once() {
        let t = key_table();
        assert_eq!(t.len(), KEYS.len());
        let mut names: Vec<_> = t.iter().map(|r| r.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
        assert!(t.iter().any(|r| r.0 == "dtype" && r.2 == "'bfloat16'"));
        // The README renders it as a markdown table.
        assert!(t.iter().all(|r| !r.1.contains('|') && !r.2.contains('|')));
        assert!(t
            .iter()
            .any(|r| r.0 == "gradient_accumulation_steps" && r.2 == "40"));
    }
}
