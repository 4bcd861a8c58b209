//! Issue #12 item 6, the router's auxiliary loss (`output_router_logits = True`): what
//! transformers 5.25.0's `load_balancing_loss_func` keeps (models/mixtral/modeling_mixtral.py,
//! called by `MixtralForCausalLM.forward`), counted by hand on the small Mixtral of
//! models_moe.rs (2 layers, E = 4 experts, k = 2, N = 2 × 16 = 32 tokens) and checked against
//! the real model on CPU (scripts/moe-truth/mixtral_aux_loss.out: per layer
//! `SoftmaxBackward0: result=(32, 4) bfloat16` in pure bf16, a `_to_copy` (32, 4) bf16 and
//! `_softmax_backward_data` (32, 4) bf16 in its backward); the key read from config.json and
//! from axolotl's `model_config`.

use crate::models_moe::SMALL_MIXTRAL;
use crate::support::cli::{explain, forward_end, vramplan};
use crate::support::hf::nothing_left;
use crate::support::hostile::temp;

const AUX: &str = "--output_router_logits=True";

/// The forward's end minus the same run's without the auxiliary loss.
fn saved_by_aux(extra: &[&str]) -> u64 {
    let with = forward_end(SMALL_MIXTRAL, &[extra, &[AUX]].concat());
    with - forward_end(SMALL_MIXTRAL, extra)
}

#[test]
fn aux_loss_keeps_each_layers_softmax_and_tokens_per_expert() {
    // Autocast: softmax is an fp32_set_opt_dtype op, so each layer's SoftmaxBackward0 keeps
    // (N, E) fp32 = 32·4·4 = 512 bytes; MulBackward0 of `tokens_per_expert *
    // router_prob_per_expert.unsqueeze(0)` keeps tokens_per_expert, (E,) fp32 = 16 bytes in
    // one 512-byte block. 2 layers.
    assert_eq!(saved_by_aux(&[]), 2 * 32 * 4 * 4 + 512);
    // Pure bf16: the softmax's result is bf16, 32·4·2 = 256 bytes, a 512-byte block each.
    assert_eq!(saved_by_aux(&["--precision_mode=pure"]), 2 * 512 + 512);
    // Checkpointed without reentrancy (5.x's default), torch runs the block's forward with
    // autograd on: the logits require grad and the loss's graph is the same.
    let non_reentrant = ["--activation_checkpointing=True", "--use_reentrant=False"];
    assert_eq!(saved_by_aux(&non_reentrant), 2 * 32 * 4 * 4 + 512);
    // Reentrant, the block ran under no_grad: the logits need no gradient, nothing is kept.
    let reentrant = ["--activation_checkpointing=True", "--use_reentrant=True"];
    assert_eq!(saved_by_aux(&reentrant), 0);
}

#[test]
fn aux_loss_tensors_have_the_shapes_and_lifetimes_of_the_source() {
    let life = "4 x born in forward, freed in backward";
    let (first, l) = explain("router_aux_loss.routing_weights", SMALL_MIXTRAL, &[AUX]);
    assert_eq!(
        first,
        "router_aux_loss.routing_weights (32, 4) fp32 = 512 bytes"
    );
    assert_eq!(l, life);
    let pure = [AUX, "--precision_mode=pure"];
    let (first, l) = explain("router_aux_loss.routing_weights", SMALL_MIXTRAL, &pure);
    assert_eq!(
        first,
        "router_aux_loss.routing_weights (32, 4) bf16 = 256 bytes"
    );
    assert_eq!(l, life);
    // topk's indices (N, k) int64 = 32·2·8: a local until the loop rebinds it.
    let (first, l) = explain("router_aux_loss.selected_experts", SMALL_MIXTRAL, &[AUX]);
    assert_eq!(
        first,
        "router_aux_loss.selected_experts (32, 2) int64 = 512 bytes"
    );
    assert_eq!(l, "4 x born in forward, freed in forward");
    // The backward: ToCopyBackward0's (N, E) bf16 then `_softmax_backward_data`'s (N, E)
    // bf16, per layer (2 steps × 2 layers × 2).
    let (first, l) = explain("router_aux_loss.routing_weights.grad", SMALL_MIXTRAL, &pure);
    assert_eq!(
        first,
        "router_aux_loss.routing_weights.grad (32, 4) bf16 = 256 bytes"
    );
    assert_eq!(l, "8 x born in backward, freed in backward");
}

#[test]
fn aux_loss_leaves_nothing_alive_after_the_backward() {
    let knobs: &[&[&str]] = &[
        &[AUX],
        &[AUX, "--precision_mode=pure"],
        &[
            AUX,
            "--activation_checkpointing=True",
            "--use_reentrant=False",
        ],
        &[
            AUX,
            "--activation_checkpointing=True",
            "--use_reentrant=True",
        ],
        &[AUX, "--lora_rank=4", "--activation_checkpointing=True"],
        &[AUX, "--world_size=2", "--parallelism=fsdp"],
        &[AUX, "--world_size=2", "--parallelism=zero3"],
        &[AUX, "--flash=False", "--loss=chunked"],
    ];
    nothing_left("mixtral-8x7b", &SMALL_MIXTRAL[2..], knobs);
}

#[test]
fn output_router_logits_is_read_from_config_json_and_axolotl() {
    let text = std::fs::read_to_string("fixtures/hf/mixtral-8x7b.json").unwrap();
    let on = text.replace(
        "\"output_router_logits\": false",
        "\"output_router_logits\": true",
    );
    assert_ne!(on, text);
    let path = temp("moe-aux-config.json", on.as_bytes());
    let args = ["--batch_size=1", "--block_size=64"];
    let name = "router_aux_loss.routing_weights";
    // (64 tokens, 8 experts) fp32 = 2048 bytes.
    let (code, out, err) =
        vramplan(&[&["explain", name, "--hf-config", &path][..], &args].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().next(),
        Some("router_aux_loss.routing_weights (64, 8) fp32 = 2.00 KiB")
    );
    // axolotl's Mixtral example: `model_config: output_router_logits: true` (the alias of
    // overrides_of_model_config).
    for key in ["model_config", "overrides_of_model_config"] {
        let yml = format!(
            "base_model: mistralai/Mixtral-8x7B-v0.1\nsequence_len: 64\nmicro_batch_size: 1\nbf16: true\n{key}:\n  output_router_logits: true\n"
        );
        let path = temp(&format!("moe-aux-{key}.yml"), yml.as_bytes());
        let (code, out, err) = vramplan(&["explain", name, &path]);
        assert_eq!(code, 0, "{key}: {err}");
        assert_eq!(
            out.lines().next(),
            Some("router_aux_loss.routing_weights (64, 8) fp32 = 2.00 KiB")
        );
    }
    // Another entry of the block is refused by name, and the key off an MoE model.
    let yml = "base_model: mistralai/Mixtral-8x7B-v0.1\nmodel_config:\n  rope_theta: 10\n";
    let path = temp("moe-aux-other.yml", yml.as_bytes());
    let (code, _, err) = vramplan(&["check", &path]);
    assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");
    assert!(
        err.contains("model_config.rope_theta: only output_router_logits"),
        "{err}"
    );
    let (code, _, err) = vramplan(&["check", "--model", "llama-3.2-1b", AUX]);
    assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");
    assert!(
        err.contains("output_router_logits = True: expected False"),
        "{err}"
    );
}

/// QLoRA on an MoE model (transformers 5.25 integrations/bitsandbytes.py
/// `replace_with_bnb_linear`: only `type(module) is nn.Linear` becomes a Linear4bit; PEFT's
/// `prepare_model_for_kbit_training` casts every other bf16 parameter to fp32): on the small
/// Mixtral the router's weight and the 3-D experts stay unquantized and become fp32, frozen;
/// attention's Linear weights are packed 4-bit.
#[test]
fn qlora_quantizes_the_linear_layers_and_upcasts_the_experts() {
    let qlora = ["--lora_rank=4", "--quantization=nf4"];
    let line = |name: &str, extra: &[&str]| explain(name, SMALL_MIXTRAL, extra).0;
    // gate_up_proj (E, 2I, C) = 4·192·64 = 49,152 elements × 4 bytes = 196,608 = 192 KiB;
    // down_proj (E, C, I) = 4·64·96 × 4 = 98,304; the router (E, C) = 4·64 × 4 = 1,024.
    for (name, want) in [
        (
            "layer0.mlp.experts.gate_up_proj",
            "(4, 192, 64) fp32 = 192.00 KiB",
        ),
        (
            "layer1.mlp.experts.down_proj",
            "(4, 64, 96) fp32 = 96.00 KiB",
        ),
        ("layer0.mlp.gate.weight", "(4, 64) fp32 = 1.00 KiB"),
    ] {
        assert_eq!(line(name, &qlora), format!("{name} {want}"));
    }
    // Plain LoRA keeps them in the load dtype: half those bytes.
    assert_eq!(
        line("layer0.mlp.experts.gate_up_proj", &["--lora_rank=4"]),
        "layer0.mlp.experts.gate_up_proj (4, 192, 64) bf16 = 96.00 KiB"
    );
    // q_proj (64, 64) is an nn.Linear: 4,096 4-bit values packed two a byte, (2048, 1) uint8.
    assert_eq!(
        line("layer0.self_attn.q_proj.weight", &qlora),
        "layer0.self_attn.q_proj.weight (2048, 1) uint8 = 2.00 KiB"
    );
    // Nothing of the experts is trainable: the (E, 2I, C) weight gradient GroupedMmBackward0
    // makes under full fine-tuning (a gradient) is never made.
    let gradients = |extra: &[&str]| {
        let (code, out, err) =
            vramplan(&[&["explain", "gradients"][..], SMALL_MIXTRAL, extra].concat());
        assert_eq!(code, 0, "{err}");
        out.contains("(4, 192, 64)")
    };
    assert!(gradients(&[]));
    assert!(!gradients(&qlora));
    nothing_left(
        "mixtral-8x7b",
        &SMALL_MIXTRAL[2..],
        &[&qlora, &[&qlora[..], &[AUX]].concat()],
    );
}
