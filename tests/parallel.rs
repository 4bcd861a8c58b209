//! One rank of a multi-GPU run, counted by hand on a tiny GPT-2, and ZeRO's model states
//! against DeepSpeed's published formulas.
//!
//! The tiny model (bias=False, n_layer 2, n_embd 128, vocab 1000, block_size 256) has, in
//! nanoGPT's module order and optimizer groups:
//!   decay (2-D): wte 1000·128 = 128000, wpe 256·128 = 32768, per layer c_attn 384·128 = 49152,
//!                attn.c_proj 128·128 = 16384, c_fc 512·128 = 65536, mlp.c_proj 128·512 = 65536
//!                → 128000 + 32768 + 2·196608 = 553984
//!   no decay:    ln_1, ln_2 per layer and ln_f, 128 each → 5·128 = 640
//!   Ψ = 554624 parameters.

use vramplan::config::{apply_overrides, TrainConfig};
use vramplan::sim::parallel::{bucket_assignment, REDUCE_BUCKET_ELEMENTS};
use vramplan::sim::{simulate, Category, DType, Phase, Runtime, Timeline};

const DECAY: u64 = 553_984;
const NO_DECAY: u64 = 640;
const PSI: u64 = DECAY + NO_DECAY;

fn cfg(overrides: &[&str]) -> TrainConfig {
    let mut c = TrainConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 128,
        block_size: 256,
        vocab_size: 1000,
        batch_size: 4,
        gradient_accumulation_steps: 8,
        compile: false,
        ..TrainConfig::default()
    };
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    apply_overrides(&mut c, &o).unwrap();
    c
}

fn run(c: &TrainConfig) -> Timeline {
    simulate(c, Runtime::pytorch(c, None)).unwrap()
}

/// Ids of the tensors named `module.what`, in creation order.
fn named(tl: &Timeline, module: &str, what: &str) -> Vec<usize> {
    (0..tl.tensors.len())
        .filter(|&i| tl.tensors[i].name.module == module && tl.tensors[i].name.what == what)
        .collect()
}

fn bytes(tl: &Timeline, ids: &[usize]) -> Vec<u64> {
    ids.iter().map(|&i| tl.tensors[i].bytes).collect()
}

/// The phase in which a tensor was freed, or None if it lives to the end.
fn freed_in(tl: &Timeline, t: usize) -> Option<Phase> {
    tl.events
        .iter()
        .rev()
        .find(|e| e.tensor as usize == t && e.kind == vramplan::sim::timeline::EventKind::Free)
        .map(|e| e.phase)
}

/// Live bytes of `cats` right before the first event of `phase`.
fn live_before(tl: &Timeline, phase: Phase, cats: &[Category]) -> u64 {
    let mut live = 0u64;
    for e in &tl.events {
        if e.phase == phase {
            break;
        }
        let r = &tl.tensors[e.tensor as usize];
        if cats.contains(&r.category) {
            match e.kind {
                vramplan::sim::timeline::EventKind::Alloc => live += r.bytes,
                vramplan::sim::timeline::EventKind::Free => live -= r.bytes,
            }
        }
    }
    live
}

fn forward_passes(tl: &Timeline) -> usize {
    named(tl, "lm_head", "logits")
        .into_iter()
        .filter(|&i| tl.tensors[i].phase == Phase::Forward)
        .count()
}

#[test]
fn nanogpt_gives_each_rank_its_share_of_the_accumulation() {
    // Two optimizer steps are simulated, each with min(micro-steps, 2) forwards.
    // ga 4 on one GPU: 4 // 1 = 4 micro-steps → 2 simulated per step → 4 forwards.
    assert_eq!(
        forward_passes(&run(&cfg(&["--gradient_accumulation_steps=4"]))),
        4
    );
    // ga 4 over 4 ranks: 4 // 4 = 1 micro-step per rank → 1 per step → 2 forwards.
    let c = cfg(&["--gradient_accumulation_steps=4", "--world_size=4"]);
    assert_eq!(forward_passes(&run(&c)), 2);
    // The tokens per optimizer step stay global: 4 × 256 × 4 either way.
    assert_eq!(
        c.batch_size * c.block_size * c.gradient_accumulation_steps,
        4096
    );
}

#[test]
fn bucket_assignment_closes_a_bucket_once_it_reaches_its_limit() {
    let mib = 1u64 << 20;
    let f = DType::F32;
    // 0.6 + 0.6 MiB reach the 1 MiB first limit; 30 MiB alone reaches 25 MiB; three 10 MiB
    // tensors reach it on the third; the last 1 MiB is a leftover bucket.
    let sizes = [
        (6 * mib / 10, f),
        (6 * mib / 10, f),
        (30 * mib, f),
        (10 * mib, f),
        (10 * mib, f),
        (10 * mib, f),
        (mib, f),
    ];
    let b = bucket_assignment(&sizes, &[mib, 25 * mib]);
    assert_eq!(b, vec![vec![0, 1], vec![2], vec![3, 4, 5], vec![6]]);
    // Tensors of another dtype fill a bucket of their own.
    let mixed = [(mib, f), (mib, DType::BF16), (mib, f)];
    assert_eq!(
        bucket_assignment(&mixed, &[2 * mib]),
        vec![vec![0, 2], vec![1]]
    );
}

#[test]
fn ddp_allocates_every_gradient_bucket_at_construction() {
    let single = run(&cfg(&[]));
    let tl = run(&cfg(&["--world_size=4", "--parallelism=ddp"]));
    assert!(named(&single, "ddp", "grad_bucket").is_empty());
    // fp32 parameters in order (bytes): wte 512000, wpe 131072, layer0: ln_1 512,
    // c_attn 196608, c_proj 65536, ln_2 512, c_fc 262144 — the running sum reaches the
    // 1 MiB (1048576) first limit at c_fc: 512000 + 131072 + 512 + 196608 + 65536 + 512
    // + 262144 = 1168384. The rest (layer0.mlp.c_proj 262144, layer1 787456, ln_f 512 =
    // 1050112) stays under 25 MiB: a leftover bucket. The Reducer gets them reversed.
    let buckets = named(&tl, "ddp", "grad_bucket");
    assert_eq!(bytes(&tl, &buckets), vec![1_050_112, 1_168_384]);
    assert_eq!(
        1_050_112 + 1_168_384,
        4 * PSI,
        "a second copy of every fp32 gradient"
    );
    for &b in &buckets {
        assert_eq!(tl.tensors[b].category, Category::Communication);
        assert_eq!(tl.tensors[b].phase, Phase::Init);
        assert_eq!(freed_in(&tl, b), None, "buckets live for the whole run");
    }
    // _sync_module_states: all 2218496 bytes fit one 250 MiB broadcast bucket, freed at init.
    let flat = named(&tl, "ddp", "broadcast_flat");
    assert_eq!(bytes(&tl, &flat), vec![4 * PSI]);
    assert_eq!(freed_in(&tl, flat[0]), Some(Phase::Init));
    // Everything else is the single-GPU run's: parameters, gradients and AdamW state whole.
    let states = [
        Category::Parameters,
        Category::Gradients,
        Category::Optimizer,
    ];
    assert_eq!(
        live_before(&tl, Phase::EvalAfterStep, &states),
        live_before(&single, Phase::EvalAfterStep, &states)
    );
}

/// ZeRO's group layout for the tiny model over 4 ranks: alignment 2 × 4 = 8 elements;
/// 553984 = 8 · 69248 and 640 = 8 · 80 need no padding. Rank 0's partitions: 553984 / 4 =
/// 138496 and 640 / 4 = 160 elements.
const P_DECAY: u64 = 138_496;
const P_NO_DECAY: u64 = 160;

fn zero_model_states(stage: u32) -> Timeline {
    run(&cfg(&[
        "--world_size=4",
        &format!("--parallelism=zero{stage}"),
    ]))
}

#[test]
fn zero_partitions_master_weights_and_adam_state() {
    for stage in [1, 2] {
        let tl = zero_model_states(stage);
        // The module in bf16, flattened per group: 553984 · 2 and 640 · 2 bytes.
        let flats = named(&tl, "flat_param", "bit16_group");
        assert_eq!(bytes(&tl, &flats), vec![1_107_968, 1_280], "stage {stage}");
        // Parameters themselves are views: no bytes of their own.
        let wte = named(&tl, "wte", "weight");
        assert_eq!(bytes(&tl, &wte), vec![0]);
        assert_eq!(tl.tensors[wte[0]].dtype, DType::BF16);
        // fp32 master partitions and FusedAdam's two moments on each (no step tensor).
        let fp32 = named(&tl, "zero", "fp32_partition");
        assert_eq!(bytes(&tl, &fp32), vec![P_DECAY * 4, P_NO_DECAY * 4]);
        assert_eq!(
            bytes(&tl, &named(&tl, "zero", "adam.exp_avg")),
            vec![P_DECAY * 4, P_NO_DECAY * 4]
        );
        assert_eq!(
            bytes(&tl, &named(&tl, "zero", "adam.exp_avg_sq")),
            vec![P_DECAY * 4, P_NO_DECAY * 4]
        );
        assert!(named(&tl, "zero", "adam.step").is_empty());
        // All of it exists from deepspeed.initialize on (initialize_optimizer_states).
        for t in fp32.iter().chain(&flats) {
            assert_eq!(tl.tensors[*t].phase, Phase::Init);
            assert_eq!(freed_in(&tl, *t), None);
        }
        // Model states that stay: 2·Ψ + 12·Ψ/4 = 1109248 + 1663872 bytes.
        let kept = live_before(
            &tl,
            Phase::EvalAfterStep,
            &[Category::Parameters, Category::Optimizer],
        );
        assert_eq!(kept, 2 * PSI + 12 * PSI / 4);
    }
}

#[test]
fn zero2_reduces_through_one_bucket_into_a_gradient_partition() {
    let tl = zero_model_states(2);
    // The reduce bucket: reduce_bucket_size = 5e8 bf16 elements, one per backward, freed by
    // the epilogue of that backward.
    let ipg = named(&tl, "zero", "ipg_buffer");
    assert_eq!(REDUCE_BUCKET_ELEMENTS, 500_000_000);
    // 8 // 4 = 2 micro-steps per rank, 2 steps: 4 backwards.
    assert_eq!(bytes(&tl, &ipg), vec![1_000_000_000; 4]);
    for &b in &ipg {
        assert_eq!(tl.tensors[b].phase, Phase::Backward);
        assert_eq!(freed_in(&tl, b), Some(Phase::Backward));
    }
    // grads_in_partition: the numel of every parameter overlapping rank 0's partitions —
    // decay [0, 138496): wte (0..128000) and wpe (128000..160768); no decay [0, 160):
    // layer0.ln_1 (0..128) and layer0.ln_2 (128..256) → 128000 + 32768 + 128 + 128 = 161024
    // bf16 elements = 322048 bytes, once per backward.
    let gip = named(&tl, "zero", "grads_in_partition");
    assert_eq!(bytes(&tl, &gip), vec![322_048; 4]);
    // The first micro-step's stays (averaged_gradients) until the step; the second's is added
    // into it and freed by its epilogue.
    assert_eq!(freed_in(&tl, gip[0]), Some(Phase::Optimizer));
    assert_eq!(freed_in(&tl, gip[1]), Some(Phase::Backward));
    // No parameter keeps a .grad of its own past the backward.
    assert!(
        named(&tl, "wte", "grad").is_empty() || {
            named(&tl, "wte", "grad")
                .iter()
                .all(|&g| freed_in(&tl, g) == Some(Phase::Backward))
        }
    );
    // The step: per group a bf16 flat of the partition and its fp32 copy (138496 · 2 and
    // 138496 · 4, then 160 · 2 and 160 · 4), all freed in the step.
    let flat = named(&tl, "zero", "grad_partition_flat");
    assert_eq!(
        bytes(&tl, &flat),
        vec![P_DECAY * 2, P_NO_DECAY * 2, P_DECAY * 2, P_NO_DECAY * 2]
    );
}

#[test]
fn zero1_keeps_only_the_gradients_of_its_partition_after_the_backward() {
    let tl = zero_model_states(1);
    assert!(named(&tl, "zero", "ipg_buffer").is_empty());
    // At the boundary the gradients are all-reduced in one flattened chunk per dtype (Ψ is far
    // below 5e8): the bf16 weights' 553984 elements and the fp32 norm gradients' 640 (the
    // simulator's layer_norm gives fp32 weight gradients).
    let flats = named(&tl, "zero", "allreduce_flat");
    assert_eq!(
        bytes(&tl, &flats),
        vec![DECAY * 2, NO_DECAY * 4, DECAY * 2, NO_DECAY * 4]
    );
    // Right before the step, only the gradients of parameters overlapping rank 0's partitions
    // are alive: wte + wpe in bf16 (160768 · 2) and layer0's ln_1 and ln_2 weights in fp32
    // (256 · 4).
    let grads = live_before(&tl, Phase::Optimizer, &[Category::Gradients]);
    assert_eq!(grads, 160_768 * 2 + 256 * 4);
}

/// DeepSpeed's model-state formulas (ZeRO paper, K = 12 bytes of optimizer state per
/// parameter with mixed precision Adam): baseline (2 + 2 + K)Ψ, stage 1 4Ψ + KΨ/N, stage 2
/// 2Ψ + (2 + K)Ψ/N. The simulator's per-rank parameters + optimizer state (what lives the
/// whole run) equal 2Ψ + KΨ/N exactly for this model (no alignment padding); its gradients
/// differ in shape from the formula's, for the reasons each assertion gives.
#[test]
fn zero_model_states_against_deepspeeds_formulas() {
    let (n, k) = (4u64, 12u64);
    for stage in [1, 2] {
        let tl = zero_model_states(stage);
        let states = live_before(
            &tl,
            Phase::EvalAfterStep,
            &[Category::Parameters, Category::Optimizer],
        );
        assert_eq!(states, 2 * PSI + k * PSI / n);
        // Gradients at their largest, over the whole run.
        let grads = vramplan::sim::replay::category_peak(&tl, &[Category::Gradients]);
        match stage {
            1 => {
                // The formula's 2Ψ: every bf16 gradient, accumulated over the micro-steps
                // (norm gradients are fp32 in the simulator: + 640 · 2). In the second
                // micro-step the tied wte/lm_head weight has, beside its .grad, lm_head's
                // pending gradient, the embedding's and their out-of-place sum alive at once:
                // + 3 × 128000 · 2 — a transient the formula does not count.
                assert_eq!(grads, 2 * PSI + NO_DECAY * 2 + 3 * 256_000);
                // So the model states at their largest are the paper's 4Ψ + KΨ/N plus those.
                let all = [
                    Category::Parameters,
                    Category::Gradients,
                    Category::Optimizer,
                ];
                let peak = vramplan::sim::replay::category_peak(&tl, &all);
                assert_eq!(peak, 4 * PSI + k * PSI / n + NO_DECAY * 2 + 3 * 256_000);
            }
            _ => {
                // The formula's 2Ψ/N = 277312 is the partition; DeepSpeed allocates the
                // gradients of whole parameters that overlap it (322048) and, at the step, an
                // fp32 copy of the partition (4Ψ/N) — the formula leaves both out; autograd's
                // own gradient of one parameter lives until its hook copies it to the bucket.
                // and of the bf16 flatten it is cast from (2Ψ/N); together: 322048 + 6 · 138496.
                assert_eq!(grads, 322_048 + 6 * P_DECAY);
                // The model states at their largest (in the step) against the paper's stage-2
                // formula 2Ψ + 14Ψ/N: over it by exactly those two differences.
                let all = [
                    Category::Parameters,
                    Category::Gradients,
                    Category::Optimizer,
                ];
                let peak = vramplan::sim::replay::category_peak(&tl, &all);
                let paper = 2 * PSI + (2 + k) * PSI / n;
                assert_eq!(peak, paper + (322_048 - 2 * PSI / n) + 6 * P_DECAY);
                // DeepSpeed's estimate_zero2_model_states_mem_needs(cpu_offload=False):
                // 4Ψ + int(16Ψ/N) — it budgets every gradient whole (2Ψ) and the fp32 gradient
                // partition; the simulator's peak stays under it.
                let estimate = 4 * PSI + 16 * PSI / n;
                assert!(peak <= estimate, "{peak} > {estimate}");
            }
        }
        // The reduce bucket is outside the formulas: 5e8 elements whatever Ψ is.
        let comm = vramplan::sim::replay::category_peak(&tl, &[Category::Communication]);
        if stage == 2 {
            assert_eq!(comm, 1_000_000_000);
        }
    }
}

/// Largest live bytes of `cats` over the events of `phase`.
fn peak_in(tl: &Timeline, phase: Phase, cats: &[Category]) -> u64 {
    let (mut live, mut peak) = (0u64, 0u64);
    for e in &tl.events {
        let r = &tl.tensors[e.tensor as usize];
        if !cats.contains(&r.category) {
            continue;
        }
        match e.kind {
            vramplan::sim::timeline::EventKind::Alloc => live += r.bytes,
            vramplan::sim::timeline::EventKind::Free => live -= r.bytes,
        }
        if e.phase == phase {
            peak = peak.max(live);
        }
    }
    peak
}

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

/// ZeRO-3 on the tiny 2-layer model over 4 ranks: every parameter's numel divides by 4, so
/// rank 0's partitions are exactly Ψ/4 = 138656 elements; every parameter but wte (128000 >
/// 1e5) is persistent: 554624 − 128000 = 426624 elements kept whole in bf16.
#[test]
fn zero3_partitions_everything_and_gathers_only_large_parameters() {
    use vramplan::sim::parallel::PERSISTENCE_THRESHOLD;
    assert_eq!(PERSISTENCE_THRESHOLD, 100_000);
    let (n, k) = (4u64, 12u64);
    let tl = zero_model_states(3);
    let parts = named(&tl, "flat_param", "ds_partitions");
    assert_eq!(bytes(&tl, &parts), vec![DECAY / 4 * 2, NO_DECAY / 4 * 2]);
    let persistent: u64 = bytes(&tl, &named(&tl, "flat_param", "ds_persistent"))
        .iter()
        .sum();
    assert_eq!(persistent, (PSI - 128_000) * 2);
    // The persistent gradient partition buffer (2Ψ/N) and the 5e8-element reduce bucket.
    assert_eq!(
        bytes(&tl, &named(&tl, "zero", "grad_partitions_flat_buffer")),
        vec![PSI / 4 * 2]
    );
    assert_eq!(
        bytes(&tl, &named(&tl, "zero", "ipg_bucket_flat_buffer")),
        vec![1_000_000_000]
    );
    // Only the root unit has a parameter to gather (wte, 128000 bf16 elements): gathered
    // for the root's forward and for its backward.
    let gathered = named(&tl, "fsdp", "gathered_params");
    assert!(!gathered.is_empty());
    assert!(bytes(&tl, &gathered).iter().all(|&b| b == 256_000));
    // The paper's stage-3 model states (4 + K)Ψ/N are exactly the partitions, the gradient
    // buffer and the optimizer's; the persistence threshold adds the small parameters whole.
    let states = live_before(
        &tl,
        Phase::EvalAfterStep,
        &[
            Category::Parameters,
            Category::Gradients,
            Category::Optimizer,
        ],
    );
    assert_eq!(states, (4 + k) * PSI / n + persistent);
    // DeepSpeed's estimate_zero3_model_states_mem_needs(cpu_offload=False):
    // 4 × largest layer (wte: 128000) + 18Ψ/N — it counts the fp32 gradient copy of the step
    // (4Ψ/N, a transient here) and not the persistent parameters.
    let estimate = 4 * 128_000 + 18 * PSI / n;
    assert_eq!(estimate + persistent - 4 * 128_000 - 2 * PSI / n, states);
}

#[test]
fn check_says_whose_memory_it_shows() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vramplan"))
            .arg("check")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("VRAMPLAN_FAKE_NVML")
            .output()
            .unwrap()
    };
    let out = run(&["--world_size=8", "--parallelism=zero2", "--compile=False"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // 40 // 8 = 5 micro-steps per rank.
    assert!(
        text.contains("Per rank (rank 0 of 8, zero2): 5 micro-steps per rank per step"),
        "{text}"
    );
    let out = run(&["--world_size=4", "--parallelism=fsdp", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ranks"]["world_size"], 4);
    assert_eq!(v["ranks"]["parallelism"], "fsdp");
    assert_eq!(v["ranks"]["micro_steps_per_rank"], 10);
    assert!(v["categories"]["communication"].as_u64().unwrap() > 0);
    // One GPU: no ranks object, no header line.
    let out = run(&["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["ranks"].is_null());
    assert_eq!(v["categories"]["communication"], 0);
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

#[test]
fn ddp_gradient_as_bucket_view_keeps_no_second_copy() {
    let copy = run(&cfg(&["--world_size=4"]));
    let view = run(&cfg(&["--world_size=4", "--ddp_bucket_view=True"]));
    // Right before the first optimizer step: every fp32 gradient (4Ψ bytes) as its own
    // tensor by default; with bucket views the gradients are the buckets' storage.
    assert_eq!(
        live_before(&copy, Phase::Optimizer, &[Category::Gradients]),
        4 * PSI
    );
    assert_eq!(
        live_before(&view, Phase::Optimizer, &[Category::Gradients]),
        0
    );
    // The buckets are the same either way.
    assert_eq!(
        bytes(&view, &named(&view, "ddp", "grad_bucket")),
        vec![1_050_112, 1_168_384]
    );
}

/// No tensor outlives the run but what the run still holds: the model states each engine
/// keeps, its persistent buffers, and what train.py still references.
#[test]
fn nothing_leaks_under_any_parallelism() {
    let modes = [
        "ddp",
        "zero1",
        "zero2",
        "zero3",
        "fsdp",
        "fsdp_grad_op",
        "tp",
    ];
    let knobs: &[&[&str]] = &[
        &[],
        &["--activation_checkpointing=True", "--dropout=0.1"],
        &["--dtype=float32", "--flash=False"],
        &["--optimizer=adamw8bit"],
    ];
    for mode in modes {
        for k in knobs {
            let mut args = vec![
                "--world_size=2".to_string(),
                format!("--parallelism={mode}"),
            ];
            args.extend(k.iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let tl = run(&cfg(&refs));
            for t in tl.live_after(tl.events.len() - 1) {
                let r = &tl.tensors[t as usize];
                let what = format!("{}.{}", r.name.module, r.name.what);
                let kept = matches!(
                    r.category,
                    Category::Parameters | Category::Optimizer | Category::Workspace
                ) || matches!(
                    what.as_str(),
                    "ddp.grad_bucket"
                        | "zero.ipg_bucket_flat_buffer"
                        | "zero.grad_partitions_flat_buffer"
                        // FSDP's root stays gathered after a forward until its backward.
                        | "fsdp.gathered_params"
                ) || r.name.module == "batch"
                    || (r.name.module == "loss" && r.name.what == "scaled")
                    || (r.name.module == "lm_head" && r.name.what == "logits");
                assert!(kept, "{mode} {k:?}: {} {} still alive", r.name, r.shape);
            }
        }
    }
}
