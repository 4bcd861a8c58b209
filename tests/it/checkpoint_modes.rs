//! Issue #12 item 3: reentrant and non-reentrant activation checkpointing, and whose default
//! a config runs with. Bytes counted by hand from torch/utils/checkpoint.py.

use crate::support::cli::json;
use crate::support::hf::{preset, SMALL_LLAMA};
use crate::support::sim::run;
use crate::support::tiny_gpt::peak_in;
use vramplan::sim::timeline::{Category, Phase};

fn backward_peak(extra: &[&str]) -> u64 {
    let mut o = SMALL_LLAMA.to_vec();
    o.extend_from_slice(&[
        "--n_layer=2",
        "--dtype=bfloat16",
        "--compile=False",
        "--activation_checkpointing=True",
    ]);
    o.extend_from_slice(extra);
    peak_in(
        &run(&preset("llama-3.2-1b", &o)),
        Phase::Backward,
        &Category::ALL,
    )
}

#[test]
fn a_reentrant_checkpoint_holds_its_recomputed_output_through_its_backward() {
    // CheckpointFunction.backward: `outputs = ctx.run_function(*detached_inputs)` stays a local
    // until `torch.autograd.backward(outputs_with_grad, args_with_grad)` returns. The layer's
    // output is the residual stream, fp32 under autocast over fp32 weights: (2, 32, 64) x 4.
    // The incoming gradient is alive in both modes at the peak: the residual add's backward
    // hands it on unchanged.
    let output = 2 * 32 * 64 * 4;
    assert_eq!(
        backward_peak(&["--use_reentrant=True"]) - backward_peak(&["--use_reentrant=False"]),
        output
    );
}

/// `check --json`'s decision about reentrancy for these arguments.
fn reentrant(args: &[&str]) -> (bool, String) {
    let (code, v) = json(&[&["check", "--json"], args].concat());
    assert_eq!(code, 0, "{args:?}");
    let d = &v["decisions"]["reentrant_checkpoint"];
    (
        d["value"].as_bool().unwrap(),
        d["source"].as_str().unwrap().to_string(),
    )
}

#[test]
fn each_framework_checkpoints_with_its_own_default() {
    let llama = ["--model", "llama-3.2-1b", "--activation_checkpointing=True"];
    // transformers 4.x: gradient_checkpointing_enable() passes {"use_reentrant": True}; 5.x False.
    let trainer = |v: &str| reentrant(&[&llama[..], &["--framework=hf-trainer", v]].concat()).0;
    assert!(trainer("--transformers_version=4.57"));
    assert!(!trainer("--transformers_version=5.0"));
    assert!(
        trainer("--transformers_version=None"),
        "unknown release: the 4.x default"
    );
    // nanoGPT's change as vramplan prints it says use_reentrant=False.
    let (r, source) = reentrant(&["--activation_checkpointing=True"]);
    assert!(!r, "{source}");
    // As written wins, from a TrainingArguments file too.
    assert!(
        !reentrant(
            &[
                &llama[..],
                &["--framework=hf-trainer", "--use_reentrant=False"]
            ]
            .concat()
        )
        .0
    );
    let (r, source) = reentrant(&["fixtures/frameworks/trainer_lora.json"]);
    assert!(!r && source.contains("as written"), "{source}");
}

/// A mixture-of-experts model runs on transformers 5.x only (4.x's expert loop is refused), so
/// without a transformers_version its checkpointing takes 5.x's default: non-reentrant.
#[test]
fn a_moe_models_unnamed_release_is_a_5x_one() {
    let (r, source) = reentrant(&[
        "--model",
        "qwen3-30b-a3b",
        "--",
        "--activation_checkpointing=True",
        "--n_layer=1",
        "--block_size=64",
    ]);
    assert!(!r, "{source}");
    assert!(source.contains("5.x"), "{source}");
    let (r, _) = reentrant(&[
        "--model",
        "llama-3.2-1b",
        "--",
        "--activation_checkpointing=True",
    ]);
    assert!(
        r,
        "a dense model's unnamed release takes 4.x's default, the one that holds more"
    );
}
