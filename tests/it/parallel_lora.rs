//! LoRA and QLoRA under FSDP and ZeRO, rank 0, counted by hand on the small Llama
//! (tests/it/support/hf.rs: width 64, 4 query and 2 key/value heads of 16, MLP 160,
//! vocabulary 100, tied embeddings; 2 layers; LoRA r = 8 on PEFT's default q_proj, v_proj).
//!
//! Parameters, from the shapes (out × in):
//!   embed_tokens 100·64 = 6400 (lm_head tied), final norm 64;
//!   per layer: 2 norms 2·64 = 128, q 64·64 = 4096, k 32·64 = 2048, v 2048, o 4096,
//!   gate/up 160·64 = 10240 each, down 64·160 = 10240 → 43136;
//!   base Ψ = 6400 + 64 + 2·43136 = 92736.
//!   adapters per layer: q A 8·64 = 512, B 64·8 = 512; v A 8·64 = 512, B 32·8 = 256 → 1792.

use crate::support::hf::{preset, SMALL_LLAMA};
use crate::support::sim::run;
use crate::support::tiny_gpt::{live_before, named};
use vramplan::config::TrainConfig;
use vramplan::model::{base_params, lora_params};
use vramplan::sim::timeline::{Category, EventKind, Phase, Timeline};
use vramplan::sim::DType;

const EMBED: u64 = 100 * 64;
const NORM: u64 = 64;
const BLOCK: u64 = 2 * 64 + 4096 + 2048 + 2048 + 4096 + 3 * 10240;
const ADAPTERS: [u64; 4] = [512, 512, 512, 256];

fn cfg(world: u64, extra: &[&str]) -> TrainConfig {
    let w = format!("--world_size={world}");
    let o = [
        SMALL_LLAMA,
        &[
            "--n_layer=2",
            "--lora_rank=8",
            "--compile=False",
            "--gradient_accumulation_steps=2",
            &w,
        ],
        extra,
    ]
    .concat();
    preset("llama-3.2-1b", &o)
}

fn sum_bytes(tl: &Timeline, ids: &[usize]) -> u64 {
    ids.iter().map(|&i| tl.tensors[i].bytes).sum()
}

/// Bytes of `cats` still allocated after the run's last event.
fn live_at_end(tl: &Timeline, cats: &[Category]) -> u64 {
    let mut live = 0i64;
    for e in &tl.events {
        let r = &tl.tensors[e.tensor as usize];
        if cats.contains(&r.category) {
            live += match e.kind {
                EventKind::Alloc => r.bytes as i64,
                EventKind::Free => -(r.bytes as i64),
            };
        }
    }
    live as u64
}

#[test]
fn the_hand_count_is_the_models_own() {
    let c = cfg(2, &["--parallelism=fsdp"]);
    assert_eq!(base_params(&c), EMBED + NORM + 2 * BLOCK);
    assert_eq!(lora_params(&c), 2 * ADAPTERS.iter().sum::<u64>());
}

/// FSDP, 2 ranks, PEFT's wrap policy: each block's FlatParameter holds its frozen bf16 base
/// (43136 elements → a shard of 21568), the root holds embed_tokens + norm (6464 → 3232);
/// each adapter is its own fp32 FlatParameter (512 → 256, 256 → 128).
#[test]
fn fsdp_shards_the_frozen_base_in_bf16_and_the_adapters_in_fp32() {
    let tl = run(&cfg(2, &["--parallelism=fsdp"]));
    let frozen = named(&tl, "flat_param", "fsdp_frozen_shard");
    let shards: Vec<u64> = frozen.iter().map(|&i| tl.tensors[i].bytes).collect();
    assert_eq!(
        shards,
        vec![BLOCK / 2 * 2, BLOCK / 2 * 2, (EMBED + NORM) / 2 * 2]
    );
    assert!(frozen.iter().all(|&i| tl.tensors[i].dtype == DType::BF16));
    // Adapters: per layer 256 + 256 + 256 + 128 = 896 fp32 elements; the root has none.
    let per_layer: u64 = ADAPTERS.iter().map(|n| n / 2).sum();
    let trainable = named(&tl, "flat_param", "fsdp_shard");
    assert_eq!(
        trainable
            .iter()
            .map(|&i| tl.tensors[i].bytes)
            .collect::<Vec<_>>(),
        vec![4 * per_layer, 4 * per_layer]
    );
    // The model's own tensors are views: no bytes outside the shards.
    let stray = tl
        .tensors
        .iter()
        .filter(|t| t.category == Category::Parameters && t.name.module != "flat_param")
        .map(|t| t.bytes)
        .sum::<u64>();
    assert_eq!(stray, 0);
    // Per-rank model states before the later eval: bf16 base / 2 + fp32 adapters / 2 + AdamW
    // per adapter FlatParameter (a 4-byte step and two fp32 moments, 8 adapters).
    let base = 2 * (EMBED + NORM + 2 * BLOCK) / 2;
    let adapters = 4 * 2 * per_layer;
    let adamw = 8 * 4 + 2 * 4 * 2 * per_layer;
    let states = live_before(
        &tl,
        Phase::EvalAfterStep,
        &[Category::Parameters, Category::Optimizer],
    );
    assert_eq!(states, base + adapters + adamw);
    // Gradients only for adapters: the unsharded flat gradient of a block's adapters is
    // their padded bf16 size (2 · 1792 bytes), kept as an fp32 shard (4 · 896).
    let flat = named(&tl, "fsdp", "unsharded_grad");
    assert!(flat
        .iter()
        .all(|&i| tl.tensors[i].bytes == 2 * 2 * per_layer));
    let kept = named(&tl, "fsdp", "grad_shard");
    assert!(kept.iter().all(|&i| tl.tensors[i].bytes == 4 * per_layer));
    // Nothing leaks: after the training steps gradients, gathers (the frozen root's too,
    // by the final callback) and temporaries are all freed.
    let transient = [
        Category::Gradients,
        Category::Communication,
        Category::AutocastCopies,
    ];
    assert_eq!(live_before(&tl, Phase::EvalAfterStep, &transient), 0);
}

/// The frozen block is gathered like any unit: in the forward the root (kept, 6464 bf16) and
/// one block (43136 bf16 frozen, then its adapters 1792 bf16, gathered here with the block),
/// plus the adapters' bf16 cast shard (896) while they are gathered.
#[test]
fn fsdp_gathers_frozen_blocks_per_unit() {
    let tl = run(&cfg(2, &["--parallelism=fsdp"]));
    let per_layer: u64 = ADAPTERS.iter().sum();
    let gathered_block = 2 * BLOCK + 2 * per_layer;
    let root = 2 * (EMBED + NORM);
    let forward =
        crate::support::tiny_gpt::peak_in(&tl, Phase::Forward, &[Category::Communication]);
    assert_eq!(forward, root + gathered_block + 2 * per_layer / 2);
    // The root's frozen FlatParameter is resharded only by the final callback's catch-all.
    let root_gather = named(&tl, "fsdp", "gathered_frozen_params")
        .into_iter()
        .find(|&i| tl.tensors[i].bytes == root)
        .unwrap();
    let freed = tl
        .events
        .iter()
        .find(|e| e.tensor as usize == root_gather && e.kind == EventKind::Free)
        .map(|e| e.phase);
    assert_eq!(freed, Some(Phase::Backward));
}

/// QLoRA under FSDP: the packed 4-bit weights typed as bnb_4bit_quant_storage = bf16, n/4
/// elements per Linear; the rest of the base stays bf16 (no fp32 cast of
/// prepare_model_for_kbit_training). A block: packed 4096/4 + 2048/4 + 2048/4 + 4096/4 +
/// 3 · 10240/4 = 10752, norms 128 → 10880 bf16 → shard 5440.
#[test]
fn fsdp_qlora_shards_the_packed_weights_as_bf16_storage() {
    let tl = run(&cfg(2, &["--parallelism=fsdp", "--quantization=nf4"]));
    let packed = 4096 / 4 + 2 * (2048 / 4) + 4096 / 4 + 3 * (10240 / 4);
    let frozen = named(&tl, "flat_param", "fsdp_frozen_shard");
    let shards: Vec<u64> = frozen.iter().map(|&i| tl.tensors[i].bytes).collect();
    let block = packed + 2 * 64;
    assert_eq!(
        shards,
        vec![block / 2 * 2, block / 2 * 2, (EMBED + NORM) / 2 * 2]
    );
    // The quantization constants are not parameters (Params4bit.quant_state): whole on every
    // rank. Double quantization: per Linear a uint8 absmax per 64 weights, an fp32 absmax per
    // 256 of those, an fp32 offset and the 16-entry fp32 code.
    let weights: [u64; 7] = [4096, 2048, 2048, 4096, 10240, 10240, 10240];
    let per_layer: u64 = weights
        .iter()
        .map(|n| n / 64 + 4 * (n / 64).div_ceil(256) + 4 + 16 * 4)
        .sum();
    let constants: u64 = tl
        .tensors
        .iter()
        .filter(|t| t.category == Category::Parameters && t.name.what.starts_with("weight."))
        .map(|t| t.bytes)
        .sum();
    assert_eq!(constants, 2 * per_layer);
    // TRL makes sharded QLoRA's adapters without PEFT's fp32 upcast
    // (autocast_adapter_dtype=False): bf16 shards (896 per layer), bf16 gradient shards
    // (no cast after the bf16 reduce-scatter) and bf16 AdamW moments.
    let per_layer: u64 = ADAPTERS.iter().map(|n| n / 2).sum();
    let trainable = named(&tl, "flat_param", "fsdp_shard");
    assert!(trainable
        .iter()
        .all(|&i| tl.tensors[i].bytes == 2 * per_layer));
    assert!(named(&tl, "fsdp", "grad_shard").is_empty());
    let moments = named(&tl, "fsdp", "adam.exp_avg");
    assert_eq!(sum_bytes(&tl, &moments), 2 * 2 * per_layer);
}

/// ZeRO-2, 2 ranks: only the adapters are flattened (stage_1_and_2.py keeps
/// `requires_grad` parameters in the bit16 groups): 2 · 1792 = 3584 bf16 elements in one
/// group (all 2-D, weight decay), padded to 4 → partitions of 1792: fp32 master 1792 · 4 and
/// AdamW moments 2 · 1792 · 4. The frozen bf16 base is whole on every rank.
#[test]
fn zero2_keeps_the_frozen_base_whole_and_partitions_the_adapters() {
    let tl = run(&cfg(2, &["--parallelism=zero2"]));
    let adapters = 2 * ADAPTERS.iter().sum::<u64>();
    assert_eq!(
        sum_bytes(&tl, &named(&tl, "flat_param", "bit16_group")),
        2 * adapters
    );
    let part = adapters / 2;
    assert_eq!(
        sum_bytes(&tl, &named(&tl, "zero", "fp32_partition")),
        4 * part
    );
    let optimizer = live_before(&tl, Phase::Forward, &[Category::Optimizer]);
    assert_eq!(optimizer, 4 * part + 2 * 4 * part);
    let params = live_before(&tl, Phase::Forward, &[Category::Parameters]);
    assert_eq!(params, 2 * (EMBED + NORM + 2 * BLOCK) + 2 * adapters);
    // The gradient partition: the adapters lying in [0, 1792) — layer 0's, 1792 elements.
    let gip = named(&tl, "zero", "grads_in_partition");
    assert!(gip.iter().all(|&i| tl.tensors[i].bytes == 2 * part));
}

/// ZeRO-3, 2 ranks, MLP width 2048 so gate/up/down (2048 · 64 = 131072) exceed the
/// persistence threshold (1e5): frozen parameters are partitioned too (ceil(n / 2) each,
/// bf16), gathered per unit, and have no fp32 copy or state.
#[test]
fn zero3_partitions_frozen_parameters_and_gathers_them() {
    let tl = run(&cfg(
        2,
        &["--parallelism=zero3", "--intermediate_size=2048"],
    ));
    let block = 2 * 64 + 4096 + 2048 + 2048 + 4096 + 3 * 131_072;
    let frozen = EMBED + NORM + 2 * block;
    assert_eq!(
        sum_bytes(&tl, &named(&tl, "flat_param", "ds_frozen_partitions")),
        2 * (frozen / 2)
    );
    let adapters = 2 * ADAPTERS.iter().sum::<u64>();
    assert_eq!(
        sum_bytes(&tl, &named(&tl, "zero", "fp32_partition")),
        4 * (adapters / 2)
    );
    // What a block gathers: its three MLP weights (the rest is persistent), bf16.
    let gathered = named(&tl, "fsdp", "gathered_params");
    assert!(gathered
        .iter()
        .any(|&i| tl.tensors[i].bytes == 2 * 3 * 131_072));
    let transient = [Category::Gradients, Category::Communication];
    // The reduce bucket and the gradient partition buffer live for the run; all else goes.
    let bucket = 2 * 500_000_000;
    assert_eq!(live_at_end(&tl, &transient), bucket + 2 * (adapters / 2));
}

/// Llama-3.1-8B (config.json: hidden 4096, 32 layers, 32 heads / 8 key-value heads of 128,
/// MLP 14336, vocabulary 128256, untied lm_head), LoRA r = 16 on q_proj, v_proj, FSDP over 8.
/// A block: q, o 4096² each, k, v 1024 · 4096 each, gate/up/down 14336 · 4096 each, two
/// norms of 4096 → 218112000; the root: embed + lm_head 2 · 128256 · 4096 + norm 4096 =
/// 1050677248; 32 · 218112000 + 1050677248 = 8030261248 (the model card's 8.03B). Every unit
/// divides by 8: rank 0 keeps Ψ / 8 bf16 elements. Adapters per layer: q 16 · (4096 + 4096)
/// = 131072, v 16 · (4096 + 1024) = 81920 → 212992; 32 layers → 6815744, each adapter's
/// FlatParameter divisible by 8.
#[test]
fn llama_8b_lora_under_fsdp_over_8_holds_an_eighth_of_the_base() {
    let c = preset(
        "llama-3.1-8b",
        &[
            "--lora_rank=16",
            "--world_size=8",
            "--parallelism=fsdp",
            "--batch_size=1",
            "--block_size=2048",
            "--dtype=bfloat16",
            "--activation_checkpointing=True",
        ],
    );
    let base: u64 = 32 * 218_112_000 + 1_050_677_248;
    assert_eq!(base, 8_030_261_248);
    assert_eq!(base_params(&c), base);
    let adapters: u64 = 32 * (16 * (4096 + 4096) + 16 * (4096 + 1024));
    assert_eq!(lora_params(&c), adapters);
    let tl = run(&c);
    let params = live_before(&tl, Phase::Forward, &[Category::Parameters]);
    assert_eq!(params, 2 * base / 8 + 4 * adapters / 8);
    // torch AdamW per adapter FlatParameter (32 layers · 2 targets · A, B = 128 of them): a
    // 4-byte step and two fp32 moments.
    let adamw = live_before(&tl, Phase::EvalAfterStep, &[Category::Optimizer]);
    assert_eq!(adamw, 128 * 4 + 2 * 4 * adapters / 8);
}
