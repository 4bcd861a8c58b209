//! One DDP rank, counted by hand on the tiny GPT-2 (tests/support): nanoGPT's share of the
//! accumulation, the Reducer's buckets, gradient_as_bucket_view, `check`'s per-rank header,
//! and no leaks under any parallelism.

use crate::support::cli::{json, vramplan};
use crate::support::sim::run;
use crate::support::tiny_gpt::*;
use vramplan::sim::parallel::bucket_assignment;
use vramplan::sim::{Category, DType, Phase};

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

#[test]
fn check_says_whose_memory_it_shows() {
    let (_, text, _) = vramplan(&[
        "check",
        "--world_size=8",
        "--parallelism=zero2",
        "--compile=False",
    ]);
    // 40 // 8 = 5 micro-steps per rank.
    assert!(
        text.contains("Per rank (rank 0 of 8, zero2): 5 micro-steps per rank per step"),
        "{text}"
    );
    let (_, v) = json(&["check", "--world_size=4", "--parallelism=fsdp", "--json"]);
    assert_eq!(v["ranks"]["world_size"], 4);
    assert_eq!(v["ranks"]["parallelism"], "fsdp");
    assert_eq!(v["ranks"]["micro_steps_per_rank"], 10);
    assert!(v["categories"]["communication"].as_u64().unwrap() > 0);
    let nccl = |v: &serde_json::Value| {
        v["warnings"].as_array().unwrap().iter().any(|w| {
            w.as_str()
                .unwrap()
                .starts_with("NCCL's own buffers are not in these figures")
        })
    };
    assert!(nccl(&v), "{}", v["warnings"]);
    // One GPU: no ranks object, no header line, no communication category, no NCCL.
    let (_, v) = json(&["check", "--json"]);
    assert!(v["ranks"].is_null());
    assert_eq!(v["categories"]["communication"], 0);
    assert!(!nccl(&v));
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
