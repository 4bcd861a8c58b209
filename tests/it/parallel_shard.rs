//! FSDP (FULL_SHARD, SHARD_GRAD_OP) and tensor parallelism on one rank, counted by hand on the
//! tiny GPT-2 (tests/support).

use crate::support::sim::run;
use crate::support::tiny_gpt::*;
use vramplan::run::simulate;
use vramplan::sim::Runtime;
use vramplan::sim::{Category, DType, Phase, Timeline};

/// FSDP units of the tiny model with 4 layers over 4 ranks: a block is ln_1 128 + c_attn
/// 49152 + c_proj 16384 + ln_2 128 + c_fc 65536 + mlp.c_proj 65536 = 196864 elements
/// (= 4 · 49216, no padding); the root is wte 128000 + wpe 32768 + ln_f 128 = 160896
/// (= 4 · 40224).
const BLOCK: u64 = 196_864;
const ROOT: u64 = 160_896;

fn fsdp(strategy: &str) -> Timeline {
    run(&cfg(&[
        "--n_layer=4",
        "--world_size=4",
        &format!("--parallelism={strategy}"),
    ]))
}

#[test]
fn fsdp_keeps_fp32_shards_and_sharded_state() {
    let tl = fsdp("fsdp");
    // One fp32 shard per unit, blocks first (auto-wrap is bottom-up), then the root.
    let shards = named(&tl, "flat_param", "fsdp_shard");
    let block_shard = BLOCK / 4 * 4;
    let root_shard = ROOT / 4 * 4;
    assert_eq!(
        bytes(&tl, &shards),
        vec![
            block_shard,
            block_shard,
            block_shard,
            block_shard,
            root_shard
        ]
    );
    // The parameters are bf16 views (MixedPrecision param_dtype) without storage.
    let w = named(&tl, "wte", "weight");
    assert_eq!(
        (bytes(&tl, &w), tl.tensors[w[0]].dtype),
        (vec![0], DType::BF16)
    );
    // torch AdamW on each flat shard at the first step: step (4 bytes) and two fp32 moments.
    assert_eq!(
        bytes(&tl, &named(&tl, "fsdp", "adam.exp_avg")),
        vec![
            block_shard,
            block_shard,
            block_shard,
            block_shard,
            root_shard
        ]
    );
    assert_eq!(named(&tl, "fsdp", "adam.step").len(), 5);
    // No autocast weight copies: the gathered parameters are bf16 already.
    assert_eq!(peak_in(&tl, Phase::Forward, &[Category::AutocastCopies]), 0);
    // A block's backward: its unsharded bf16 gradient (196864 · 2), reduce-scattered to a
    // bf16 shard (49216 · 2) and kept as an fp32 shard (49216 · 4) until zero_grad.
    let flat = named(&tl, "fsdp", "unsharded_grad");
    assert_eq!(tl.tensors[flat[0]].bytes, BLOCK * 2);
    let kept = named(&tl, "fsdp", "grad_shard");
    assert_eq!(tl.tensors[kept[0]].bytes, BLOCK / 4 * 4);
    assert_eq!(freed_in(&tl, kept[0]), Some(Phase::Optimizer));
    // Per-rank sharded model states: (4 + 4 + 8) bytes · Ψ / 4 plus 5 step tensors —
    // Ψ = 160896 + 4 · 196864 = 948352 for this 4-layer model.
    let psi = ROOT + 4 * BLOCK;
    let states = live_before(
        &tl,
        Phase::EvalAfterStep,
        &[Category::Parameters, Category::Optimizer],
    );
    assert_eq!(states, (4 + 8) * psi / 4 + 5 * 4);
}

#[test]
fn fsdp_gathers_one_block_in_the_forward_and_prefetches_one_in_the_backward() {
    let (block, root) = (BLOCK * 2, ROOT * 2);
    // The bf16 cast of a block's local shard for the all-gather: 49216 · 2 bytes.
    let mp = BLOCK / 4 * 2;
    let full = fsdp("fsdp");
    // FULL_SHARD forward: the root (never resharded after forward) and the block running,
    // plus the next block's mp shard while it is gathered (the previous one is freed).
    assert_eq!(
        peak_in(&full, Phase::Forward, &[Category::Communication]),
        root + block + mp
    );
    // Backward: the root, the block whose backward runs, and the one BACKWARD_PRE prefetches.
    assert_eq!(
        peak_in(&full, Phase::Backward, &[Category::Communication]),
        root + 2 * block + mp
    );
    // SHARD_GRAD_OP keeps every block gathered from its forward to its backward: by the last
    // block's gather, the root and all four.
    let grad_op = fsdp("fsdp_grad_op");
    assert_eq!(
        peak_in(&grad_op, Phase::Forward, &[Category::Communication]),
        root + 4 * block + mp
    );
}

/// Tensor parallelism of degree 2 on the tiny model: Megatron pads the vocabulary to a
/// multiple of 128 × 2 = 256 → 1024 rows, 512 per rank; c_attn (3·128/2 = 192, 128),
/// attn.c_proj (128, 64), c_fc (256, 128), mlp.c_proj (128, 256); norms and wpe whole.
#[test]
fn tensor_parallel_splits_heads_width_and_vocabulary() {
    let tl = run(&cfg(&["--world_size=2", "--parallelism=tp"]));
    let params: u64 = tl
        .tensors
        .iter()
        .filter(|t| t.category == Category::Parameters && t.phase == Phase::Init)
        .map(|t| t.bytes)
        .sum();
    // wte 512·128 + wpe 256·128 + 2 × (ln_1 128 + 192·128 + 128·64 + ln_2 128 + 256·128
    // + 128·256) + ln_f 128 = 65536 + 32768 + 2 · 98560 + 128 = 295552 fp32 parameters.
    assert_eq!(params, 295_552 * 4);
    // Every rank runs every micro-step (no data parallelism): 8 → 2 simulated per step.
    assert_eq!(forward_passes(&tl), 4);
    // Logits are this rank's vocabulary slice: (4, 256, 512) bf16; the vocab-parallel loss
    // keeps their fp32 copy as its softmax (no log-probs), which becomes the gradient.
    let logits = named(&tl, "lm_head", "logits");
    assert_eq!(tl.tensors[logits[0]].bytes, 4 * 256 * 512 * 2);
    let softmax = named(&tl, "loss", "logits_fp32");
    let trained: Vec<usize> = softmax
        .into_iter()
        .filter(|&t| tl.tensors[t].phase == Phase::Forward)
        .collect();
    assert_eq!(tl.tensors[trained[0]].bytes, 4 * 256 * 512 * 4);
    assert_eq!(freed_in(&tl, trained[0]), Some(Phase::Backward));
    assert!(named(&tl, "loss", "log_probs").is_empty());
    // The MLP's hidden activation is 512 / 2 wide: (4, 256, 256) bf16.
    let fc_out: Vec<usize> = (0..tl.tensors.len())
        .filter(|&i| {
            let n = &tl.tensors[i].name;
            n.layer == Some(0) && n.module == "mlp.c_fc" && n.what == "out"
        })
        .collect();
    assert_eq!(tl.tensors[fc_out[0]].bytes, 4 * 256 * 256 * 2);
}

#[test]
fn tensor_parallel_needs_heads_divisible_by_the_degree() {
    let mut c = cfg(&[]);
    c.world_size = 3;
    c.parallelism = vramplan::config::Parallelism::Tp;
    let err = simulate(&c, Runtime::pytorch(&c, None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("n_head = 4 is not divisible by world_size = 3"),
        "{err}"
    );
}
