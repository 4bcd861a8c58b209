//! vLLM's "No available memory for the cache blocks" with the model known: vLLM's start-up
//! arithmetic (`plan::vllm`, its profile run simulated by the Engine) on the log's card, and the
//! flags that would start: the utilization that holds a full context, a shorter
//! `--max-model-len`, or quantized weights.

use super::{Fix, MatchContext};
use crate::budget::GpuProfile;
use crate::config::{Mode, ModelType, Quantization, TrainConfig};
use crate::error::Result;
use crate::plan::vllm::{vllm_budget, vllm_startup, VllmBudget};
use crate::units::{human, human_signed};

/// Engine settings the log prints (`gpu_memory_utilization=0.4`, `max_seq_len=4096`,
/// `max_model_len=4096`, `tensor_parallel_size=2`, `pipeline_parallel_size=2`,
/// `kv_cache_dtype=fp8`, and the engine: V1 logs "Initializing a V1 LLM engine" and runs an
/// `EngineCore`; V0 logs "Initializing an LLM engine" and "# GPU blocks: N") as overrides, to
/// be applied before the user's own.
pub fn log_settings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    if text.contains("V1 LLM engine") || text.contains("EngineCore") {
        out.push("--vllm_version=v1".to_string());
    } else if text.contains("Initializing an LLM engine") || text.contains("# GPU blocks:") {
        out.push("--vllm_version=v0".to_string());
    }
    let pick = |re: &str| {
        super::pattern::compile(re)
            .captures_iter(text)
            .last()
            .and_then(|c| c.get(1).map(|m| m.as_str().to_string()))
    };
    if let Some(u) = pick(r"gpu_memory_utilization\s*=\s*([0-9]*\.?[0-9]+)") {
        out.push(format!("--gpu_memory_utilization={u}"));
    }
    if let Some(n) = pick(r"max_(?:seq|model)_len\s*=\s*([0-9]+)") {
        out.push(format!("--block_size={n}"));
    }
    if let Some(n) = pick(r"tensor_parallel_size\s*=\s*([0-9]+)").filter(|n| n != "1") {
        out.push(format!("--tensor_parallel_size={n}"));
    }
    if let Some(n) = pick(r"pipeline_parallel_size\s*=\s*([0-9]+)").filter(|n| n != "1") {
        out.push(format!("--pipeline_parallel_size={n}"));
    }
    if pick(r"kv_cache_dtype\s*=\s*(fp8\w*)").is_some() {
        out.push("--kv_cache_dtype='fp8'".to_string());
    }
    out
}

/// The diagnosis context of a vLLM KV-cache failure for `cfg` on `gpu`.
pub fn vllm_context(cfg: &TrainConfig, gpu: &GpuProfile) -> Result<MatchContext> {
    let mut cfg = cfg.clone();
    cfg.mode = Mode::Inference;
    let total = gpu.total_bytes;
    let v = vllm_startup(&cfg, Some(gpu), total)?;
    let mut explanation = format!(
        "vLLM {}'s budget is gpu_memory_utilization × the card = {:.2} × {} = {}; the weights take {} and its profile run adds {} ({} tokens in {} requests, simulated), plus {} outside PyTorch (modelled, {} to {}): {} is left for the KV cache, {} blocks of 16 tokens ({} each) for --max-model-len {}. gpu_memory_utilization is vLLM's whole share of the card, not the cache's: lowering it to share the GPU leaves the cache less, which is why the message asks to increase it",
        v.version.label(),
        v.gpu_memory_utilization,
        human(total),
        human(v.budget_bytes),
        human(v.weights_bytes),
        human(v.activation_bytes),
        v.profile_tokens,
        v.profile_seqs,
        human(v.non_torch_bytes),
        human(v.non_torch.low_bytes),
        human(v.non_torch.high_bytes),
        human_signed(v.kv_cache_bytes),
        v.num_gpu_blocks,
        human(v.block_bytes),
        v.max_model_len,
    );
    if let Some(e) = &v.error {
        explanation.push_str(&format!("; the simulation predicts the same refusal: {e}"));
    } else if v.num_gpu_blocks > 0 {
        explanation.push_str(&format!(
            "; the simulation does leave {} blocks at this budget, so something outside this model took the rest: other processes on the card, a larger profile run (max_num_seqs, max_num_batched_tokens) or a different card than assumed",
            v.num_gpu_blocks
        ));
    }
    Ok(MatchContext {
        candidates: Vec::new(),
        simulated_live_bytes_at_phase: None,
        fixes: fixes(&cfg, gpu, &v)?,
        explanation: Some(explanation),
        notes: Vec::new(),
    })
}

fn fixes(cfg: &TrainConfig, gpu: &GpuProfile, v: &VllmBudget) -> Result<Vec<Fix>> {
    let mut out = Vec::new();
    let len = v.max_model_len;
    let budget_at = |u: f64| (v.total_bytes as f64 * u) as u64;
    if let Some(u) = v.utilization_for(len) {
        out.push(Fix {
            change: format!(
                "raise --gpu-memory-utilization to {u:.2} (if nothing else uses the card): the KV cache then holds one full {len}-token sequence"
            ),
            command: Some(v.command("MODEL", u, len)),
            code_changes: Vec::new(),
            predicted_peak_bytes: Some(budget_at(u)),
            fits: Some(true),
        });
    }
    let fits = v.max_model_len_that_fits();
    if fits > 0 && fits < len {
        out.push(Fix {
            change: format!(
                "keep --gpu-memory-utilization {:.2} and shorten --max-model-len to {fits} (what its {} blocks hold)",
                v.gpu_memory_utilization, v.num_gpu_blocks
            ),
            command: Some(v.command("MODEL", v.gpu_memory_utilization, fits)),
            code_changes: Vec::new(),
            predicted_peak_bytes: Some(v.budget_bytes),
            fits: Some(true),
        });
    }
    if cfg.model_type != ModelType::Gpt2 && cfg.quantization == Quantization::None {
        for q in [Quantization::Int8, Quantization::Nf4] {
            let mut c = cfg.clone();
            c.quantization = q;
            let qv = vllm_budget(&c, Some(gpu), v.total_bytes, &v.non_torch)?;
            if qv.max_model_len_that_fits() >= len {
                out.push(Fix {
                    change: format!(
                        "serve a quantized model (bitsandbytes {}): weights {} instead of {}, {} blocks at --gpu-memory-utilization {:.2}",
                        q.as_str(),
                        human(qv.weights_bytes),
                        human(v.weights_bytes),
                        qv.num_gpu_blocks,
                        v.gpu_memory_utilization
                    ),
                    command: Some(format!(
                        "vllm serve MODEL --quantization bitsandbytes --gpu-memory-utilization {:.2} --max-model-len {len}",
                        v.gpu_memory_utilization
                    )),
                    code_changes: Vec::new(),
                    predicted_peak_bytes: Some(v.budget_bytes),
                    fits: Some(true),
                });
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_the_engine_line_prints() {
        let line = "Initializing an LLM engine with config: model='m', dtype=torch.bfloat16, max_seq_len=4096, gpu_memory_utilization=0.4, seed=0)";
        assert_eq!(
            log_settings(line),
            [
                "--vllm_version=v0",
                "--gpu_memory_utilization=0.4",
                "--block_size=4096"
            ]
        );
        assert!(log_settings("ValueError: No available memory for the cache blocks.").is_empty());
        let v1 = "INFO [core.py:69] Initializing a V1 LLM engine (v0.10.0) with config: model='m', max_seq_len=32768, tensor_parallel_size=4, pipeline_parallel_size=2, kv_cache_dtype=fp8, gpu_memory_utilization=0.9";
        assert_eq!(
            log_settings(v1),
            [
                "--vllm_version=v1",
                "--gpu_memory_utilization=0.9",
                "--block_size=32768",
                "--tensor_parallel_size=4",
                "--pipeline_parallel_size=2",
                "--kv_cache_dtype='fp8'"
            ]
        );
    }
}
