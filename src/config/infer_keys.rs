//! The keys of `mode = 'inference'`: serving a model instead of training it. Names follow
//! nanoGPT's style; the vLLM ones keep vLLM's engine-argument names (`--gpu-memory-utilization`
//! is `gpu_memory_utilization` here). In inference `block_size` is the context each sequence
//! may reach (vLLM's `--max-model-len`; the KV cache is sized for it) and `batch_size` the
//! sequences served together.

use super::blame::Blame;
use super::kinds::parse_name;
use super::value::{float, opt_count, opt_int, Origin, Value};
use super::TrainConfig;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What the run does with the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Mode {
    /// nanoGPT's train.py.
    #[default]
    #[serde(rename = "train")]
    Train,
    /// Weights frozen in `dtype`, a KV cache, one prefill and one decode step.
    #[serde(rename = "inference")]
    Inference,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Train => "train",
            Mode::Inference => "inference",
        }
    }
}

/// The KV cache's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCacheDtype {
    #[serde(rename = "float32")]
    Float32,
    #[serde(rename = "bfloat16")]
    BFloat16,
    #[serde(rename = "float16")]
    Float16,
    /// vLLM's `--kv-cache-dtype fp8` (e4m3 / e5m2): one byte per element.
    #[serde(rename = "fp8")]
    Fp8,
}

impl KvCacheDtype {
    pub const ALL: [KvCacheDtype; 4] = [
        KvCacheDtype::Float32,
        KvCacheDtype::BFloat16,
        KvCacheDtype::Float16,
        KvCacheDtype::Fp8,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KvCacheDtype::Float32 => "float32",
            KvCacheDtype::BFloat16 => "bfloat16",
            KvCacheDtype::Float16 => "float16",
            KvCacheDtype::Fp8 => "fp8",
        }
    }
}

/// Which vLLM engine sizes the KV cache at start-up (`plan::vllm` cites the source of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum VllmVersion {
    /// vLLM 0.6's V0 worker (vllm/worker/worker.py).
    #[serde(rename = "v0")]
    V0,
    /// vLLM 0.10's V1 engine (vllm/v1/worker/gpu_worker.py), the default since vLLM 0.8.
    #[default]
    #[serde(rename = "v1")]
    V1,
}

impl VllmVersion {
    pub const ALL: [VllmVersion; 2] = [VllmVersion::V0, VllmVersion::V1];

    pub fn as_str(self) -> &'static str {
        match self {
            VllmVersion::V0 => "v0",
            VllmVersion::V1 => "v1",
        }
    }

    /// How vLLM's own log names the engine ("V0", "V1").
    pub fn label(self) -> &'static str {
        match self {
            VllmVersion::V0 => "V0",
            VllmVersion::V1 => "V1",
        }
    }
}

pub(crate) fn one() -> u64 {
    1
}

pub(crate) fn no() -> bool {
    false
}

/// vLLM's default `--gpu-memory-utilization`.
pub(crate) fn default_utilization() -> f64 {
    0.9
}

/// Names of the keys this module owns.
pub(crate) const NAMES: &[&str] = &[
    "mode",
    "prompt_len",
    "kv_cache_dtype",
    "logits_all",
    "gpu_memory_utilization",
    "max_num_batched_tokens",
    "max_num_seqs",
    "cuda_graphs",
    "vllm_version",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "enable_expert_parallel",
];

/// The current value of one of these keys.
pub(crate) fn get(cfg: &TrainConfig, name: &str) -> Option<Value> {
    Some(match name {
        "mode" => Value::Str(cfg.mode.as_str().to_string()),
        "prompt_len" => opt_int(cfg.prompt_len),
        "kv_cache_dtype" => cfg
            .kv_cache_dtype
            .map_or(Value::None, |d| Value::Str(d.as_str().to_string())),
        "logits_all" => Value::Bool(cfg.logits_all),
        "gpu_memory_utilization" => Value::Float(cfg.gpu_memory_utilization),
        "max_num_batched_tokens" => opt_int(cfg.max_num_batched_tokens),
        "max_num_seqs" => opt_int(cfg.max_num_seqs),
        "vllm_version" => Value::Str(cfg.vllm_version.as_str().to_string()),
        "tensor_parallel_size" => Value::Int(cfg.tensor_parallel_size.into()),
        "pipeline_parallel_size" => Value::Int(cfg.pipeline_parallel_size.into()),
        "enable_expert_parallel" => Value::Bool(cfg.enable_expert_parallel),
        "cuda_graphs" => Value::Bool(cfg.cuda_graphs),
        _ => return None,
    })
}

/// Set one of these keys (its type already checked); None when the key is not one of them.
pub(crate) fn set(
    cfg: &mut TrainConfig,
    name: &str,
    v: &Value,
) -> Option<std::result::Result<(), String>> {
    let count = |v: &Value| opt_count(v, false);
    let whole = |v: &Value| match count(v) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err("expected an int, got None".to_string()),
        Err(e) => Err(e),
    };
    let r = match (name, v) {
        ("mode", Value::Str(s)) => match s.as_str() {
            "train" => {
                cfg.mode = Mode::Train;
                Ok(())
            }
            "inference" => {
                cfg.mode = Mode::Inference;
                Ok(())
            }
            _ => Err("expected one of 'train', 'inference'".to_string()),
        },
        ("prompt_len", v) => count(v).map(|x| cfg.prompt_len = x),
        ("max_num_batched_tokens", v) => count(v).map(|x| cfg.max_num_batched_tokens = x),
        ("max_num_seqs", v) => count(v).map(|x| cfg.max_num_seqs = x),
        ("tensor_parallel_size", v) => whole(v).map(|n| cfg.tensor_parallel_size = n),
        ("pipeline_parallel_size", v) => whole(v).map(|n| cfg.pipeline_parallel_size = n),
        ("enable_expert_parallel", Value::Bool(b)) => {
            cfg.enable_expert_parallel = *b;
            Ok(())
        }
        ("vllm_version", Value::Str(s)) => {
            match parse_name(&VllmVersion::ALL, VllmVersion::as_str, s) {
                Some(v) => {
                    cfg.vllm_version = v;
                    Ok(())
                }
                None => Err("expected 'v1' (vLLM's V1 engine) or 'v0'".to_string()),
            }
        }
        ("kv_cache_dtype", Value::None) => {
            cfg.kv_cache_dtype = None;
            Ok(())
        }
        ("kv_cache_dtype", Value::Str(s)) => {
            match parse_name(&KvCacheDtype::ALL, KvCacheDtype::as_str, s) {
                Some(d) => {
                cfg.kv_cache_dtype = Some(d);
                Ok(())
            },
                None => Err(
                    "expected None (the weights' dtype) or one of 'float32', 'bfloat16', 'float16', 'fp8'"
                        .to_string(),
                ),
            }
        }
        ("cuda_graphs", Value::Bool(b)) => {
            cfg.cuda_graphs = *b;
            Ok(())
        }
        ("logits_all", Value::Bool(b)) => {
            cfg.logits_all = *b;
            Ok(())
        }
        ("gpu_memory_utilization", Value::Float(_) | Value::Int(_)) => {
            cfg.gpu_memory_utilization = float(v);
            Ok(())
        }
        _ if NAMES.contains(&name) => Err(format!("got a {}", v.type_name())),
        _ => return None,
    };
    Some(r)
}

/// The checks these keys need beyond their types; messages name where the value came from.
pub(crate) fn validate(cfg: &TrainConfig, origins: &HashMap<&'static str, Origin>) -> Result<()> {
    let blame = &Blame(origins);
    let u = cfg.gpu_memory_utilization;
    if !(u.is_finite() && u > 0.0 && u <= 1.0) {
        return blame.fail(
            "gpu_memory_utilization",
            super::value::float_repr(u),
            "a fraction of the card in (0, 1], e.g. 0.9 (vLLM's default)",
        );
    }
    match cfg.prompt_len {
        Some(0) => return blame.fail("prompt_len", "0", "a positive integer or None"),
        Some(p) if p > cfg.block_size => {
            return blame.fail(
                "prompt_len",
                p.to_string(),
                format!(
                    "at most block_size = {} (the context the KV cache holds)",
                    cfg.block_size
                ),
            )
        }
        _ => {}
    }
    // The upper bounds are in `limits`, checked first.
    for (key, v) in [
        ("max_num_batched_tokens", cfg.max_num_batched_tokens),
        ("max_num_seqs", cfg.max_num_seqs),
    ] {
        if v == Some(0) {
            return blame.fail(key, "0", "a positive integer or None");
        }
    }
    if cfg.tensor_parallel_size == 0 {
        return blame.fail("tensor_parallel_size", "0", "a positive integer");
    }
    // vLLM's ModelConfig.verify_with_parallel_config: "Total number of attention heads (H)
    // must be divisible by tensor parallel size (N)".
    let tp = cfg.tensor_parallel_size;
    let sharded = !matches!(
        cfg.model_type,
        super::ModelType::Gpt2 | super::ModelType::GptNeox
    );
    if tp > 1 && !sharded {
        return blame.fail(
            "tensor_parallel_size",
            tp.to_string(),
            format!(
                "1 for model_type '{}' (tensor-parallel serving is modelled for the Llama family: llama, mistral, qwen2, gemma)",
                cfg.model_type.as_str()
            ),
        );
    }
    if tp > 1 && !cfg.n_head.is_multiple_of(tp) {
        return blame.fail(
            "tensor_parallel_size",
            tp.to_string(),
            format!(
                "a divisor of n_head = {} (vLLM splits the attention heads evenly over the ranks)",
                cfg.n_head
            ),
        );
    }
    pipeline(cfg, blame)?;
    if cfg.enable_expert_parallel && cfg.num_experts.is_none() {
        return blame.fail(
            "enable_expert_parallel",
            "True",
            "False for a model without experts (vLLM's --enable-expert-parallel spreads an MoE model's experts over the ranks)",
        );
    }
    if cfg.mode == Mode::Inference && cfg.lora_rank > 0 {
        return blame.fail(
            "lora_rank",
            cfg.lora_rank.to_string(),
            "0 with mode = 'inference' (serve a merged model: adapters are a training-time option here)",
        );
    }
    Ok(())
}

/// `pipeline_parallel_size`: vLLM splits the layers over the ranks (vllm/distributed/utils.py
/// `get_pp_indices`), so at most one rank per layer; modelled for the decoders built on
/// Llama's layers (src/model/llama.rs: vLLM's `LlamaModel` and its relatives build a rank's
/// share with `make_layers` and `PPMissingLayer`), and for serving only.
fn pipeline(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    let pp = cfg.pipeline_parallel_size;
    let key = "pipeline_parallel_size";
    if pp == 0 {
        return blame.fail(key, "0", "a positive integer");
    }
    if pp == 1 {
        return Ok(());
    }
    if cfg.mode != Mode::Inference {
        return blame.fail(
            key,
            pp.to_string(),
            "1 in training (pipeline parallelism is modelled for vLLM serving: mode = 'inference')",
        );
    }
    if cfg.serving_world_size().is_none() {
        return blame.fail(
            key,
            pp.to_string(),
            "a size whose product with tensor_parallel_size fits in 64 bits",
        );
    }
    if pp > cfg.n_layer {
        return blame.fail(
            key,
            pp.to_string(),
            format!(
                "at most n_layer = {} (vLLM gives each pipeline rank at least one layer)",
                cfg.n_layer
            ),
        );
    }
    if !cfg.model_type.is_llama_like() {
        let family: Vec<&str> = super::ModelType::ALL
            .iter()
            .filter(|m| m.is_llama_like())
            .map(|m| m.as_str())
            .collect();
        return blame.fail(
            key,
            pp.to_string(),
            format!(
                "1 for model_type '{}' (pipeline-parallel serving is modelled for the decoders on Llama's layers: {})",
                cfg.model_type.as_str(),
                family.join(", ")
            ),
        );
    }
    Ok(())
}

impl TrainConfig {
    /// GPUs one vLLM engine runs on: tensor_parallel_size x pipeline_parallel_size (vLLM's
    /// `ParallelConfig.world_size`); None on overflow.
    pub fn serving_world_size(&self) -> Option<u64> {
        self.tensor_parallel_size
            .checked_mul(self.pipeline_parallel_size)
    }

    /// Tokens of the prefill: `prompt_len`, or a full context.
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_len.unwrap_or(self.block_size)
    }

    /// The largest decode batch vLLM V0 captures a CUDA graph for: its capture sizes are
    /// 1, 2, 4 and multiples of 8 up to 256 (`_BATCH_SIZES_TO_CAPTURE`), those up to
    /// `max_num_seqs` (V0's default 256) rounded up to that list.
    pub fn graph_capture_batch(&self) -> u64 {
        match self.max_num_seqs.unwrap_or(256) {
            n @ 0..=4 => n.max(1).next_power_of_two(),
            n => n.div_ceil(8).saturating_mul(8).min(256),
        }
    }
}
