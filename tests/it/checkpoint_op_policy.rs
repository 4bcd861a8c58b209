//! Issue #12 item 3: torchtitan's per-op selective activation checkpointing
//! (`checkpoint_policy = 'op'`). Bytes counted by hand from the policy in
//! torchtitan/distributed/activation_checkpoint.py (`SelectiveAC._wrap_block`): per block, the
//! odd-numbered `aten.mm` outputs and every addmm/bmm/SDPA output are kept from the forward
//! until the block's recomputation; everything else is recomputed.

use crate::support::hf::{preset, SMALL_LLAMA};
use crate::support::hostile::refused;
use crate::support::sim::run;
use crate::support::tiny_gpt::{live_before, tiny};
use vramplan::config::TrainConfig;
use vramplan::sim::timeline::{Category, Phase, Timeline};

/// The small Llama, 2 layers, bf16 autocast (flash attention), checkpointing with `policy`.
fn llama(policy: &str) -> TrainConfig {
    let mut o = SMALL_LLAMA.to_vec();
    let policy = format!("--checkpoint_policy={policy}");
    o.extend_from_slice(&[
        "--n_layer=2",
        "--dtype=bfloat16",
        "--compile=False",
        "--activation_checkpointing=True",
        &policy,
    ]);
    preset("llama-3.2-1b", &o)
}

/// Everything alive when the backward starts.
fn at_backward(tl: &Timeline) -> u64 {
    live_before(tl, Phase::Backward, &Category::ALL)
}

/// Names of the forward's tensors that live on into the backward, for one layer.
fn kept_names(tl: &Timeline, layer: u32) -> Vec<String> {
    let prefix = format!("layer{layer}.");
    let mut names: Vec<String> = tl
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.phase == Phase::Forward)
        .filter(|(i, _)| {
            tl.events
                .iter()
                .any(|e| e.tensor as usize == *i && e.phase == Phase::Backward)
        })
        .map(|(_, t)| t.name.to_string())
        .filter(|n| n.starts_with(&prefix))
        .map(|n| n[prefix.len()..].to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_llama_block_keeps_every_other_matmul_and_the_attention_kernel() {
    // The block's matmuls in forward order: q_proj (1, kept), k_proj (2), v_proj (3, kept),
    // o_proj (4), gate_proj (5, kept), up_proj (6), down_proj (7, kept). All are mm (no bias),
    // bf16 under autocast. Batch 2 × 32 tokens:
    let q = 2 * 32 * 64 * 2; // 4 heads × 16
    let v = 2 * 32 * 32 * 2; // 2 key/value heads × 16
    let gate = 2 * 32 * 160 * 2;
    let down = 2 * 32 * 64 * 2;
    // _scaled_dot_product_flash_attention: out (bf16), logsumexp (B, nh, T) fp32, Philox seed
    // uint64[2] and offset uint64[].
    let sdpa = 2 * 32 * 64 * 2 + 2 * 4 * 32 * 4 + 16 + 8;
    let per_layer = q + v + gate + down + sdpa;
    let full = at_backward(&run(&llama("full")));
    let op = at_backward(&run(&llama("op")));
    assert_eq!(op - full, 2 * per_layer);
}

#[test]
fn the_matmul_count_starts_again_in_every_block() {
    let tl = run(&llama("op"));
    let layer0 = kept_names(&tl, 0);
    assert_eq!(layer0, kept_names(&tl, 1));
    for kept in ["q_proj.out", "v_proj.out", "gate_proj.out", "down_proj.out"] {
        assert!(
            layer0.iter().any(|n| n.ends_with(kept)),
            "{kept} in {layer0:?}"
        );
    }
    for recomputed in ["k_proj.out", "o_proj.out", "up_proj.out"] {
        assert!(
            !layer0.iter().any(|n| n.ends_with(recomputed)),
            "{recomputed} in {layer0:?}"
        );
    }
}

#[test]
fn full_checkpointing_keeps_nothing_of_a_block_but_its_input() {
    // The default policy: only the checkpoint's own references (the block's input and the
    // shared tables) reach the backward, none of the block's activations.
    let tl = run(&llama("full"));
    for l in 0..2 {
        let kept = kept_names(&tl, l);
        assert!(
            kept.iter()
                .all(|n| !n.contains("proj") && !n.contains("sdpa")),
            "{kept:?}"
        );
    }
}

#[test]
fn gpt2_linears_with_a_bias_are_addmm_and_always_kept() {
    // nanoGPT's tiny GPT (batch 4 × 256, n_embd 128, 4 heads), bf16 autocast, flash SDPA.
    let gpt = |bias: &str, policy: &str| {
        let b = format!("--bias={bias}");
        let p = format!("--checkpoint_policy={policy}");
        let o = [
            "--dtype=bfloat16",
            "--activation_checkpointing=True",
            &b,
            &p,
        ];
        at_backward(&run(&tiny(1, &o)))
    };
    let tokens = 4 * 256;
    let c_attn = tokens * 384 * 2;
    let c_fc = tokens * 512 * 2;
    let proj = tokens * 128 * 2; // attn.c_proj and mlp.c_proj
    let sdpa = tokens * 128 * 2 + 4 * 4 * 256 * 4 + 16 + 8;
    // Without a bias each Linear is mm: c_attn (1, kept), attn.c_proj (2), c_fc (3, kept),
    // mlp.c_proj (4).
    let no_bias = c_attn + c_fc + sdpa;
    assert_eq!(gpt("False", "op") - gpt("False", "full"), 2 * no_bias);
    // With a bias each is addmm, a compute-intensive op the policy always keeps.
    let bias = c_attn + c_fc + 2 * proj + sdpa;
    assert_eq!(gpt("True", "op") - gpt("True", "full"), 2 * bias);
}

#[test]
fn the_recomputation_takes_the_kept_outputs_instead_of_making_them_again() {
    // Under 'op' the backward allocates no q_proj/v_proj/gate_proj/down_proj outputs or SDPA
    // outputs of its own; under 'full' it makes each in every recomputation.
    let made_in_backward = |policy: &str, what: &str| {
        run(&llama(policy))
            .tensors
            .iter()
            .filter(|t| t.phase == Phase::Backward && t.name.to_string().ends_with(what))
            .count()
    };
    // Once per layer and micro-step in the full recomputation.
    let recomputations = made_in_backward("full", "k_proj.out");
    assert!(recomputations > 0 && recomputations % 2 == 0);
    for what in ["q_proj.out", "gate_proj.out", "sdpa.out"] {
        assert_eq!(made_in_backward("full", what), recomputations, "{what}");
        assert_eq!(made_in_backward("op", what), 0, "{what}");
    }
    assert_eq!(made_in_backward("op", "k_proj.out"), recomputations);
}

#[test]
fn what_the_policy_is_not_derived_for_is_refused() {
    let base = [
        "check",
        "--model",
        "llama-3.2-1b",
        "--",
        "--activation_checkpointing=True",
        "--checkpoint_policy=op",
    ];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    refused(
        &with(&base, &["--use_reentrant=True"]),
        &["checkpoint_policy", "use_reentrant"],
    );
    refused(
        &with(&base, &["--quantization=nf4", "--lora_rank=16"]),
        &["checkpoint_policy", "quantized"],
    );
    refused(
        &[
            "check",
            "--model",
            "mixtral-8x7b",
            "--",
            "--activation_checkpointing=True",
            "--checkpoint_policy=op",
        ],
        &["checkpoint_policy", "mixture-of-experts"],
    );
    refused(
        &with(&base, &["--checkpoint_policy=selective"]),
        &["checkpoint_policy", "'op'"],
    );
}

#[test]
fn the_kept_outputs_are_what_torch_keeps_for_a_transformers_llama_layer() {
    // fixtures/sac-llama-kept.json: scripts/sac-truth/llama_sac.py ran transformers'
    // LlamaForCausalLM (the same small shape, 2 layers) under torch.utils.checkpoint with the
    // policy and recorded every output the policy kept. On CPU the flash kernel is
    // _scaled_dot_product_flash_attention_for_cpu, which has no Philox seed/offset: CUDA's
    // adds uint64[2] and uint64[] (16 + 8 bytes) per layer.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/sac-llama-kept.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let layers = v["kept"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let mut torch = 0;
    for layer in layers {
        for op in layer.as_array().unwrap() {
            for out in op["outputs"].as_array().unwrap() {
                torch += out["bytes"].as_u64().unwrap();
            }
        }
        torch += 16 + 8;
    }
    let full = at_backward(&run(&llama("full")));
    let op = at_backward(&run(&llama("op")));
    assert_eq!(op - full, torch);
}
