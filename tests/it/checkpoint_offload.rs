//! Issue #12 item 3, the offloaded checkpoints: `checkpoint_policy = 'offload'`, axolotl's
//! `gradient_checkpointing: offload` (axolotl/utils/gradient_checkpointing/offload_cpu.py,
//! `CPU_Offloaded_Gradient_Checkpointer`, Unsloth's). Its forward saves only
//! `hidden_states.to("cpu")`; its backward copies it back (`.to("cuda")`), recomputes the layer
//! and runs `torch.autograd.backward(output, dY)` holding both, as a reentrant checkpoint does.

use crate::support::cli::json;
use crate::support::hf::{preset, SMALL_LLAMA};
use crate::support::hostile::temp;
use crate::support::sim::run;
use crate::support::tiny_gpt::{live_before, peak_in};
use vramplan::config::TrainConfig;
use vramplan::sim::timeline::{Category, Phase};

/// One layer's input: the residual stream, fp32 under autocast over fp32 weights, (2, 32, 64).
const LAYER_INPUT: u64 = 2 * 32 * 64 * 4;

fn llama(extra: &[&str]) -> TrainConfig {
    let mut o = SMALL_LLAMA.to_vec();
    o.extend_from_slice(&[
        "--n_layer=2",
        "--dtype=bfloat16",
        "--activation_checkpointing=True",
    ]);
    o.extend_from_slice(extra);
    preset("llama-3.2-1b", &o)
}

#[test]
fn the_layers_inputs_leave_the_gpu_for_host_memory() {
    // A checkpoint keeps its input on the GPU until its backward; the offloading one keeps a
    // host copy instead, so at the end of the forward both layers' inputs are gone from the
    // GPU (the embedding output and layer 0's output have no other holder).
    let full = run(&llama(&["--use_reentrant=True"]));
    let offload = run(&llama(&["--checkpoint_policy=offload"]));
    let at_backward = |tl| live_before(tl, Phase::Backward, &Category::ALL);
    assert_eq!(at_backward(&full) - at_backward(&offload), 2 * LAYER_INPUT);
    // Both layers' copies are in host memory at once, and only once however many
    // micro-steps run: each backward takes its copies back.
    assert_eq!(offload.host_bytes, 2 * LAYER_INPUT);
    assert_eq!(full.host_bytes, 0);
}

#[test]
fn the_recomputation_runs_on_a_copy_back_and_holds_like_a_reentrant_checkpoint() {
    let offload = run(&llama(&["--checkpoint_policy=offload"]));
    let copies = offload
        .tensors
        .iter()
        .filter(|t| t.phase == Phase::Backward && t.name.what == "input_from_host")
        .count();
    let recomputed = offload
        .tensors
        .iter()
        .filter(|t| t.phase == Phase::Backward && t.name.to_string().ends_with("k_proj.out"))
        .count();
    assert!(recomputed > 0);
    assert_eq!(copies, recomputed, "one copy back per layer recomputed");
    // In the backward the copy stands where the checkpoint's own input stood, and the output
    // and incoming gradient are held as under use_reentrant=True: the same backward peak.
    let full = run(&llama(&["--use_reentrant=True"]));
    let peak = |tl| peak_in(tl, Phase::Backward, &Category::ALL);
    // Layer 1 (recomputed first) has its copy back while layer 0's input is still held by the
    // plain checkpoint, not by the offloading one: one layer input less at the peak.
    assert_eq!(peak(&full) - peak(&offload), LAYER_INPUT);
}

#[test]
fn the_report_says_what_stays_in_host_memory() {
    let (code, v) = json(&[
        "check",
        "--model",
        "llama-3.2-1b",
        "--json",
        "--",
        "--batch_size=2",
        "--block_size=32",
        "--vocab_size=100",
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--intermediate_size=160",
        "--n_layer=2",
        "--dtype=bfloat16",
        "--activation_checkpointing=True",
        "--checkpoint_policy=offload",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["host_bytes"].as_u64(), Some(2 * LAYER_INPUT));
    let source = v["decisions"]["reentrant_checkpoint"]["source"]
        .as_str()
        .unwrap();
    assert!(source.contains("offload"), "{source}");
}

#[test]
fn axolotls_offload_setting_selects_it() {
    let yml = temp(
        "offload.yml",
        b"base_model: meta-llama/Llama-3.2-1B\nsequence_len: 512\nmicro_batch_size: 1\ngradient_checkpointing: offload\nbf16: true\n",
    );
    let (code, v) = json(&["check", &yml, "--json"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["config"]["activation_checkpointing"], true);
    assert_eq!(v["config"]["checkpoint_policy"], "offload");
    assert!(v["host_bytes"].as_u64().unwrap() > 0);
    let disk = temp(
        "offload_disk.yml",
        b"base_model: meta-llama/Llama-3.2-1B\ngradient_checkpointing: offload_disk\n",
    );
    crate::support::hostile::refused(&["check", &disk], &["gradient_checkpointing", "disk"]);
}
