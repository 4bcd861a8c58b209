//! vLLM V1's KV cache for models with sliding-window layers, counted by hand from vLLM 0.10.1's
//! vllm/v1/core/kv_cache_utils.py (`_get_kv_cache_config_uniform_page_size`,
//! `get_max_concurrency_for_kv_cache_config`, `check_enough_kv_cache_memory`,
//! `estimate_max_model_len`) and vllm/v1/kv_cache_interface.py (`FullAttentionSpec` /
//! `SlidingWindowSpec.max_memory_usage_bytes`). The profile run is the simulator's; from the
//! memory it leaves, the blocks, tokens and concurrency are written out here.

use vramplan::budget::find;
use vramplan::config::{load_with_model, ModelSource, TrainConfig};
use vramplan::plan::vllm::{vllm_budget, KvGroups, NonTorch, VllmBudget};

const MIB: u64 = 1 << 20;
/// One layer's page: 2 (K, V) × 16 tokens × 2 kv heads × 16 dims × 2 bytes (bf16).
const PAGE: u64 = 2 * 16 * 2 * 16 * 2;
/// max_model_len 4096 and max_num_batched_tokens 512 (set below), window 16: a sliding layer
/// holds min(16 − 1 + 512, 4096) = 527 tokens, cdiv(527, 16) + 1 = 34 pages; a full one
/// cdiv(4096, 16) = 256.
const SLIDING_PAGES: u64 = 34;
const FULL_PAGES: u64 = 256;

/// A small Gemma of `layers` layers (4 heads, 2 kv heads of 16 dims), served by vLLM.
fn gemma(preset: &str, layers: u64, extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = [
        "--mode=inference".to_string(),
        "--block_size=4096".to_string(),
        "--max_num_batched_tokens=512".to_string(),
        "--vocab_size=100".to_string(),
        format!("--n_layer={layers}"),
        "--n_embd=64".to_string(),
        "--n_head=4".to_string(),
        "--n_kv_head=2".to_string(),
        "--head_dim=16".to_string(),
        "--intermediate_size=160".to_string(),
        "--compile=False".to_string(),
    ]
    .to_vec();
    o.extend(extra.iter().map(|s| s.to_string()));
    load_with_model(None, Some(ModelSource::Preset(preset)), &o)
        .unwrap()
        .config
}

/// vLLM's start-up on an L4 at the default utilization (0.9), 500 MiB outside torch.
fn on_l4(c: &TrainConfig) -> VllmBudget {
    let l4 = find("l4").unwrap();
    let v = vllm_budget(c, Some(&l4), l4.total_bytes, &NonTorch::fixed(500 * MIB)).unwrap();
    // gpu_worker.py determine_available_memory: int(total × 0.9 − weights − torch peak
    // increase − non-torch).
    let budget = (l4.total_bytes as f64 * 0.9) as u64;
    assert_eq!(v.budget_bytes, budget);
    let available = budget as i64 - (v.weights_bytes + v.activation_bytes + 500 * MIB) as i64;
    assert_eq!(v.kv_cache_bytes, available);
    assert_eq!(v.max_num_batched_tokens, 512);
    v
}

#[test]
fn gemma2_like_one_sliding_one_global_layer_by_hand() {
    // Layer 0 slides (window 16), layer 1 is global (global_every 2, Gemma 2's layer_types).
    let c = gemma(
        "gemma-2-9b",
        2,
        &["--sliding_window=16", "--global_every=2"],
    );
    let v = on_l4(&c);
    let available = v.kv_cache_bytes as u64;
    // Two spec types of one layer each: group_size = min(1, 1) = 1, two groups, one pool.
    // num_blocks = available // page // group_size.
    let blocks = available / PAGE;
    assert_eq!(v.num_gpu_blocks, blocks);
    assert_eq!(v.block_bytes, PAGE);
    // "GPU KV cache size": num_blocks // len(groups) × 16.
    assert_eq!(v.max_tokens, blocks / 2 * 16);
    // Maximum concurrency: one request takes 256 blocks in the full group and 34 in the
    // sliding one.
    assert_eq!(
        v.max_concurrency,
        blocks as f64 / (FULL_PAGES + SLIDING_PAGES) as f64
    );
    assert!(v.error.is_none());

    // Before (every layer at the full context): available // page // 2 layers, 256 each.
    let all_full = gemma("gemma-2-9b", 2, &["--sliding_window=None"]);
    let before = on_l4(&all_full);
    assert_eq!(before.kv_groups, KvGroups::all_full(2, PAGE));
    let old_blocks = before.kv_cache_bytes as u64 / PAGE / 2;
    assert_eq!(before.num_gpu_blocks, old_blocks);
    assert_eq!(before.max_tokens, old_blocks * 16);
    assert_eq!(before.max_concurrency, old_blocks as f64 / 256.0);

    // V0 keeps every layer's cache at full length for an interleaved model (vLLM 0.6.6
    // config.py): num_gpu_blocks = available // (page × 2 layers), 16 tokens each.
    let v0 = on_l4(&gemma(
        "gemma-2-9b",
        2,
        &[
            "--sliding_window=16",
            "--global_every=2",
            "--vllm_version=v0",
        ],
    ));
    assert_eq!(v0.window_kept_full, Some(16));
    assert_eq!(v.window_kept_full, None);
    let v0_blocks = v0.kv_cache_bytes as u64 / (2 * PAGE);
    assert_eq!(v0.num_gpu_blocks, v0_blocks);
    assert_eq!(v0.max_tokens, v0_blocks * 16);
}

#[test]
fn gemma3_like_five_sliding_to_one_global_by_hand() {
    // 12 layers, every 6th global: layers 5 and 11 full, the other 10 slide.
    let c = gemma(
        "gemma-3-1b",
        12,
        &["--sliding_window=16", "--global_every=6"],
    );
    let v = on_l4(&c);
    // group_size = min(2 full, 10 sliding) = 2: one full group, five sliding groups, two pools.
    assert_eq!(
        (
            v.kv_groups.pools,
            v.kv_groups.full_groups,
            v.kv_groups.sliding_groups
        ),
        (2, 1, 5)
    );
    let blocks = v.kv_cache_bytes as u64 / PAGE / 2;
    assert_eq!(v.num_gpu_blocks, blocks);
    assert_eq!(v.block_bytes, 2 * PAGE);
    assert_eq!(v.max_tokens, blocks / 6 * 16);
    // max_memory_usage_per_request = 2 × (256 + 5 × 34) pages, memory_per_block = 2 pages.
    assert_eq!(
        v.max_concurrency,
        blocks as f64 / (FULL_PAGES + 5 * SLIDING_PAGES) as f64
    );
}

#[test]
fn gemma_3_1b_groups_pad_the_last_sliding_group() {
    // google/gemma-3-1b-pt: 26 layers, sliding_window_pattern 6: layers 5, 11, 17, 23 global,
    // 22 sliding. group_size 4: 1 full group, cdiv(22, 4) = 6 sliding groups (the last of 2,
    // "Add 2 padding layers"), 7 in all.
    let c = load_with_model(
        None,
        Some(ModelSource::Preset("gemma-3-1b")),
        &["--mode=inference".to_string()],
    )
    .unwrap()
    .config;
    let l4 = find("l4").unwrap();
    let v = vllm_budget(&c, Some(&l4), l4.total_bytes, &NonTorch::fixed(0)).unwrap();
    let g = v.kv_groups;
    assert_eq!((g.full_layers, g.sliding_layers), (4, 22));
    assert_eq!((g.pools, g.full_groups, g.sliding_groups), (4, 1, 6));
    assert_eq!(v.max_tokens, v.num_gpu_blocks / 7 * 16);
}

#[test]
fn too_little_memory_estimates_the_length_from_both_types() {
    let c = gemma(
        "gemma-2-9b",
        2,
        &["--sliding_window=16", "--global_every=2"],
    );
    let probe = on_l4(&c);
    // Leave exactly 100 pages: one request of 4096 needs 256 + 34 = 290.
    let l4 = find("l4").unwrap();
    let nt = probe.budget_bytes - probe.weights_bytes - probe.activation_bytes - 100 * PAGE;
    let v = vllm_budget(&c, Some(&l4), l4.total_bytes, &NonTorch::fixed(nt)).unwrap();
    assert_eq!(v.kv_cache_bytes, (100 * PAGE) as i64);
    assert_eq!((v.num_gpu_blocks, v.max_tokens), (100, 50 * 16));
    // estimate_max_model_len: the longest len with cdiv(len, 16) + cdiv(min(527, len), 16) + 1
    // ≤ 100: at len ≥ 527 the sliding layer takes 34, so cdiv(len, 16) ≤ 66, len = 1056 —
    // more than the 800 tokens "GPU KV cache size" reports.
    let e = v.error.clone().unwrap();
    assert!(
        e.contains("the estimated maximum model length is 1056. Try"),
        "{e}"
    );
    assert_eq!(v.max_model_len_that_fits(), 1056);
}

#[test]
fn a_model_without_sliding_layers_is_one_full_group() {
    let c = load_with_model(
        None,
        Some(ModelSource::Preset("llama-3.2-1b")),
        &["--mode=inference".to_string()],
    )
    .unwrap()
    .config;
    let l4 = find("l4").unwrap();
    let v = vllm_budget(&c, Some(&l4), l4.total_bytes, &NonTorch::fixed(0)).unwrap();
    // Llama-3.2-1B: 16 layers, 8 kv heads of 64 dims, bf16: a page of 2 × 16 × 8 × 64 × 2.
    let page = 2 * 16 * 8 * 64 * 2;
    assert_eq!(v.kv_groups, KvGroups::all_full(16, page));
    let blocks = v.kv_cache_bytes as u64 / page / 16;
    assert_eq!(v.num_gpu_blocks, blocks);
    assert_eq!(v.max_tokens, blocks * 16);
}
