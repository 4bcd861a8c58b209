//! Issue #12 item 4: Liger-Kernel's fused linear cross-entropy (`loss = 'liger'`, the Trainer's
//! `use_liger_kernel`). Bytes counted by hand from liger_kernel/ops/
//! fused_linear_cross_entropy.py `fused_linear_cross_entropy_forward`: the gradients are
//! computed chunk by chunk in the forward and kept until the backward hands them on.

use crate::support::cli::json;
use crate::support::hf::{preset, SMALL_LLAMA};
use crate::support::hostile::{refused, temp};
use crate::support::sim::run;
use crate::support::tiny_gpt::{freed_in, tiny};
use vramplan::config::TrainConfig;
use vramplan::sim::timeline::{Category, Phase, Timeline};

/// The small Llama (B 2 × T 32, hidden 64, vocabulary 100, tied embeddings), one layer,
/// bf16 autocast over fp32 weights, with the Liger loss.
fn llama(extra: &[&str]) -> TrainConfig {
    let mut o = SMALL_LLAMA.to_vec();
    o.extend_from_slice(&["--n_layer=1", "--dtype=bfloat16", "--loss=liger"]);
    o.extend_from_slice(extra);
    preset("llama-3.2-1b", &o)
}

/// (bytes, born in, freed in) of every tensor called `module.what`.
fn named(tl: &Timeline, full: &str) -> Vec<(u64, Phase, Option<Phase>)> {
    tl.tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.name.to_string() == full)
        .map(|(i, t)| (t.bytes, t.phase, freed_in(tl, i)))
        .collect()
}

#[test]
fn the_gradients_are_made_in_the_forward_and_kept_for_the_backward() {
    let tl = run(&llama(&[]));
    // grad_input: zeros_like(_input), the final norm's output, fp32 (the residual stream
    // over fp32 weights): 2 × 32 × 64 × 4.
    let grad_input = named(&tl, "loss.liger.grad_input");
    assert!(!grad_input.is_empty());
    for (bytes, born, freed) in &grad_input {
        assert_eq!(*bytes, 2 * 32 * 64 * 4);
        if *born == Phase::Forward {
            assert_eq!(*freed, Some(Phase::Backward));
        }
    }
    // grad_weight: zeros_like(lm_head.weight), the fp32 master of the tied (100, 64) weight,
    // made in every training forward (AccumulateGrad then takes it as, or into, `.grad`).
    let forwards = grad_input.iter().filter(|g| g.1 == Phase::Forward).count();
    assert!(forwards > 0);
    let weight_grads = tl
        .tensors
        .iter()
        .filter(|t| t.phase == Phase::Forward && t.category == Category::Gradients)
        .filter(|t| t.bytes == 100 * 64 * 4)
        .count();
    assert_eq!(weight_grads, forwards);
    // No (B·T, V) logits at all: chunks of min(next_pow2(cdiv(64, cdiv(100, 64))), 64) = 32
    // rows, in bf16 (autocast), two per forward.
    assert!(named(&tl, "lm_head.logits").is_empty());
    let chunks = named(&tl, "lm_head.logits_chunk");
    let per_forward = chunks.iter().filter(|c| c.1 == Phase::Forward).count();
    assert_eq!(per_forward, 2 * forwards);
    assert!(chunks.iter().all(|c| c.0 == 32 * 100 * 2));
}

#[test]
fn a_frozen_lm_head_gets_no_weight_gradient() {
    // LoRA: lm_head.weight does not require grad, so `grad_weight` is None.
    let tl = run(&llama(&["--lora_rank=8"]));
    assert!(named(&tl, "loss.liger.grad_weight").is_empty());
    assert!(!tl
        .tensors
        .iter()
        .any(|t| t.category == Category::Gradients && t.bytes == 100 * 64 * 4));
    assert!(!named(&tl, "loss.liger.grad_input").is_empty());
}

#[test]
fn nanogpts_gpt_can_call_the_loss_module_itself() {
    // tiny GPT: batch 4 × 256, n_embd 128, vocab 1000: chunks of
    // min(next_pow2(cdiv(1024, cdiv(1000, 128))), 1024) = 128 rows.
    let c = tiny(1, &["--loss=liger", "--dtype=bfloat16"]);
    let tl = run(&c);
    assert!(named(&tl, "lm_head.logits").is_empty());
    let chunks = named(&tl, "lm_head.logits_chunk");
    assert!(!chunks.is_empty());
    assert!(chunks.iter().all(|c| c.0 == 128 * 1000 * 2));
    // wte's fp32 gradient (1000, 128), made in the forward.
    assert!(tl.tensors.iter().any(|t| t.phase == Phase::Forward
        && t.category == Category::Gradients
        && t.bytes == 1000 * 128 * 4));
}

#[test]
fn the_trainers_flag_selects_it_and_models_liger_does_not_patch_are_refused() {
    let args = temp(
        "liger_args.json",
        br#"{"per_device_train_batch_size": 1, "bf16": true, "use_liger_kernel": true}"#,
    );
    let (code, v) = json(&["check", &args, "--model", "llama-3.2-1b", "--json"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["config"]["loss"], "liger");
    refused(
        &["check", "--model", "pythia-1b", "--", "--loss=liger"],
        &["loss", "gpt_neox"],
    );
}
