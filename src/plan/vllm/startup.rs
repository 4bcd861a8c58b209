//! The start-up lines vLLM itself logs, from a simulated [`VllmBudget`], in vLLM's formats
//! (`%.2f GiB` of 2^30 bytes, token counts with thousands separators), each followed by where
//! the figure comes from.

use super::VllmBudget;
use crate::config::VllmVersion;

/// `bytes` as vLLM prints them: "14.99 GiB".
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `n` with thousands separators, as vLLM's `f"{n:,}"`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The heading and the lines, one figure each.
pub fn startup_lines(v: &VllmBudget) -> Vec<String> {
    let heading = heading(v);
    let activation = match v.version {
        VllmVersion::V1 => "reserved increase over the profile run",
        VllmVersion::V0 => "allocated peak of the profile run less the weights",
    };
    let mut lines = vec![
        heading,
        format!("  model weights take {}  [exact: shapes x dtype, in the caching allocator's blocks]", gib(v.weights_bytes)),
        format!(
            "  non_torch_memory takes {}  [modelled, band {} to {}: {}]",
            gib(v.non_torch_bytes),
            gib(v.non_torch.low_bytes),
            gib(v.non_torch.high_bytes),
            v.non_torch
                .parts
                .iter()
                .map(|p| p.what)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "  PyTorch activation peak memory takes {}  [simulated, eager PyTorch: {activation}; {} tokens in {} requests, {}]",
            gib(v.activation_bytes),
            v.profile_tokens,
            v.profile_seqs,
            v.scheduler_source
        ),
        format!("  Available KV cache memory: {}", match v.kv_cache_bytes {
            b if b < 0 => format!("-{}", gib(b.unsigned_abs())),
            b => gib(b as u64),
        }),
        format!(
            "  GPU KV cache size: {} tokens  [{} blocks of 16 tokens, {} each; {} tokens at the low end of non-torch]",
            thousands(v.max_tokens),
            v.num_gpu_blocks,
            crate::units::human(v.block_bytes),
            thousands(v.max_tokens_optimistic)
        ),
        format!(
            "  Maximum concurrency for {} tokens per request: {:.2}x",
            thousands(v.max_model_len),
            v.max_concurrency
        ),
    ];
    if let Some(line) = groups_line(v) {
        lines.insert(lines.len() - 1, line);
    }
    if let Some(p) = &v.pipeline {
        lines.extend(pipeline_lines(p));
    }
    lines.extend(refusal(v));
    lines
}

/// The heading: the engine, the source read, which rank the figures are, the budget.
fn heading(v: &VllmBudget) -> String {
    let source = match v.version {
        VllmVersion::V1 => "vLLM 0.10 V1, gpu_worker.py determine_available_memory",
        VllmVersion::V0 => "vLLM 0.6 V0, worker.py determine_num_available_blocks",
    };
    let rank = match v.tensor_parallel_size {
        1 => String::new(),
        n => format!(", one of {n} tensor-parallel ranks"),
    };
    let rank = match &v.pipeline {
        None => rank,
        Some(p) => format!(
            "{rank}; pipeline rank {} of {} binds: the fewest KV-cache blocks; {} GPUs in all",
            p.binding_rank, v.pipeline_parallel_size, v.world_size
        ),
    };
    format!(
        "vLLM {} start-up ({source}{rank}): total_gpu_memory ({}) x gpu_memory_utilization ({:.2}) = {}",
        v.version.label(),
        gib(v.total_bytes),
        v.gpu_memory_utilization,
        gib(v.budget_bytes)
    )
}

/// The error vLLM would raise, and on which pipeline rank.
fn refusal(v: &VllmBudget) -> Option<String> {
    let e = v.error.as_ref()?;
    let (kind, e) = match e.strip_prefix("AssertionError") {
        Some(rest) => ("AssertionError", rest.trim_start_matches(' ')),
        None => ("ValueError", e.as_str()),
    };
    let at = match v.pipeline.as_ref().and_then(|p| p.refusing_rank) {
        Some(r) => format!(" (pipeline rank {r})"),
        None => String::new(),
    };
    Some(format!("  vLLM would refuse to start{at}: {kind}: {e}"))
}

/// One line per pipeline rank: its share and its own figures before vLLM unifies the blocks.
fn pipeline_lines(p: &super::Pipeline) -> Vec<String> {
    let mut lines = vec![format!(
        "  pipeline ranks (vllm/distributed/utils.py get_pp_indices; every rank simulated, {} blocks each after unification, min over ranks):",
        p.ranks
            .iter()
            .map(|r| r.budget.num_gpu_blocks)
            .min()
            .unwrap_or(0)
    )];
    for r in &p.ranks {
        let mut holds = Vec::new();
        if r.embeddings {
            holds.push("embed_tokens");
        }
        if r.head {
            holds.push("norm, lm_head, sampler");
        } else if r.head_weights {
            holds.push("norm and lm_head weights (built on every rank, unused)");
        }
        if r.rank > 0 {
            holds.push("received hidden_states + residual");
        }
        let b = &r.budget;
        lines.push(format!(
            "    rank {}: layers {}-{} ({}{}): weights {}, activation peak {}, KV cache {}, {} blocks = {} tokens{}",
            r.rank,
            r.layers[0],
            r.layers[1].saturating_sub(1),
            r.layers[1] - r.layers[0],
            match holds.len() {
                0 => String::new(),
                _ => format!(", {}", holds.join(", ")),
            },
            gib(b.weights_bytes),
            gib(b.activation_bytes),
            match b.kv_cache_bytes {
                k if k < 0 => format!("-{}", gib(k.unsigned_abs())),
                k => gib(k as u64),
            },
            b.num_gpu_blocks,
            thousands(b.max_tokens),
            if r.rank == p.binding_rank { "  <- binds" } else { "" }
        ));
    }
    lines
}

/// How V1 grouped a model with sliding-window layers, when it did.
fn groups_line(v: &VllmBudget) -> Option<String> {
    let g = &v.kv_groups;
    if let Some(w) = v.window_kept_full {
        return Some(format!(
            "  KV cache groups: one; the sliding-window layers ({w} tokens) keep the full length in V0's cache (vLLM 0.6.6 config.py: interleaved sliding window treated as full attention; later V0 engines likewise, arg_utils.py create_engine_config)"
        ));
    }
    let window = g.window?;
    let how = if g.hybrid() {
        format!(
            "{} full-attention layer(s) in {} group(s) and {} sliding-window layer(s) in {} group(s) of {} layer(s), the groups sharing {} pool(s) of {} blocks: tokens = blocks // {} groups x 16  [kv_cache_utils.py _get_kv_cache_config_uniform_page_size]",
            g.full_layers, g.full_groups, g.sliding_layers, g.sliding_groups, g.pools, g.pools,
            v.num_gpu_blocks, g.groups()
        )
    } else {
        "every layer slides: one group  [kv_cache_utils.py _get_kv_cache_config_uniform_type]"
            .to_string()
    };
    Some(format!(
        "  KV cache groups (sliding window {window} tokens; one request takes {} blocks over the groups, sliding layers cdiv(min(window - 1 + {} batched tokens, max_model_len), 16) + 1 each): {how}",
        g.blocks_per_request(v.max_model_len, v.max_num_batched_tokens),
        v.max_num_batched_tokens
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators_as_python_prints_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(131_072), "131,072");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
