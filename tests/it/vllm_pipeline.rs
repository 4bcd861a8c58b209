//! Pipeline-parallel serving counted by hand from vLLM 0.10.1's source: each rank builds only
//! its layers (vllm/distributed/utils.py `get_pp_indices`: 5 layers over 2 ranks are [3, 2],
//! over 3 ranks [2, 2, 1]), the first rank the embeddings, the last the final norm and the
//! lm_head (and, tied, its own embed_tokens: llama.py `LlamaModel.__init__`), a later rank
//! the received `IntermediateTensors` buffers (gpu_model_runner.py `_dummy_run`); then every
//! rank gets the fewest blocks any rank has (kv_cache_utils.py `unify_kv_cache_configs`; V0:
//! distributed_gpu_executor.py `determine_num_available_blocks`). The profile runs' activation
//! peaks are the simulator's; the weights, buffers, blocks and the rank that binds are written
//! out here; the command line in tests/it/vllm_pipeline_cli.rs.

use vramplan::budget::find;
use vramplan::config::{load_with_model, ModelSource, TrainConfig};
use vramplan::model::Stage;
use vramplan::plan::vllm::{non_torch, vllm_budget, NonTorch, VllmBudget, NCCL_CONNECTION_BYTES};
use vramplan::run::{simulate_vllm_profile_stage, simulate_vllm_v1_profile_stage, ProfileBatch};
use vramplan::sim::runtime::Runtime;
use vramplan::sim::timeline::{EventKind, Timeline};

const MIB: u64 = 1 << 20;
/// One layer of the small Llama below (bf16): q 64 × 64 × 2 = 8,192, k and v 32 × 64 × 2 =
/// 4,096 each, o 8,192, gate, up and down 160 × 64 × 2 = 20,480 each, two norms of 128 bytes
/// in a 512-byte block each.
const LAYER: u64 = 8_192 + 2 * 4_096 + 8_192 + 3 * 20_480 + 2 * 512;
/// The embedding (or the lm_head): the vocabulary 100 padded to 128, × 64 × 2 bytes.
const EMBED: u64 = 128 * 64 * 2;
/// The final norm (64 × 2 bytes) and rotary_emb.inv_freq (8 × 4 bytes), a block each.
const BLOCK: u64 = 512;
/// One layer's page: 2 (K, V) × 16 tokens × 2 kv heads × 16 dims × 2 bytes.
const PAGE: u64 = 2 * 16 * 2 * 16 * 2;

/// The small Llama of tests/it/vllm_startup.rs with `layers` layers (tied embeddings, as the
/// Llama 3.2 1B preset has them), served by vLLM.
fn cfg(layers: u64, extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = [
        "--mode=inference",
        "--block_size=32",
        "--vocab_size=100",
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--intermediate_size=160",
        "--compile=False",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("--n_layer={layers}"));
    o.extend(extra.iter().map(|s| s.to_string()));
    load_with_model(None, Some(ModelSource::Preset("llama-3.2-1b")), &o)
        .unwrap()
        .config
}

fn budget(c: &TrainConfig, total: u64, nt: u64) -> VllmBudget {
    vllm_budget(c, None, total, &NonTorch::fixed(nt)).unwrap()
}

/// Each rank's own figures: (weights, activation, KV-cache bytes, blocks).
fn ranks(v: &VllmBudget) -> Vec<(u64, u64, i64, u64)> {
    let p = v.pipeline.as_ref().expect("per-rank figures");
    p.ranks
        .iter()
        .map(|r| {
            let b = &r.budget;
            (
                b.weights_bytes,
                b.activation_bytes,
                b.kv_cache_bytes,
                b.num_gpu_blocks,
            )
        })
        .collect()
}

#[test]
fn each_rank_holds_its_layers_and_only_the_first_and_last_the_ends() {
    let v = budget(&cfg(5, &["--pipeline_parallel_size=2"]), 1 << 30, 0);
    let p = v.pipeline.as_ref().unwrap();
    assert_eq!(p.ranks[0].layers, [0, 3]);
    assert_eq!(p.ranks[1].layers, [3, 5]);
    let w: Vec<u64> = ranks(&v).iter().map(|r| r.0).collect();
    // Rank 0: embed_tokens, 3 layers, inv_freq. Rank 1 (tied): its own embed_tokens, which its
    // lm_head ties to, 2 layers, the final norm, inv_freq.
    assert_eq!(
        w,
        [EMBED + 3 * LAYER + BLOCK, EMBED + 2 * LAYER + 2 * BLOCK]
    );
    assert!(p.ranks[0].embeddings && !p.ranks[0].head);
    assert!(p.ranks[1].embeddings && p.ranks[1].head);
    // Untied: the last rank holds lm_head instead, the same bytes; embed_tokens only on rank 0.
    let untied = cfg(
        5,
        &["--pipeline_parallel_size=2", "--tie_word_embeddings=False"],
    );
    let u = budget(&untied, 1 << 30, 0);
    assert!(!u.pipeline.as_ref().unwrap().ranks[1].embeddings);
    let wu: Vec<u64> = ranks(&u).iter().map(|r| r.0).collect();
    assert_eq!(wu, w);
    // Three ranks: [2, 2, 1]; the middle one holds its two layers and inv_freq only.
    let three = budget(&cfg(5, &["--pipeline_parallel_size=3"]), 1 << 30, 0);
    let w3: Vec<u64> = ranks(&three).iter().map(|r| r.0).collect();
    assert_eq!(
        w3,
        [
            EMBED + 2 * LAYER + BLOCK,
            2 * LAYER + BLOCK,
            EMBED + LAYER + 2 * BLOCK
        ]
    );
    // One rank is the whole model: embed_tokens (tied), 5 layers, norm, inv_freq.
    let one = budget(&cfg(5, &[]), 1 << 30, 0);
    assert_eq!(one.weights_bytes, EMBED + 5 * LAYER + 2 * BLOCK);
    assert!(one.pipeline.is_none());
}

#[test]
fn gemma_builds_its_embeddings_and_final_norm_on_every_rank() {
    // vLLM 0.10.1 gemma.py `GemmaModel.__init__` builds embed_tokens and norm without
    // PPMissingLayer, and GemmaForCausalLM's logits come from the embedding (tied): every
    // rank holds both. The small Gemma has the small Llama's layer (4 heads, 2 kv heads of
    // 16 dims, MLP 160: the same bytes, GELU instead of SiLU).
    let o = [
        "--mode=inference",
        "--block_size=32",
        "--vocab_size=100",
        "--n_layer=5",
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--head_dim=16",
        "--intermediate_size=160",
        "--compile=False",
        "--pipeline_parallel_size=3",
    ]
    .map(String::from);
    let c = load_with_model(None, Some(ModelSource::Preset("gemma-2b")), &o)
        .unwrap()
        .config;
    let v = budget(&c, 1 << 30, 0);
    let w: Vec<u64> = ranks(&v).iter().map(|r| r.0).collect();
    // [2, 2, 1] layers, each rank with the embedding, the norm and inv_freq.
    let ends = EMBED + 2 * BLOCK;
    assert_eq!(w, [2 * LAYER + ends, 2 * LAYER + ends, LAYER + ends]);
    let p = v.pipeline.as_ref().unwrap();
    assert!(p.ranks.iter().all(|r| r.embeddings && r.head_weights));
    // Only the last rank runs the head and samples.
    let runs: Vec<bool> = p.ranks.iter().map(|r| r.head).collect();
    assert_eq!(runs, [false, false, true]);
}

/// (bytes, freed) of each tensor called `name` in `tl`.
fn tensors(tl: &Timeline, name: &str) -> Vec<(u64, bool)> {
    tl.tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.name.to_string() == name)
        .map(|(i, t)| {
            let freed = tl
                .events
                .iter()
                .any(|e| e.tensor as usize == i && e.kind == EventKind::Free);
            (t.bytes, freed)
        })
        .collect()
}

#[test]
fn a_later_rank_receives_tokens_by_hidden_and_only_the_last_samples() {
    let c = cfg(5, &["--pipeline_parallel_size=2"]);
    let mut r = c.clone();
    r.vocab_size = 128;
    let rt = Runtime::pytorch(&r, None);
    let batch = ProfileBatch {
        tokens: 2048,
        reqs: 256,
        vocab: 100,
        gathered_vocab: None,
    };
    let stage = |rank| Stage::of_rank(&c, rank).unwrap();
    // V1: make_empty_intermediate_tensors(batch_size=max_num_tokens): hidden_states and
    // residual, 2048 tokens × 64 × 2 bytes each, kept by the runner (never freed).
    let v1_last = simulate_vllm_v1_profile_stage(&r, rt, batch, stage(1)).unwrap();
    for what in ["hidden_states", "residual"] {
        let name = format!("intermediate_tensors.{what}");
        assert_eq!(tensors(&v1_last, &name), [(2048 * 64 * 2, false)]);
    }
    assert!(!tensors(&v1_last, "sampler.probs").is_empty());
    assert!(tensors(&v1_last, "embed_tokens.out").is_empty());
    // The first rank embeds, receives nothing and does not sample: profile_run runs
    // _dummy_sampler_run on the last rank only.
    let v1_first = simulate_vllm_v1_profile_stage(&r, rt, batch, stage(0)).unwrap();
    assert!(tensors(&v1_first, "intermediate_tensors.hidden_states").is_empty());
    assert!(tensors(&v1_first, "sampler.probs").is_empty());
    assert!(!tensors(&v1_first, "embed_tokens.out").is_empty());
    // V0: the buffers are locals of profile_run (batch_size = the run's 2048 tokens), freed.
    let v0_last = simulate_vllm_profile_stage(&r, rt, batch, stage(1)).unwrap();
    assert_eq!(
        tensors(&v0_last, "intermediate_tensors.hidden_states"),
        [(2048 * 64 * 2, true)]
    );
}

/// available = int(total × utilization − (weights + activation + non-torch)) per rank, and
/// its blocks: available // page // the rank's layers.
fn own_blocks(total_half: u64, nt: u64, rank: (u64, u64, i64, u64), layers: u64) -> u64 {
    let available = total_half as i64 - (rank.0 + rank.1 + nt) as i64;
    assert_eq!(rank.2, available);
    let blocks = available.max(0) as u64 / PAGE / layers;
    assert_eq!(rank.3, blocks);
    blocks
}

#[test]
fn every_rank_gets_the_fewest_blocks_any_rank_has() {
    let (total, nt) = (1u64 << 30, 100 * MIB);
    for version in ["v1", "v0"] {
        let util = "--gpu_memory_utilization=0.5";
        let pp = "--pipeline_parallel_size=2";
        // 5 layers, [3, 2]: rank 0's three layers make its blocks the dearer: it binds.
        let v = budget(
            &cfg(5, &[util, pp, &format!("--vllm_version={version}")]),
            total,
            nt,
        );
        let r = ranks(&v);
        let b0 = own_blocks(total / 2, nt, r[0], 3);
        let b1 = own_blocks(total / 2, nt, r[1], 2);
        assert!(b0 < b1, "{version}: {b0} {b1}");
        assert_eq!(v.pipeline.as_ref().unwrap().binding_rank, 0);
        assert_eq!(v.num_gpu_blocks, b0);
        assert_eq!(v.block_bytes, 3 * PAGE);
        assert_eq!(v.max_tokens, 16 * b0);
        // 4 layers, [2, 2]: the same layers each. With a vocabulary of 32,000 the last
        // rank's sampler (256 requests × 32,000 in fp32 and int64 at once) dwarfs the first
        // rank's embedding output, and it receives the 2 × 2048 × 64 × 2-byte buffers too: the
        // last rank binds. (At a vocabulary of 100 both runs round to the same allocator
        // segments and rank 0 binds on the tie.)
        let vocab = "--vocab_size=32000";
        let c = cfg(4, &[util, pp, vocab, &format!("--vllm_version={version}")]);
        let v = budget(&c, total, nt);
        let r = ranks(&v);
        let b0 = own_blocks(total / 2, nt, r[0], 2);
        let b1 = own_blocks(total / 2, nt, r[1], 2);
        assert!(r[1].1 > r[0].1 + 256 * 32_000 * 4, "{version}: {r:?}");
        assert!(b1 < b0, "{version}: {b0} {b1} {r:?}");
        assert_eq!(v.pipeline.as_ref().unwrap().binding_rank, 1);
        assert_eq!(v.num_gpu_blocks, b1);
        assert_eq!(v.max_tokens, 16 * b1);
    }
}

#[test]
fn v1_refuses_when_ranks_group_their_sliding_layers_differently() {
    // A small Gemma 2 of 6 layers, every second one global (0-based 1, 3, 5), over 2 ranks
    // of 3: rank 0 holds sliding 0, 2 and global 1: group_size 1, groups F S S; rank 1 holds
    // global 3, 5 and sliding 4: F F S. unify_kv_cache_configs zips the sorted groups and
    // asserts each pair's spec equal: the second pair (S against F) is not.
    let o = [
        "--mode=inference",
        "--block_size=64",
        "--vocab_size=100",
        "--n_layer=6",
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--head_dim=16",
        "--intermediate_size=160",
        "--compile=False",
        "--sliding_window=16",
        "--global_every=2",
        "--pipeline_parallel_size=2",
    ]
    .map(String::from);
    let c = load_with_model(None, Some(ModelSource::Preset("gemma-2-9b")), &o)
        .unwrap()
        .config;
    let v = budget(&c, 1 << 30, 0);
    let p = v.pipeline.as_ref().unwrap();
    let g: Vec<(u64, u64)> = p
        .ranks
        .iter()
        .map(|r| {
            (
                r.budget.kv_groups.full_groups,
                r.budget.kv_groups.sliding_groups,
            )
        })
        .collect();
    assert_eq!(g, [(1, 2), (2, 1)]);
    assert_eq!(p.refusing_rank, Some(1));
    assert!(v.error.as_deref().unwrap().starts_with("AssertionError"));
    // V0 keeps every layer full: nothing to disagree on.
    let mut c0 = c.clone();
    c0.vllm_version = vramplan::config::VllmVersion::V0;
    assert_eq!(budget(&c0, 1 << 30, 0).error, None);
}

#[test]
fn the_pipeline_group_adds_nccl_buffers_to_the_non_torch_band() {
    let h100 = find("h100").unwrap();
    // V1 on an H100: the context is not counted; what loads after the snapshot is at most the
    // context less its stack reservation (1 KiB × 2048 threads × 132 SMs).
    let after_snapshot = h100.context_bytes - 1024 * 2048 * 132;
    let pp = non_torch(&cfg(4, &["--pipeline_parallel_size=2"]), Some(&h100));
    // NCCL's Simple + LL + LL128 buffers per connection and channel: 2 (one communicator, 2
    // channels, one peer) to 2 × 32 × 2.
    assert_eq!(NCCL_CONNECTION_BYTES, 4 * MIB + 524_288 + 4_915_200);
    assert_eq!(pp.low_bytes, 2 * NCCL_CONNECTION_BYTES);
    assert_eq!(pp.high_bytes, 128 * NCCL_CONNECTION_BYTES + after_snapshot);
    // TP 2 × PP 2: the tensor group's NCCL and custom all-reduce (16 MiB) besides.
    let both = cfg(
        4,
        &["--pipeline_parallel_size=2", "--tensor_parallel_size=2"],
    );
    let n = non_torch(&both, Some(&h100));
    assert_eq!(n.low_bytes, 4 * NCCL_CONNECTION_BYTES + 16 * MIB);
    assert_eq!(
        n.high_bytes,
        256 * NCCL_CONNECTION_BYTES + 16 * MIB + after_snapshot
    );
}
