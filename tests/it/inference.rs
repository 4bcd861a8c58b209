//! Inference counted by hand: frozen weights in their dtype, the KV cache
//! (2 × layers × kv_heads × head_dim × tokens × batch × bytes), the last position's logits,
//! the decode step over a full cache, and vLLM's block count.

use vramplan::config::{load_with_model, ModelSource, TrainConfig};
use vramplan::plan::vllm::{vllm_budget, NonTorch};
use vramplan::run::infer::kv_bytes_per_token;
use vramplan::run::simulate_inference;
use vramplan::sim::dtype::DType;
use vramplan::sim::runtime::Runtime;
use vramplan::sim::timeline::{Category, Phase, TensorRecord};
use vramplan::sim::{replay, Timeline};

// The small Llama (GQA): 2 layers, 4 query heads, 2 key/value heads of 16 dims.
const L: u64 = 2;
const B: u64 = 2;
const T: u64 = 32;
const C: u64 = 64;
const NH: u64 = 4;
const NKV: u64 = 2;
const HD: u64 = 16;
const I: u64 = 160;
const V: u64 = 100;

fn cfg(preset: &str, extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = [
        "--mode=inference",
        "--batch_size=2",
        "--block_size=32",
        "--vocab_size=100",
        "--n_layer=2",
        "--n_embd=64",
        "--n_head=4",
        "--compile=False",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if preset != "gpt2" {
        o.extend(["--n_kv_head=2", "--intermediate_size=160"].map(String::from));
    }
    o.extend(extra.iter().map(|s| s.to_string()));
    load_with_model(None, Some(ModelSource::Preset(preset)), &o)
        .unwrap()
        .config
}

fn run(c: &TrainConfig) -> Timeline {
    simulate_inference(c, Runtime::pytorch(c, None)).unwrap()
}

fn bytes(tl: &Timeline, f: impl Fn(&TensorRecord) -> bool) -> u64 {
    tl.tensors.iter().filter(|t| f(t)).map(|t| t.bytes).sum()
}

fn named<'a>(tl: &'a Timeline, name: &str) -> Vec<&'a TensorRecord> {
    tl.tensors
        .iter()
        .filter(|t| t.name.to_string() == name)
        .collect()
}

#[test]
fn llama_gqa_weights_kv_cache_and_last_logits_by_hand() {
    let c = cfg("llama-3.2-1b", &[]);
    let tl = run(&c);
    // Weights, bf16 (2 bytes), lm_head tied to embed_tokens (Llama 3.2 1B):
    // embed V·C = 6400; per layer q C·NH·HD = 4096, k and v C·NKV·HD = 2048 each,
    // o 4096, gate/up/down C·I = 10240 each, two norms C = 64 each; the final norm C.
    let per_layer = 4096 + 2048 + 2048 + 4096 + 3 * 10240 + 2 * 64;
    assert_eq!(
        per_layer,
        C * NH * HD * 2 + 2 * C * NKV * HD + 3 * C * I + 2 * C
    );
    let params = V * C + L * per_layer + C;
    assert_eq!(params, 92_736);
    assert_eq!(
        bytes(&tl, |t| t.category == Category::Parameters),
        2 * params,
        "bf16 weights"
    );
    assert!(tl
        .tensors
        .iter()
        .filter(|t| t.category == Category::Parameters)
        .all(|t| t.dtype == DType::BF16));
    // Nothing of training: no gradients, no optimizer state, no autocast copies.
    for cat in [
        Category::Gradients,
        Category::Optimizer,
        Category::AutocastCopies,
    ] {
        assert_eq!(bytes(&tl, |t| t.category == cat), 0, "{cat:?}");
    }
    // KV cache: 2 (k and v) × 2 layers × 2 kv heads × 16 dims × 32 tokens × 2 sequences × 2 bytes.
    let kv = 2 * L * NKV * HD * T * B * 2;
    assert_eq!(kv, 16_384);
    assert_eq!(bytes(&tl, |t| t.category == Category::KvCache), kv);
    assert_eq!(kv_bytes_per_token(&c), Some(2 * L * NKV * HD * 2));
    let k0 = named(&tl, "layer0.kv_cache.k");
    assert_eq!(k0.len(), 1);
    assert_eq!(k0[0].shape.dims(), &[B, NKV, T, HD]);
    assert_eq!(
        k0[0].phase,
        Phase::Init,
        "allocated before the first forward"
    );
    // The last position's logits: (B, 1, V) bf16 = 2 × 100 × 2 bytes, once in the prefill and
    // once in the decode step; HF's `hidden_states[:, -1:, :]` is a view (0 bytes).
    let logits = named(&tl, "lm_head.logits");
    assert_eq!(logits.len(), 2);
    for l in &logits {
        assert_eq!(l.shape.dims(), &[B, 1, V]);
        assert_eq!(l.bytes, B * V * 2);
        assert_eq!(l.category, Category::Logits);
    }
    assert!(named(&tl, "lm_head.input_last")
        .iter()
        .all(|t| t.bytes == 0));
    // Greedy sampling copies the last logits to fp32: (B, V) × 4 bytes.
    assert!(named(&tl, "sampler.logits_fp32")
        .iter()
        .all(|t| t.bytes == B * V * 4));
}

#[test]
fn logits_all_keeps_every_position() {
    let tl = run(&cfg("llama-3.2-1b", &["--logits_all=True"]));
    let prefill: Vec<_> = named(&tl, "lm_head.logits")
        .into_iter()
        .filter(|t| t.phase == Phase::Prefill)
        .collect();
    assert_eq!(prefill.len(), 1);
    // (B, T, V) bf16: 2 × 32 × 100 × 2 bytes.
    assert_eq!(prefill[0].bytes, 12_800);
}

#[test]
fn gpt2_kv_cache_has_every_head_and_nanogpt_gathers_the_last_position() {
    let c = cfg("gpt2", &[]);
    let tl = run(&c);
    // kv heads = n_head = 4, head dim = 64 / 4 = 16: 2 × 2 × 4 × 16 × 32 × 2 × 2 bytes.
    let kv = 2 * L * NH * (C / NH) * T * B * 2;
    assert_eq!(kv, 32_768);
    assert_eq!(bytes(&tl, |t| t.category == Category::KvCache), kv);
    // nanoGPT's `x[:, [-1], :]` is a gather: a (B, 1, C) bf16 copy = 2 × 64 × 2 bytes.
    let last = named(&tl, "lm_head.input_last");
    assert!(!last.is_empty());
    assert!(last.iter().all(|t| t.bytes == B * C * 2));
    // Weights (the gpt2 preset has biases, as HF's GPT-2): wte V·C, wpe T·C; per layer ln_1
    // and ln_2 (weight and bias: 2C each), c_attn 3C² + 3C, c_proj C² + C, c_fc 4C² + 4C,
    // mlp.c_proj 4C² + C; ln_f 2C; in bf16.
    let per_layer = 4 * C + 3 * C * C + 3 * C + C * C + C + 4 * C * C + 4 * C + 4 * C * C + C;
    let params = V * C + T * C + L * per_layer + 2 * C;
    assert_eq!(params, 108_544);
    assert_eq!(
        bytes(&tl, |t| t.category == Category::Parameters),
        2 * params
    );
}

#[test]
fn fp8_kv_cache_is_one_byte_per_element() {
    let tl = run(&cfg("llama-3.2-1b", &["--kv_cache_dtype=fp8"]));
    assert_eq!(
        bytes(&tl, |t| t.category == Category::KvCache),
        2 * L * NKV * HD * T * B
    );
}

#[test]
fn phases_are_init_prefill_decode_only() {
    let c = cfg("llama-3.2-1b", &[]);
    let tl = run(&c);
    let p = replay(&tl, false);
    for ph in Phase::ALL {
        let expected = matches!(ph, Phase::Init | Phase::Prefill | Phase::Decode);
        assert_eq!(p.phase(ph).seen, expected, "{ph:?}");
    }
}

#[test]
fn decode_attends_over_the_full_cache_without_a_cache_sized_temporary_with_flash() {
    // bf16 flash: the decode step's attention allocates its output and logsumexp only.
    let tl = run(&cfg("llama-3.2-1b", &[]));
    let out = named(&tl, "layer0.self_attn.decode.out");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].shape.dims(), &[B, 1, NH * HD]);
    assert!(named(&tl, "layer0.self_attn.decode.k_repeat").is_empty());
    // Eager attention (flash=False) repeats the cached k and v to every query head:
    // (B, NH, T, HD) bf16 = 2 × 4 × 32 × 16 × 2 bytes each, and (B, NH, 1, T) scores.
    let tl = run(&cfg("llama-3.2-1b", &["--flash=False"]));
    let k = named(&tl, "layer0.self_attn.decode.k_repeat");
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].bytes, B * NH * T * HD * 2);
    let s = named(&tl, "layer0.self_attn.decode.softmax");
    assert_eq!(s[0].shape.dims(), &[B, NH, 1, T]);
    assert_eq!(s[0].dtype, DType::F32);
}

#[test]
fn llama_3_1_8b_published_figures() {
    let c = load_with_model(
        None,
        Some(ModelSource::Preset("llama-3.1-8b")),
        &["--mode=inference".to_string()],
    )
    .unwrap()
    .config;
    // KV cache per token: 2 × 32 layers × 8 kv heads × 128 × 2 bytes = 128 KiB.
    assert_eq!(kv_bytes_per_token(&c), Some(131_072));
    // bf16 weights: 8,030,261,248 parameters × 2 bytes ≈ 14.96 GiB (the vocabulary, 128,256,
    // is already a multiple of vLLM's padding of 64), each of the 291 tensors in whole
    // 512-byte blocks.
    let v = vllm_budget(&c, None, 80 << 30, &NonTorch::fixed(0)).unwrap();
    assert!((16_060_522_496..16_060_522_496 + 291 * 512).contains(&v.weights_bytes));
    assert!((v.weights_bytes as f64 / (1u64 << 30) as f64 - 14.96).abs() < 0.005);
}

#[test]
fn vllm_v0_blocks_by_hand() {
    let c = cfg(
        "llama-3.2-1b",
        &["--gpu_memory_utilization=0.5", "--vllm_version=v0"],
    );
    let total: u64 = 1 << 30;
    let non_torch = NonTorch::fixed(100 << 20);
    let v = vllm_budget(&c, None, total, &non_torch).unwrap();
    // A block: 16 tokens × 2 × 2 layers × 2 kv heads × 16 dims × 2 bytes = 4096 bytes.
    assert_eq!(v.block_bytes, 4096);
    // The weights in bf16, the vocabulary padded to 128 (vLLM pads to 64) and tied, each tensor
    // in 512-byte blocks: embedding 128 × 64 × 2 = 16,384; per layer q 8,192, k 4,096,
    // v 4,096, o 8,192, gate/up/down 20,480 each, two norms of 128 → 512 each = 87,040; the
    // final norm 512 and the rotary inv_freq buffer (8 fp32 → 512).
    assert_eq!(v.weights_bytes, 16_384 + 2 * 87_040 + 512 + 512);
    // V0's profile: 2048 tokens (max(32, 2048)) over 256 sequences; the sampler's three fp32
    // (256, V) copies alive together are in the activation peak.
    assert_eq!((v.profile_tokens, v.profile_seqs), (2048, 256));
    assert!(v.activation_bytes >= 3 * 256 * V * 4);
    // 0.5 × 1 GiB − (weights + activation) − 100 MiB, in whole blocks.
    let budget = total / 2;
    assert_eq!(v.budget_bytes, budget);
    let blocks = (budget - v.weights_bytes - v.activation_bytes - (100 << 20)) / 4096;
    assert_eq!(v.num_gpu_blocks, blocks);
    assert_eq!(v.max_tokens, 16 * blocks);
    // V0 logs the concurrency as blocks × 16 / max_model_len.
    assert_eq!(v.max_concurrency, (16 * blocks) as f64 / T as f64);
    assert!(v.error.is_none());
    // A budget smaller than what the profile run used: no blocks, vLLM's error.
    let v = vllm_budget(&c, None, 200 << 20, &non_torch).unwrap();
    assert_eq!(v.num_gpu_blocks, 0);
    assert!(v
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("No available memory for the cache blocks")));
    // The utilization for 32 tokens (2 blocks) on the 1 GiB card is the smallest that works.
    let v = vllm_budget(&c, None, total, &non_torch).unwrap();
    let u = v.utilization_for(32).unwrap();
    let at = |u: f64| {
        let mut c2 = c.clone();
        c2.gpu_memory_utilization = u;
        vllm_budget(&c2, None, total, &non_torch)
            .unwrap()
            .max_tokens
    };
    assert!(at(u) >= 32);
    assert!(at(u - 0.01) < 32);
}

#[test]
fn every_architecture_keeps_its_kv_heads_and_weights_in_bf16() {
    // (preset, kv heads after the overrides): Gemma 2B is multi-query (1 kv head).
    for (preset, extra, kv_heads) in [
        ("llama-3.2-1b", vec![], NKV),
        ("mistral-7b", vec![], NKV),
        ("qwen2.5-0.5b", vec![], NKV),
        ("gemma-2b", vec!["--n_kv_head=1", "--head_dim=16"], 1),
        ("pythia-1b", vec!["--n_kv_head=None"], NH),
        ("gpt2", vec![], NH),
    ] {
        let c = cfg(preset, &extra);
        let tl = run(&c);
        // 2 (k, v) × layers × kv heads × head dim 16 × 32 tokens × 2 sequences × 2 bytes.
        assert_eq!(
            bytes(&tl, |t| t.category == Category::KvCache),
            2 * L * kv_heads * HD * T * B * 2,
            "{preset}"
        );
        // The weights: the parameter count (model::n_params, held to the published counts in
        // models.rs) at 2 bytes each; GPT-NeoX and Llama keep a rotary inv_freq buffer outside them.
        assert_eq!(
            bytes(&tl, |t| t.category == Category::Parameters),
            2 * vramplan::model::n_params(&c),
            "{preset}"
        );
        let logits = named(&tl, "lm_head.logits");
        assert!(logits.iter().all(|t| t.bytes == B * V * 2), "{preset}");
    }
}

#[test]
fn cuda_graph_pool_is_the_largest_captured_decode_forward() {
    // vLLM V0 captures decode batches up to 256 (max_num_seqs 256): the pool holds that
    // forward's peak, here the lm_head's logits (256, 1, 50000) bf16 = 25,600,000 bytes with the
    // final norm's output (256, 1, 64) bf16 = 32,768 bytes alive beside them.
    let c = cfg(
        "llama-3.2-1b",
        &["--vocab_size=50000", "--cuda_graphs=True"],
    );
    assert_eq!(c.graph_capture_batch(), 256);
    let tl = run(&c);
    let pool = named(&tl, "cuda_graphs.pool");
    assert_eq!(pool.len(), 1);
    assert_eq!(pool[0].bytes, 256 * 50_000 * 2 + 256 * 64 * 2);
    assert_eq!(pool[0].phase, Phase::Init);
    // Capture sizes 1, 2, 4, 8, 16, ...: 5 sequences capture the graph of 8, 3 that of 4.
    let mut c = c;
    c.max_num_seqs = Some(5);
    assert_eq!(c.graph_capture_batch(), 8);
    c.max_num_seqs = Some(3);
    assert_eq!(c.graph_capture_batch(), 4);
    c.max_num_seqs = Some(1000);
    assert_eq!(c.graph_capture_batch(), 256);
}
