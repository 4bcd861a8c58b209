//! The largest size each key may take: far beyond every released model, so no real config is
//! refused, yet small enough that the simulator's work (one op list per layer, one search per
//! knob) and its bytes stay bounded. A config past a limit is a typo or a hostile input; it is
//! refused before any work, with the key, the value and the limit in one line.
//!
//! Each bound says which real model it was chosen from. The simulator's time grows with the
//! number of layers (one module per layer, simulated op by op, once per candidate in
//! `suggest`); the other bounds keep the bytes it forms far from u64's range.

use super::blame::Blame;
use super::TrainConfig;
use crate::error::Result;

/// One key's upper bound and why it was chosen.
pub struct Limit {
    pub key: &'static str,
    pub max: u64,
    /// What the key counts, for the message ("layers").
    pub what: &'static str,
    /// The real models the bound was chosen from, for the message.
    pub why: &'static str,
}

/// Tokens of one micro-batch (batch_size x block_size, or the eval batch's): 2^27, 134 M.
/// nanoGPT's GPT-2 run uses 12 x 1024 = 12 288; a 1 M-token context at batch 64 is 2^26.
pub const MAX_MICRO_BATCH_TOKENS: u64 = 1 << 27;

/// Tokens of one optimizer step over all ranks: 2^40, more than whole training runs
/// (GPT-3 saw 300 B tokens; Llama 3 steps are 16 M tokens).
pub const MAX_STEP_TOKENS: u64 = 1 << 40;

/// Every bounded key. Optional keys (None = derived) are checked when set.
pub const LIMITS: &[Limit] = &[
    Limit {
        key: "n_layer",
        max: 1024,
        what: "layers",
        why: "the deepest released LLMs have about 128: Llama 3.1 405B 126, GPT-3 96; DeepNet trained 1000",
    },
    Limit {
        key: "n_head",
        max: 1024,
        what: "attention heads",
        why: "Llama 3.1 405B has 128, GPT-3 96",
    },
    Limit {
        key: "n_embd",
        max: 1 << 17,
        what: "model width",
        why: "the widest released models have 16 384 to 18 432: Llama 3.1 405B, PaLM 540B",
    },
    Limit {
        key: "intermediate_size",
        max: 1 << 20,
        what: "MLP width",
        why: "Llama 3.1 405B has 53 248, PaLM 540B 73 728",
    },
    Limit {
        key: "head_dim",
        max: 1 << 14,
        what: "channels per head",
        why: "released models use 64 to 256, Gemma the most",
    },
    Limit {
        key: "n_kv_head",
        max: 1024,
        what: "key/value heads",
        why: "at most n_head, itself at most 1024",
    },
    Limit {
        key: "block_size",
        max: 1 << 24,
        what: "tokens of context",
        why: "the longest released contexts are 1 M to 10 M tokens, Llama 4 Scout the longest",
    },
    Limit {
        key: "vocab_size",
        max: 1 << 22,
        what: "tokens in the vocabulary",
        why: "the largest released vocabularies have about 256 000: Gemma 3 has 262 144",
    },
    Limit {
        key: "batch_size",
        max: MAX_MICRO_BATCH_TOKENS,
        what: "sequences per micro-batch",
        why: "see also the tokens per micro-batch, batch_size x block_size",
    },
    Limit {
        key: "eval_batch_size",
        max: MAX_MICRO_BATCH_TOKENS,
        what: "sequences per eval batch",
        why: "see also the tokens per micro-batch, eval_batch_size x block_size",
    },
    Limit {
        key: "gradient_accumulation_steps",
        max: 1 << 20,
        what: "micro-steps per optimizer step",
        why: "nanoGPT's GPT-2 run uses 40",
    },
    Limit {
        key: "world_size",
        max: 1 << 17,
        what: "GPUs",
        why: "the largest published runs used 16 384 GPUs for Llama 3, up to about 100 000 since",
    },
    Limit {
        key: "lora_rank",
        max: 1 << 14,
        what: "adapter rank",
        why: "LoRA ranks are 4 to 256 in practice",
    },
    Limit {
        key: "num_experts",
        max: 1 << 12,
        what: "experts per MoE layer",
        why: "released MoE models have 8 to 384: Mixtral 8, Qwen3-MoE 128, DeepSeek-V3 256, Kimi K2 384",
    },
    Limit {
        key: "moe_intermediate_size",
        max: 1 << 20,
        what: "expert MLP width",
        why: "released experts are 768 to 14 336 wide: Qwen3-30B-A3B 768, Mixtral 14 336",
    },
    Limit {
        key: "pipeline_parallel_size",
        max: 1024,
        what: "pipeline-parallel GPUs",
        why: "at most one per layer, and n_layer is at most 1024; served models use 2 to 16",
    },
    Limit {
        key: "shared_expert_intermediate_size",
        max: 1 << 20,
        what: "shared expert MLP width",
        why: "released shared experts are 5 632 to 20 480 wide: Qwen1.5-MoE-A2.7B 5 632, Qwen2-57B-A14B 20 480",
    },
    Limit {
        key: "decoder_sparse_step",
        max: 1024,
        what: "layers between sparse ones",
        why: "released Qwen MoE models use 1; a step past n_layer (itself at most 1024) leaves every layer dense",
    },
    Limit {
        key: "max_num_seqs",
        max: 1 << 20,
        what: "sequences served at once",
        why: "vLLM's default is 256, 1024 on large cards",
    },
    Limit {
        key: "max_num_batched_tokens",
        max: MAX_MICRO_BATCH_TOKENS,
        what: "tokens in the profile forward",
        why: "vLLM's defaults are 8 192 to 16 384",
    },
];

/// The value of a bounded key in `cfg`; None when an optional key is unset.
fn value(cfg: &TrainConfig, key: &str) -> Option<u64> {
    match key {
        "n_layer" => Some(cfg.n_layer),
        "n_head" => Some(cfg.n_head),
        "n_embd" => Some(cfg.n_embd),
        "intermediate_size" => cfg.intermediate_size,
        "head_dim" => cfg.head_dim,
        "n_kv_head" => cfg.n_kv_head,
        "block_size" => Some(cfg.block_size),
        "vocab_size" => Some(cfg.vocab_size),
        "batch_size" => Some(cfg.batch_size),
        "eval_batch_size" => cfg.eval_batch_size,
        "gradient_accumulation_steps" => Some(cfg.gradient_accumulation_steps),
        "world_size" => Some(cfg.world_size),
        "lora_rank" => Some(cfg.lora_rank),
        "max_num_seqs" => cfg.max_num_seqs,
        "pipeline_parallel_size" => Some(cfg.pipeline_parallel_size),
        "max_num_batched_tokens" => cfg.max_num_batched_tokens,
        "num_experts" => cfg.num_experts,
        "moe_intermediate_size" => cfg.moe_intermediate_size,
        "shared_expert_intermediate_size" => cfg.shared_expert_intermediate_size,
        "decoder_sparse_step" => cfg.decoder_sparse_step,
        _ => None,
    }
}

/// The limit of `key`, if it has one.
pub fn limit(key: &str) -> Option<&'static Limit> {
    LIMITS.iter().find(|l| l.key == key)
}

/// Refuse the first key past its limit, then micro-batches and steps with too many tokens.
/// Zero values are left to `validate`, whose messages say what each key counts.
pub(crate) fn check(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    for l in LIMITS {
        if let Some(v) = value(cfg, l.key).filter(|&v| v > l.max) {
            return blame.fail(
                l.key,
                v,
                format!("at most {} {} ({})", l.max, l.what, l.why),
            );
        }
    }
    let micro = [
        ("batch_size", cfg.batch_size),
        ("eval_batch_size", cfg.eval_batch()),
    ];
    for (key, batch) in micro {
        let tokens = batch.saturating_mul(cfg.block_size);
        if tokens > MAX_MICRO_BATCH_TOKENS {
            return blame.fail(
                key,
                batch,
                format!(
                    "at most {MAX_MICRO_BATCH_TOKENS} tokens per micro-batch ({key} x block_size = {batch} x {} = {tokens}); a 1 M-token context at batch 64 is half of that",
                    cfg.block_size
                ),
            );
        }
    }
    let step = cfg.tokens_per_step().unwrap_or(u64::MAX);
    if step > MAX_STEP_TOKENS {
        return blame.fail(
            "gradient_accumulation_steps",
            cfg.gradient_accumulation_steps,
            format!(
                "at most {MAX_STEP_TOKENS} tokens per optimizer step (batch_size x block_size x gradient_accumulation_steps = {} x {} x {}); GPT-3's whole run was 300 B tokens",
                cfg.batch_size, cfg.block_size, cfg.gradient_accumulation_steps
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_names_a_key_the_config_has() {
        let cfg = TrainConfig {
            intermediate_size: Some(1),
            head_dim: Some(1),
            n_kv_head: Some(1),
            eval_batch_size: Some(1),
            max_num_batched_tokens: Some(1),
            max_num_seqs: Some(1),
            num_experts: Some(1),
            moe_intermediate_size: Some(1),
            shared_expert_intermediate_size: Some(1),
            decoder_sparse_step: Some(1),
            ..TrainConfig::default()
        };
        for l in LIMITS {
            assert!(value(&cfg, l.key).is_some(), "{}", l.key);
        }
    }
}
