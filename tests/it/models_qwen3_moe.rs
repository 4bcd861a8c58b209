//! Issue #12 item 6, mixture-of-experts decoders: Qwen3-MoE (Qwen3MoeForCausalLM), where it
//! differs from Mixtral (models_moe.rs): experts of `moe_intermediate_size`, a router that
//! softmaxes the logits with `dtype=torch.float`, renormalises only with `norm_topk_prob` and
//! casts the weights back to the logits' dtype (transformers 5.25.0,
//! models/qwen3_moe/modeling_qwen3_moe.py `Qwen3MoeTopKRouter.forward`).

use crate::support::cli::{explain, explains_nothing, json};
use crate::support::hf::{assert_n_params_from_each, nothing_left};

const FORWARD: &str = "2 x born in forward, freed in forward";
const BACKWARD: &str = "2 x born in forward, freed in backward";

#[test]
fn qwen3_30b_a3b_counts_what_config_json_gives_by_hand() {
    // Qwen/Qwen3-30B-A3B config.json: hidden_size 2048, num_hidden_layers 48,
    // num_attention_heads 32, num_key_value_heads 4, head_dim 128, num_experts 128,
    // moe_intermediate_size 768, vocab_size 151936, untied. Per layer: q_proj 2048·4096,
    // k_proj and v_proj 2·2048·512, o_proj 4096·2048, q_norm and k_norm 2·128, two RMSNorms
    // 2·2048, the router (128, 2048), 128 experts of gate, up, down 3·2048·768.
    let attention = 2048 * 4096 + 2 * 2048 * 512 + 4096 * 2048 + 2 * 128;
    let layer: u64 = attention + 2 * 2048 + 128 * 2048 + 128 * 3 * 2048 * 768;
    assert_eq!(layer, 623_120_640);
    let want = 2 * 151_936 * 2048 + 48 * layer + 2048;
    // The model card: "Number of Parameters: 30.5B in total and 3.3B activated".
    assert_eq!(want, 30_532_122_624);
    assert_n_params_from_each(
        &[
            &["--model", "qwen3-30b-a3b"][..],
            &["--hf-config", "fixtures/hf/qwen3-30b-a3b.json"][..],
        ],
        want,
    );
}

/// A small Qwen3-MoE: SMALL_MIXTRAL's shapes with experts of moe_intermediate_size 48.
const SMALL_QWEN3_MOE: &[&str] = &[
    "--model",
    "qwen3-30b-a3b",
    "--n_layer=2",
    "--n_embd=64",
    "--n_head=2",
    "--n_kv_head=1",
    "--head_dim=32",
    "--intermediate_size=128",
    "--moe_intermediate_size=48",
    "--vocab_size=1000",
    "--num_experts=4",
    "--experts_per_token=2",
    "--batch_size=2",
    "--block_size=16",
    "--dtype=bfloat16",
];

fn qwen(name: &str, extra: &[&str]) -> (String, String) {
    explain(name, SMALL_QWEN3_MOE, extra)
}

fn absent(name: &str, extra: &[&str]) -> bool {
    explains_nothing(name, SMALL_QWEN3_MOE, extra)
}

#[test]
fn qwen3_moe_routes_in_the_logits_dtype_with_experts_of_moe_width() {
    // Qwen3MoeExperts: gate_up_proj (E, 2·moe_intermediate_size, C) = 4·96·64·4 bytes; the
    // S = 64 rows through it (64, 96) fp32.
    let cases = [
        (
            "layer0.mlp.experts.gate_up_proj",
            "(4, 96, 64) fp32 = 96.00 KiB",
        ),
        (
            "layer0.mlp.experts.gate_up_proj.out",
            "(64, 96) fp32 = 24.00 KiB",
        ),
        // fp32 experts' rows times bf16 routing weights promote to fp32.
        ("layer0.mlp.weighted_out", "(64, 64) fp32 = 16.00 KiB"),
    ];
    for (name, shape) in cases {
        assert_eq!(qwen(name, &[]).0, format!("{name} {shape}"));
    }
    // softmax(router_logits, dtype=torch.float): no fp32 copy of the logits.
    assert!(absent("layer0.mlp.router_logits.float", &[]));
    // router_top_value.to(router_logits.dtype): (N, k) bf16 = 32·2·2, the block's local; the
    // gathered (S,) bf16 copy is what the weighting multiply keeps.
    let to = "layer0.mlp.gate.top_k_weights.to";
    let want = (
        format!("{to} (32, 2) bf16 = 128 bytes"),
        FORWARD.to_string(),
    );
    assert_eq!(qwen(to, &[]), want);
    let g = "layer0.mlp.sample_weights_g";
    let want = (format!("{g} (64) bf16 = 128 bytes"), BACKWARD.to_string());
    assert_eq!(qwen(g, &[]), want);
    // In pure bf16 both factors are bf16: 64·64·2.
    let w = "layer0.mlp.weighted_out";
    let pure = qwen(w, &["--precision_mode=pure"]).0;
    assert_eq!(pure, format!("{w} (64, 64) bf16 = 8.00 KiB"));
    // norm_topk_prob = False: no renormalisation, no sum kept.
    assert!(absent(
        "layer0.mlp.gate.top_k_sum",
        &["--norm_topk_prob=False"]
    ));
    assert!(!absent("layer0.mlp.gate.top_k_sum", &[]));
}

#[test]
fn qwen3_moe_leaves_nothing_alive_after_the_backward() {
    let knobs: &[&[&str]] = &[
        &[],
        &["--norm_topk_prob=False", "--precision_mode=pure"],
        &["--lora_rank=4", "--activation_checkpointing=True"],
    ];
    nothing_left("qwen3-30b-a3b", &SMALL_QWEN3_MOE[2..], knobs);
}

#[test]
fn qwen3_moe_serving_splits_each_experts_width_over_tensor_parallel_ranks() {
    // vLLM with tensor_parallel_size=2, bf16, one rank: the vocabulary (151936, a multiple of
    // 64 already) and q, k, v, o split by heads (16 query and 2 key/value heads of 128 per
    // rank), each of 128 experts' width 768/2 = 384 (FusedMoE's
    // intermediate_size_per_partition), the router, the norms and q_norm/k_norm replicated.
    // Each tensor is rounded up to the allocator's 512-byte blocks; the rotary inv_freq
    // buffer (64 fp32) is one more block.
    let block = |b: u64| b.div_ceil(512) * 512;
    let (c, bf16) = (2048u64, 2u64);
    let embeddings = 2 * block(151_936 / 2 * c * bf16);
    let attention = 2 * block(c * 16 * 128 * bf16) + 2 * block(c * 2 * 128 * bf16);
    let norms = 2 * block(128 * bf16) + 2 * block(c * bf16);
    let moe = block(128 * c * bf16) + block(128 * 2 * 384 * c * bf16) + block(128 * c * 384 * bf16);
    let want = embeddings + 48 * (attention + norms + moe) + block(c * bf16) + block(64 * 4);
    let (_, v) = json(&[
        "check",
        "--json",
        "--model",
        "qwen3-30b-a3b",
        "--mode=inference",
        "--dtype=bfloat16",
        "--gpu",
        "h100-80gb",
        "--tensor_parallel_size=2",
        "--block_size=4096",
        "--batch_size=1",
    ]);
    assert_eq!(v["vllm"]["weights_bytes"].as_u64(), Some(want));
}

/// Qwen3-MoE's dense layer (mlp_only_layers) has a Qwen3MoeMLP of nn.Linear, so PEFT's
/// all-linear wraps its gate, up and down projections: r × (C + I) each, I its
/// intermediate_size; the sparse layers' experts and router are not nn.Linear.
#[test]
fn all_linear_adapters_reach_a_dense_layers_mlp() {
    let base = [
        "--n_layer=2",
        "--lora_rank=8",
        "--lora_targets=all-linear",
        "--dtype=bfloat16",
    ];
    let sparse = crate::support::hf::preset("qwen3-30b-a3b", &base);
    let dense = crate::support::hf::preset(
        "qwen3-30b-a3b",
        &[&base[..], &["--mlp_only_layers='0'"]].concat(),
    );
    let (c, i) = (dense.n_embd, dense.intermediate_size.unwrap());
    let extra = 3 * 8 * (c + i);
    assert_eq!(
        vramplan::model::lora_params(&dense) - vramplan::model::lora_params(&sparse),
        extra
    );
}
