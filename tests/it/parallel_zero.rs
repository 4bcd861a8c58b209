//! DeepSpeed ZeRO stages 1–3 on one rank, counted by hand on the tiny GPT-2 (tests/support),
//! and the model states against the ZeRO paper's formulas and DeepSpeed's estimators.

use crate::support::sim::run;
use crate::support::tiny_gpt::*;
use vramplan::sim::parallel::REDUCE_BUCKET_ELEMENTS;
use vramplan::sim::{Category, DType, Phase, Timeline};

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
