//! CPU offload, rank 0, counted by hand on the tiny GPT-2 (tests/it/support/tiny_gpt.rs:
//! Ψ = 554624, decay group 553984, no-decay 640; its largest parameter is wte, 128000).
//! What leaves the device is read from the engines' source (zero_offload.rs, zero3.rs,
//! fsdp.rs); the tests check that the device keeps exactly the rest.

use crate::support::sim::run;
use crate::support::tiny_gpt::*;
use vramplan::sim::{Category, Phase};

/// ZeRO-2 + offload_optimizer over 2 ranks: the bf16 groups stay (Ψ · 2 bytes, no padding:
/// 553984 and 640 are multiples of 2 · 2), beside `temp_grad_buffer_for_gpu_offload`
/// (128000 bf16). No fp32 partition, moment or gradient partition on the device.
#[test]
fn zero2_offload_keeps_only_the_bf16_module_and_buffers() {
    let tl = run(&cfg(&[
        "--world_size=2",
        "--parallelism=zero2",
        "--offload_optimizer=True",
    ]));
    let on_device = live_before(
        &tl,
        Phase::Forward,
        &[Category::Parameters, Category::Optimizer],
    );
    assert_eq!(on_device, 2 * PSI);
    assert_eq!(
        bytes(&tl, &named(&tl, "zero", "temp_grad_buffer_for_gpu_offload")),
        vec![2 * 128_000]
    );
    assert!(named(&tl, "zero", "grads_in_partition").is_empty());
    assert!(named(&tl, "zero", "fp32_partition").is_empty());
    // The step brings each group's updated fp32 partition to the device before the bf16
    // copy: 553984 / 2 and 640 / 2 elements, one at a time.
    assert_eq!(
        peak_in(&tl, Phase::Optimizer, &[Category::Optimizer]),
        4 * DECAY / 2
    );
    // Gradients: at the boundary each slice in rank 0's partition [0, 276992) is upcast for
    // the copy to the host; the largest is wte's 128000 (the decay group starts with it).
    let slices = named(&tl, "zero", "grad_slice_fp32");
    assert_eq!(
        slices.iter().map(|&i| tl.tensors[i].bytes).max(),
        Some(4 * 128_000)
    );
    // Nothing of the optimizer stays on the device after the step.
    assert_eq!(
        live_before(&tl, Phase::EvalAfterStep, &[Category::Optimizer]),
        0
    );
    // Against the same run without offload: 12 bytes per partition element less
    // (fp32 master 4 + two moments 8), Ψ / 2 = 277312 elements.
    let plain = run(&cfg(&["--world_size=2", "--parallelism=zero2"]));
    let kept = |tl| live_before(tl, Phase::Forward, &[Category::Optimizer]);
    assert_eq!(kept(&plain) - kept(&tl), 12 * (DECAY / 2 + NO_DECAY / 2));
    // The host: per group the fp32 partition, its fp32 gradient and two fp32 moments (16
    // bytes an element), temp_grad_buffer_for_cpu_offload (wte's 128000 in bf16), and, as
    // the first of 4 micro-steps accumulates, a bf16 buffer of every parameter that reaches
    // into rank 0's partition: wte, wpe, layer 0's c_attn, attn.c_proj, c_fc (291840) and
    // layer 0's two norms and layer 1's ln_1 (384).
    let host = 16 * (DECAY / 2 + NO_DECAY / 2) + 2 * 128_000 + 2 * (291_840 + 384);
    assert_eq!(tl.host_bytes, host);
    assert_eq!(plain.host_bytes, 0);
}

/// ZeRO-3 + offload_optimizer + offload_param over 2 ranks: only the persistent parameters
/// (at most 1e5 elements: every weight but wte's 128000) stay whole in bf16 on the device;
/// the reduce bucket (5e8 bf16) stays; fp32 partitions, moments and gradient partitions go.
#[test]
fn zero3_offload_keeps_persistent_parameters_and_the_bucket() {
    let tl = run(&cfg(&[
        "--world_size=2",
        "--parallelism=zero3",
        "--offload_optimizer=True",
        "--offload_params=True",
    ]));
    let params = live_before(&tl, Phase::Forward, &[Category::Parameters]);
    assert_eq!(params, 2 * (PSI - 128_000));
    assert_eq!(live_before(&tl, Phase::Forward, &[Category::Optimizer]), 0);
    assert!(named(&tl, "zero", "grad_partitions_flat_buffer").is_empty());
    assert_eq!(
        bytes(&tl, &named(&tl, "zero", "ipg_bucket_flat_buffer")),
        vec![2 * 500_000_000]
    );
    // The host: the bf16 partitions (every parameter has an even size: Ψ / 2 elements), and
    // per partition element 16 bytes of fp32 master, gradient and moments plus the bf16
    // gradient partition.
    assert_eq!(tl.host_bytes, (2 + 16 + 2) * (PSI / 2));
    // The root unit gathers wte when it runs: 128000 bf16.
    let gathered = named(&tl, "fsdp", "gathered_params");
    assert!(gathered.iter().all(|&i| tl.tensors[i].bytes == 2 * 128_000));
}

/// FSDP FULL_SHARD + CPUOffload over 4 ranks (4 layers, units as parallel_shard.rs: a block
/// 196864 elements, the root 160896): no shard, sharded gradient or optimizer state on the
/// device; each gather moves the fp32 shard to the device (49216 · 4 for a block) and casts
/// it to bf16 (49216 · 2) before the all-gather.
#[test]
fn fsdp_offload_moves_shards_to_the_device_only_for_gathers() {
    const BLOCK: u64 = 196_864;
    const ROOT: u64 = 160_896;
    let tl = run(&cfg(&[
        "--n_layer=4",
        "--world_size=4",
        "--parallelism=fsdp",
        "--offload_params=True",
    ]));
    let states = [
        Category::Parameters,
        Category::Optimizer,
        Category::Gradients,
    ];
    assert_eq!(live_before(&tl, Phase::EvalAfterStep, &states), 0);
    assert!(named(&tl, "flat_param", "fsdp_shard").is_empty());
    let moved = named(&tl, "fsdp", "offloaded_shard_on_device");
    assert_eq!(tl.tensors[moved[0]].bytes, 4 * (ROOT / 4));
    assert_eq!(tl.tensors[moved[1]].bytes, 4 * (BLOCK / 4));
    // The forward's gathers peak as without offload: the root, one block and its bf16 shard.
    assert_eq!(
        peak_in(&tl, Phase::Forward, &[Category::Communication]),
        2 * ROOT + 2 * BLOCK + 2 * (BLOCK / 4)
    );
    // The reduced gradient shard goes to the host: each fp32 grad shard is freed in the
    // backward that made it.
    for g in named(&tl, "fsdp", "grad_shard") {
        assert_eq!(freed_in(&tl, g), Some(Phase::Backward));
    }
    // The host: each fp32 shard (4 · 49216 + 40224 = 237088 elements), its pinned
    // `_cpu_grad` and AdamW's two moments, and a 4-byte step per flat parameter.
    assert_eq!(tl.host_bytes, 4 * 4 * (4 * (BLOCK / 4) + ROOT / 4) + 5 * 4);
}

/// `check` says how much CPU RAM the offloaded state takes, apart from the GPU figures.
#[test]
fn check_reports_host_memory_beside_the_gpu_figures() {
    let args = |extra: &'static [&'static str]| -> Vec<&'static str> {
        let mut a = vec![
            "check",
            "--model",
            "gpt2",
            "--world_size=2",
            "--parallelism=zero2",
            "--gradient_accumulation_steps=2",
        ];
        a.extend_from_slice(extra);
        a
    };
    let (code, out, err) = crate::support::cli::vramplan(&args(&["--offload_optimizer=True"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Host memory: "), "{out}");
    let (_, out, _) = crate::support::cli::vramplan(&args(&[]));
    assert!(!out.contains("Host memory"), "{out}");
    let (_, json, _) =
        crate::support::cli::vramplan(&args(&["--offload_optimizer=True", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["ranks"]["host_bytes"].as_u64().unwrap() > 0, "{json}");
}
