//! vLLM's start-up budget counted by hand from vLLM's source, per version: V1 (vLLM 0.10,
//! vllm/v1/worker/gpu_worker.py `determine_available_memory`, vllm/v1/core/kv_cache_utils.py),
//! V0 in tests/it/inference.rs. The profile run's peak is the simulator's (its sampler tensors
//! counted here by hand); the arithmetic that turns it into blocks, tokens and concurrency is
//! written out below from vLLM's formulas, not called.

use vramplan::budget::find;
use vramplan::config::{load_with_model, ModelSource, TrainConfig};
use vramplan::plan::vllm::{
    non_torch, scheduler, vllm_budget, NonTorch, CUSTOM_ALL_REDUCE_BYTES, NCCL_CONNECTION_BYTES,
};
use vramplan::run::{simulate_vllm_v1_profile, ProfileBatch};
use vramplan::sim::replay;
use vramplan::sim::runtime::Runtime;
use vramplan::sim::timeline::Phase;

const MIB: u64 = 1 << 20;
// The small Llama (GQA): 2 layers, 4 query heads, 2 key/value heads of 16 dims, vocabulary 100
// (vLLM pads it to 128), context 32.
const V: u64 = 100;

fn cfg(extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = [
        "--mode=inference",
        "--block_size=32",
        "--vocab_size=100",
        "--n_layer=2",
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--intermediate_size=160",
        "--compile=False",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    load_with_model(None, Some(ModelSource::Preset("llama-3.2-1b")), &o)
        .unwrap()
        .config
}

/// One rank of the small model as vLLM builds it: the vocabulary padded to 128.
fn rank(c: &TrainConfig) -> TrainConfig {
    let mut r = c.clone();
    r.vocab_size = 128;
    r
}

#[test]
fn v1_kv_cache_tokens_from_the_profile_weights_and_non_torch_by_hand() {
    let c = cfg(&["--gpu_memory_utilization=0.5"]);
    let total: u64 = 1 << 30;
    let nt: u64 = 100 * MIB;
    let v = vllm_budget(&c, None, total, &NonTorch::fixed(nt)).unwrap();
    // No card: V1's defaults for a card under 70 GiB (arg_utils.py): 2048 tokens, 256 requests
    // (the cap max_num_seqs × max_model_len = 8192 does not bind); 8 tokens each.
    assert_eq!((v.profile_tokens, v.profile_seqs), (2048, 256));
    // Weights as load_model allocates them (same count as tests/it/inference.rs): 191,488 bytes.
    let weights = 16_384 + 2 * 87_040 + 512 + 512;
    assert_eq!(v.weights_bytes, weights);

    // The profile run itself, simulated: the sampler's tensors at their peak by hand. The caller
    // keeps compute_logits' bf16 (256, 1, 128); Sampler.forward's fp32 copy (256, 100) and
    // apply_top_k_top_p's sort values fp32, indices int64, top-k mask bool, probs_sort fp32
    // and top-p mask bool are alive together: 256 × 100 × (4 + 4 + 8 + 1 + 4 + 1) bytes.
    let r = rank(&c);
    let rt = Runtime::pytorch(&r, None);
    let batch = ProfileBatch {
        tokens: 2048,
        reqs: 256,
        vocab: V,
        gathered_vocab: None,
    };
    let tl = simulate_vllm_v1_profile(&r, rt, batch).unwrap();
    let p = replay(&tl, rt.expandable_segments);
    let top_p = tl
        .tensors
        .iter()
        .position(|t| t.name.to_string() == "sampler.top_p_mask")
        .unwrap();
    let at = tl
        .events
        .iter()
        .position(|e| e.tensor as usize == top_p)
        .unwrap();
    let sampler_at_peak: u64 = tl
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.name.to_string().starts_with("sampler."))
        .filter(|(i, _)| {
            let born = tl
                .events
                .iter()
                .position(|e| e.tensor as usize == *i)
                .unwrap();
            let dies = tl
                .events
                .iter()
                .rposition(|e| e.tensor as usize == *i)
                .unwrap();
            born <= at && at < dies
        })
        .map(|(_, t)| t.bytes)
        .sum();
    assert_eq!(sampler_at_peak, 256 * V * (4 + 4 + 8 + 1 + 4 + 1));
    // torch_peak_increase: reserved after the profile run (no empty_cache before it is read)
    // less reserved once the weights are loaded.
    let activation = p.peak_reserved - p.phase(Phase::Init).peak_reserved;
    assert_eq!(v.activation_bytes, activation);

    // gpu_worker.py: available = int(total × utilization − (weights + torch_peak_increase +
    // non_torch_increase)); kv_cache_utils.py: num_blocks = available // page_size //
    // num_layers with page_size = 2 × 16 tokens × 2 kv heads × 16 dims × 2 bytes = 2048.
    let available = (total / 2) as i64 - (weights + activation + nt) as i64;
    assert_eq!(v.kv_cache_bytes, available);
    let blocks = available as u64 / 2048 / 2;
    assert_eq!(v.block_bytes, 2 * 2048);
    assert_eq!(v.num_gpu_blocks, blocks);
    // "GPU KV cache size: N tokens", "Maximum concurrency for 32 tokens per request":
    // num_blocks / cdiv(32, 16).
    assert_eq!(v.max_tokens, 16 * blocks);
    assert_eq!(v.max_concurrency, blocks as f64 / 2.0);
    assert!(v.error.is_none());

    // --kv-cache-dtype fp8: one byte per element, the same memory holds twice the blocks.
    let f = vllm_budget(
        &cfg(&["--gpu_memory_utilization=0.5", "--kv_cache_dtype=fp8"]),
        None,
        total,
        &NonTorch::fixed(nt),
    )
    .unwrap();
    assert_eq!(f.block_bytes, 2 * 1024);
    assert_eq!(f.num_gpu_blocks, available as u64 / 1024 / 2);
}

#[test]
fn v1_refuses_in_vllm_words_when_one_request_does_not_fit() {
    let c = cfg(&[]);
    let probe = vllm_budget(&c, None, 1 << 30, &NonTorch::fixed(0)).unwrap();
    // One request of 32 tokens needs cdiv(32, 16) = 2 blocks of 4096 bytes. Leave 1.5 blocks:
    // set the non-torch memory so that 0.9 × total − weights − activation − it = 6144.
    let budget = probe.budget_bytes;
    let nt = budget - probe.weights_bytes - probe.activation_bytes - 6144;
    let v = vllm_budget(&c, None, 1 << 30, &NonTorch::fixed(nt)).unwrap();
    assert_eq!(v.kv_cache_bytes, 6144);
    assert_eq!(v.num_gpu_blocks, 1);
    let e = v.error.unwrap();
    assert!(
        e.starts_with("To serve at least one request with the models's max seq len (32), (0.00 GiB KV cache is needed"),
        "{e}"
    );
    // estimate_max_model_len: the longest length whose blocks fit, 1 block = 16 tokens.
    assert!(
        e.contains("the estimated maximum model length is 16."),
        "{e}"
    );
    // Nothing left: the other message.
    let v = vllm_budget(&c, None, 1 << 30, &NonTorch::fixed(nt + 6144)).unwrap();
    assert_eq!(v.kv_cache_bytes, 0);
    assert!(v
        .error
        .unwrap()
        .starts_with("No available memory for the cache blocks."));
}

#[test]
fn v1_scheduler_defaults_follow_the_card() {
    // arg_utils.py: `vllm serve` gets 8192 tokens and 1024 requests on a card of 70 GiB or more
    // whose name has no "a100", else 2048 and 256; V0 takes max(max_model_len, 2048) and 256,
    // or 512 tokens once a context over 32,000 turns chunked prefill on.
    let long = cfg(&["--block_size=131072"]);
    let limits = |c: &TrainConfig, gpu: &str| {
        let s = scheduler(c, Some(&find(gpu).unwrap()));
        (s.max_num_batched_tokens, s.max_num_seqs)
    };
    assert_eq!(limits(&long, "h100"), (8192, 1024));
    assert_eq!(limits(&long, "h200"), (8192, 1024));
    assert_eq!(limits(&long, "a100-80gb"), (2048, 256));
    assert_eq!(limits(&long, "l40s"), (2048, 256));
    assert_eq!(limits(&long, "rtx4090"), (2048, 256));
    let v0 = cfg(&["--block_size=131072", "--vllm_version=v0"]);
    assert_eq!(limits(&v0, "h100"), (512, 256));
    let v0 = cfg(&["--block_size=32000", "--vllm_version=v0"]);
    assert_eq!(limits(&v0, "h100"), (32_000, 256));
    // The user's flags win; max_model_len × max_num_seqs caps V1's default (4 × 32 = 128).
    let set = cfg(&["--max_num_batched_tokens=4096", "--max_num_seqs=8"]);
    assert_eq!(limits(&set, "h100"), (4096, 8));
    assert_eq!(limits(&cfg(&["--max_num_seqs=4"]), "l40s"), (128, 4));
}

#[test]
fn tensor_parallel_splits_weights_kv_heads_and_adds_nccl() {
    let c = cfg(&["--tensor_parallel_size=2"]);
    let v = vllm_budget(&c, None, 1 << 30, &NonTorch::fixed(0)).unwrap();
    // One rank: 2 query heads and 1 kv head of 16 dims, MLP width 80, vocabulary 128 / 2 = 64.
    // Embedding 64 × 64 × 2 = 8,192; per layer q 32 × 64 × 2 = 4,096, k 2,048, v 2,048,
    // o 4,096, gate/up/down 10,240 each, two norms 512 = 44,032; final norm and inv_freq 512
    // each.
    assert_eq!(v.weights_bytes, 8_192 + 2 * 44_032 + 512 + 512);
    // A block: 2 × 16 tokens × 1 kv head × 16 dims × 2 bytes × 2 layers.
    assert_eq!(v.block_bytes, 2048);
    // Four ranks over 2 kv heads: each keeps one (replicated), so the block stays 2048.
    let v4 = vllm_budget(
        &cfg(&["--tensor_parallel_size=4"]),
        None,
        1 << 30,
        &NonTorch::fixed(0),
    )
    .unwrap();
    assert_eq!(v4.block_bytes, 2048);
    // Non-torch at TP 2 (V1): NCCL's 4 MiB + 512 KiB + 4,915,200 B per connection and channel,
    // 2 to 2 × 32 × 2 of them, and the custom all-reduce's 16 MiB; the context is not counted.
    let h100 = find("h100").unwrap();
    let n = non_torch(&c, Some(&h100));
    assert_eq!(NCCL_CONNECTION_BYTES, 9_633_792);
    assert_eq!(CUSTOM_ALL_REDUCE_BYTES, 16 * MIB);
    assert_eq!(n.low_bytes, 2 * 9_633_792 + 16 * MIB);
    // The high end adds what loads after vLLM's snapshot: at most the card's context less its
    // stack reservation (1 KiB × 2048 threads × 132 SMs on an H100).
    let after_snapshot = h100.context_bytes - 1024 * 2048 * 132;
    assert_eq!(n.high_bytes, 128 * 9_633_792 + 16 * MIB + after_snapshot);
}

#[test]
fn awq_and_fp8_checkpoints_load_their_storage_by_hand() {
    let weights = |q: &str| {
        let c = cfg(&[&format!("--quantization={q}")]);
        vllm_budget(&c, None, 1 << 30, &NonTorch::fixed(0))
            .unwrap()
            .weights_bytes
    };
    // AWQ (awq.py create_weights): qweight int32 (in, out/8), qzeros int32 (in/128, out/8),
    // scales bf16 (in/128, out), each in 512-byte blocks. q and o (64 × 64): 2048 + 512 + 512;
    // k and v (32 × 64): 1024 + 512 + 512; gate and up (160 × 64): 5120 + 512 + 512; down
    // (64 × 160, 2 groups): 5120 + 512 + 512. With the two norms: 29,696 per layer; embedding
    // 16,384, final norm and inv_freq 512 each.
    let per_layer = 2 * 3072 + 2 * 2048 + 3 * 6144 + 1024;
    assert_eq!(per_layer, 29_696);
    assert_eq!(weights("awq"), 16_384 + 2 * per_layer + 512 + 512);
    // FP8 (fp8.py): the e4m3 weight (out, in), one byte each, and a 4-byte fp32 scale per
    // Linear (one block): 4096 + 2048 + 2048 + 4096 + 3 × 10,240 + 7 × 512 + 1024 per layer.
    let per_layer = 4096 + 2 * 2048 + 4096 + 3 * 10_240 + 7 * 512 + 1024;
    assert_eq!(weights("fp8"), 16_384 + 2 * per_layer + 512 + 512);
}
