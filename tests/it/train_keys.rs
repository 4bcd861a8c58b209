//! train.py keys that change what nanoGPT runs change the simulation, seen from the command
//! line: eval_only (no training step), init_from='resume' (the checkpoint stays on the GPU),
//! max_iters and eval_interval (whether an estimate_loss() follows training).

use crate::support::cli::{json, vramplan};
use serde_json::Value;

/// The phases `check --json` reports, in order.
fn phases(v: &Value) -> Vec<String> {
    v["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// The allocated peak of one phase in `check --json`.
fn allocated(v: &Value, phase: &str) -> u64 {
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == phase)
        .unwrap_or_else(|| panic!("no phase {phase}"))["peak_allocated_bytes"]
        .as_u64()
        .unwrap()
}

/// nanoGPT's own config/eval_gpt2.py sets eval_only = True: train.py runs estimate_loss()
/// once and breaks (`if iter_num == 0 and eval_only: break`), so there is no backward to
/// overflow. An RTX 3060 holds that evaluation.
#[test]
fn eval_only_config_runs_one_evaluation_and_fits() {
    let (code, out, err) =
        vramplan(&["check", "fixtures/configs/eval_gpt2.py", "--gpu", "rtx3060"]);
    assert_eq!(code, 0, "{out}{err}");
    let verdict = out
        .lines()
        .find(|l| l.starts_with("FITS") || l.starts_with("DOES NOT FIT"))
        .unwrap_or_else(|| panic!("no verdict: {out}"));
    assert!(
        verdict.starts_with("FITS on NVIDIA GeForce RTX 3060"),
        "{verdict}"
    );
    let (_, v) = json(&[
        "check",
        "--json",
        "fixtures/configs/eval_gpt2.py",
        "--gpu",
        "rtx3060",
    ]);
    assert_eq!(phases(&v), ["init", "eval"]);
}

/// A resumed run starts at the checkpoint's iter_num (> 0), so eval_only does not stop it.
#[test]
fn eval_only_does_not_stop_a_resumed_run() {
    let (_, v) = json(&[
        "check",
        "--json",
        "--gpu",
        "a100-40gb",
        "--eval_only=True",
        "--init_from=resume",
    ]);
    assert!(phases(&v).contains(&"backward".to_string()), "{v}");
}

/// The later estimate_loss() runs only when a multiple of eval_interval lies in 1..=max_iters.
#[test]
fn eval_interval_past_max_iters_means_no_later_eval() {
    let run = |max_iters: &str| {
        let (_, v) = json(&[
            "check",
            "--json",
            "--gpu",
            "a100-40gb",
            "--eval_interval=200",
            max_iters,
        ]);
        phases(&v)
    };
    let short = run("--max_iters=199");
    assert!(short.contains(&"optimizer".to_string()), "{short:?}");
    assert!(!short.contains(&"eval_after_step".to_string()), "{short:?}");
    assert!(run("--max_iters=200").contains(&"eval_after_step".to_string()));
}

/// The tiny GPT's tensors, counted by hand: wte (vocab x C), wpe (block x C), ln_1, c_attn
/// (3C x C), attn c_proj (C x C), ln_2, c_fc (4C x C), mlp c_proj (C x 4C), ln_f; no biases,
/// lm_head tied to wte. Element counts of each parameter tensor.
fn tiny_param_numels(c: u64, vocab: u64, block: u64) -> Vec<u64> {
    vec![
        vocab * c,
        block * c,
        c,
        3 * c * c,
        c * c,
        c,
        4 * c * c,
        4 * c * c,
        c,
    ]
}

/// The caching allocator hands out blocks in multiples of 512 bytes.
fn block(bytes: u64) -> u64 {
    bytes.div_ceil(512) * 512
}

/// init_from='resume': torch.load(ckpt_path, map_location=device) puts the saved fp32 weights
/// and AdamW's state (step, exp_avg, exp_avg_sq per tensor; fused AdamW keeps `step` on the
/// device) on the GPU before the model moves there; the global `state_dict` keeps the saved
/// weights for the whole run, the optimizer adopts the loaded state.
#[test]
fn resume_keeps_the_checkpoint_on_the_gpu() {
    let run = |init_from: &str| {
        let (code, v) = json(&[
            "check",
            "--json",
            "--gpu",
            "a100-40gb",
            "--compile=False",
            "--n_layer=1",
            "--n_head=2",
            "--n_embd=64",
            "--block_size=32",
            "--vocab_size=96",
            "--batch_size=2",
            init_from,
        ]);
        assert_eq!(code, 0, "{v}");
        v
    };
    let scratch = run("--init_from=scratch");
    let resume = run("--init_from=resume");
    let numels = tiny_param_numels(64, 96, 32);
    let weights: u64 = numels.iter().map(|&n| block(4 * n)).sum();
    // Adam state per tensor: a 0-dim fp32 step (one 512-byte block) and two fp32 moments.
    let adam: u64 = numels.iter().map(|&n| 512 + 2 * block(4 * n)).sum();
    assert_eq!(allocated(&scratch, "init"), weights);
    assert_eq!(allocated(&resume, "init"), weights + weights + adam);
    // After the first step both runs hold AdamW's state; the resumed one still holds the
    // checkpoint's weights.
    assert_eq!(
        allocated(&resume, "backward") - allocated(&scratch, "backward"),
        weights
    );
}

/// A Trainer evaluates only at its eval steps (`eval_strategy`, "no" by default), never before
/// training as nanoGPT's iteration 0 does: a model alone (the Trainer's defaults) has no eval
/// phase; the same run with nanoGPT's loop has one.
#[test]
fn a_trainer_run_does_not_evaluate_before_training() {
    let run = |extra: &[&str]| {
        let (code, v) = json(
            &[
                &[
                    "check",
                    "--json",
                    "--model",
                    "llama-3.2-1b",
                    "--batch_size=1",
                    "--block_size=128",
                ][..],
                extra,
            ]
            .concat(),
        );
        assert_eq!(code, 0, "{v}");
        phases(&v)
    };
    let trainer = run(&[]);
    assert!(
        !trainer.iter().any(|p| p.starts_with("eval")),
        "{trainer:?}"
    );
    assert!(trainer.iter().any(|p| p == "backward"), "{trainer:?}");
    let nanogpt = run(&["--framework=nanogpt"]);
    assert!(nanogpt.iter().any(|p| p == "eval"), "{nanogpt:?}");
}
