//! Issue #12 item 6, mixture-of-experts decoders: Mixtral (Qwen3-MoE: models_qwen3_moe.rs).
//! The preset's parameter count is derived by hand from config.json; each tensor of the MoE block is checked on a small config
//! (4 experts, 2 per token) by its shape, dtype, bytes and lifetime, counted by hand from
//! transformers 5.25.0's source (models/mixtral/modeling_mixtral.py `MixtralTopKRouter.forward`,
//! `MixtralSparseMoeBlock.forward`; integrations/moe.py `grouped_mm_experts_forward`, the
//! default `experts_implementation`) — what each op saves checked against torch 2.15 with
//! `torch.autograd.graph.saved_tensors_hooks` on CPU; nothing outlives the run.

use crate::support::cli::{explain, forward_end, json, vramplan};
use crate::support::hf::{assert_n_params_from_each, nothing_left};

#[test]
fn mixtral_8x7b_counts_what_config_json_gives_by_hand() {
    // mistralai/Mixtral-8x7B-v0.1 config.json: hidden_size 4096, num_hidden_layers 32,
    // num_attention_heads 32, num_key_value_heads 8 (head_dim 128), intermediate_size 14336,
    // num_local_experts 8, vocab_size 32000, untied. Per layer: q_proj 4096·4096, k_proj and
    // v_proj 2·4096·1024, o_proj 4096·4096; the router (8, 4096); 8 experts of gate, up,
    // down 3·4096·14336; two RMSNorms.
    let attention = 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096;
    let experts = 8 * 3 * 4096 * 14336;
    let layer: u64 = attention + 8 * 4096 + experts + 2 * 4096;
    assert_eq!(layer, 1_451_270_144);
    // Embeddings and lm_head 2·32000·4096, the final norm.
    let want = 2 * 32000 * 4096 + 32 * layer + 4096;
    // The model card's "46.7B total parameters" (46,702,792,704 as the Hub lists it).
    assert_eq!(want, 46_702_792_704);
    assert_n_params_from_each(
        &[
            &["--model", "mixtral-8x7b"][..],
            &["--model", "mistralai/Mixtral-8x7B-v0.1"][..],
            &["--hf-config", "fixtures/hf/mixtral-8x7b.json"][..],
        ],
        want,
    );
}

/// A small Mixtral: 2 layers, 2 heads (1 kv head) of 32, width C = 64, experts of width
/// I = 96, E = 4 experts with k = 2 per token, vocabulary 1000, batch 2 × 16 tokens: N = 32
/// tokens, S = N·k = 64 routed rows. bf16 autocast over fp32 master weights.
pub(crate) const SMALL_MIXTRAL: &[&str] = &[
    "--model",
    "mixtral-8x7b",
    "--n_layer=2",
    "--n_embd=64",
    "--n_head=2",
    "--n_kv_head=1",
    "--head_dim=32",
    "--intermediate_size=96",
    "--vocab_size=1000",
    "--num_experts=4",
    "--experts_per_token=2",
    "--batch_size=2",
    "--block_size=16",
    "--dtype=bfloat16",
];

/// `explain` on the small Mixtral: (first line, lifetime line).
fn small(tensor: &str, extra: &[&str]) -> (String, String) {
    explain(tensor, SMALL_MIXTRAL, extra)
}

const FORWARD: &str = "2 x born in forward, freed in forward";
const BACKWARD: &str = "2 x born in forward, freed in backward";

#[test]
fn mixtral_parameters_are_the_router_and_two_3d_expert_tensors() {
    // MixtralTopKRouter: weight (E, C) = 4·64·4 = 1024 bytes fp32; MixtralExperts:
    // gate_up_proj (E, 2I, C) = 4·192·64·4 = 196608, down_proj (E, C, I) = 4·64·96·4 = 98304.
    for (name, line) in [
        (
            "layer0.mlp.gate.weight",
            "layer0.mlp.gate.weight (4, 64) fp32 = 1.00 KiB",
        ),
        (
            "layer0.mlp.experts.gate_up_proj",
            "layer0.mlp.experts.gate_up_proj (4, 192, 64) fp32 = 192.00 KiB",
        ),
        (
            "layer1.mlp.experts.down_proj",
            "layer1.mlp.experts.down_proj (4, 64, 96) fp32 = 96.00 KiB",
        ),
    ] {
        assert_eq!(small(name, &[]).0, line);
    }
    // No dense MLP beside them.
    let (code, _, _) = vramplan(
        &[
            &["explain", "layer0.mlp.gate_proj.weight"][..],
            SMALL_MIXTRAL,
        ]
        .concat(),
    );
    assert_eq!(code, 2);
}

#[test]
fn mixtral_router_keeps_softmax_topk_and_the_division_operands() {
    let cases = [
        // F.linear under autocast: router_logits (N, E) bf16 = 32·4·2; the block's `_` local.
        (
            "layer0.mlp.gate.out",
            "(2, 16, 4) bf16 = 256 bytes",
            FORWARD,
        ),
        // router_logits.float(): 32·4·4, gone once softmax has run.
        (
            "layer0.mlp.router_logits.float",
            "(2, 16, 4) fp32 = 512 bytes",
            FORWARD,
        ),
        // softmax(dim=-1): SoftmaxBackward keeps its output (N, E) fp32.
        (
            "layer0.mlp.gate.probs",
            "(32, 4) fp32 = 512 bytes",
            BACKWARD,
        ),
        // topk: values (N, k) fp32 = 256 bytes (no node keeps them); indices (N, k) int64 =
        // 512 bytes, kept by TopkBackward.
        (
            "layer0.mlp.gate.top_k_weights",
            "(32, 2) fp32 = 256 bytes",
            FORWARD,
        ),
        (
            "layer0.mlp.gate.top_k_index",
            "(32, 2) int64 = 512 bytes",
            BACKWARD,
        ),
        // `/= sum(-1, keepdim=True)`: DivBackward0 keeps the sum (N, 1) and the values
        // before the in-place division (N, k).
        (
            "layer0.mlp.gate.top_k_sum",
            "(32, 1) fp32 = 128 bytes",
            BACKWARD,
        ),
        (
            "layer0.mlp.gate.top_k_original",
            "(32, 2) fp32 = 256 bytes",
            BACKWARD,
        ),
    ];
    for (name, shape, life) in cases {
        assert_eq!(
            small(name, &[]),
            (format!("{name} {shape}"), life.to_string())
        );
    }
}

#[test]
fn mixtral_experts_run_on_s_rows_in_the_weights_dtype() {
    let cases = [
        // hidden_states[perm // k]: (S, C) in the norm's fp32 = 64·64·4; kept by the grouped
        // matmul for the weight's gradient (its `.to(weight.dtype)` is a no-op on fp32).
        (
            "layer0.mlp.selected_hidden_states_g",
            "(64, 64) fp32 = 16.00 KiB",
            BACKWARD,
        ),
        // sort's permutation, and `perm // k`: (S,) int64 = 512 bytes, kept by the gathers.
        ("layer0.mlp.perm", "(64) int64 = 512 bytes", BACKWARD),
        (
            "layer0.mlp.perm_div_top_k",
            "(64) int64 = 512 bytes",
            BACKWARD,
        ),
        // top_k_weights.reshape(-1)[perm]: (S,) fp32, kept by the weighting multiply.
        (
            "layer0.mlp.sample_weights_g",
            "(64) fp32 = 256 bytes",
            BACKWARD,
        ),
        // grouped_mm is on no autocast list: with fp32 master weights the experts run in
        // fp32. gate_up (S, 2I) = 64·192·4; its halves are read by SiLU and the product.
        (
            "layer0.mlp.experts.gate_up_proj.out",
            "(64, 192) fp32 = 48.00 KiB",
            BACKWARD,
        ),
        (
            "layer0.mlp.experts.act_fn",
            "(64, 96) fp32 = 24.00 KiB",
            BACKWARD,
        ),
        (
            "layer0.mlp.experts.gate_up",
            "(64, 96) fp32 = 24.00 KiB",
            BACKWARD,
        ),
        // down (S, C), kept by `* sample_weights_g.unsqueeze(-1)` for the weights' gradient.
        (
            "layer0.mlp.experts.down_proj.out",
            "(64, 64) fp32 = 16.00 KiB",
            BACKWARD,
        ),
        // The weighted rows and their un-permuted copy: no node keeps either.
        (
            "layer0.mlp.weighted_out",
            "(64, 64) fp32 = 16.00 KiB",
            FORWARD,
        ),
        (
            "layer0.mlp.weighted_out_restored",
            "(64, 64) fp32 = 16.00 KiB",
            FORWARD,
        ),
        ("layer0.mlp.inv_perm", "(64) int64 = 512 bytes", BACKWARD),
        // histc's counts (E,) int32 go with the function; their cumsum, the offsets, is kept
        // by both grouped matmuls (GroupedMmBackward0 saves `offs`).
        (
            "layer0.mlp.tokens_per_expert",
            "(4) int32 = 16 bytes",
            FORWARD,
        ),
        ("layer0.mlp.offsets", "(4) int32 = 16 bytes", BACKWARD),
        // view(N, k, C).sum(dim=1): (B, T, C) fp32 = 2·16·64·4, the block's output.
        (
            "layer0.mlp.final_hidden_states",
            "(2, 16, 64) fp32 = 8.00 KiB",
            FORWARD,
        ),
    ];
    for (name, shape, life) in cases {
        assert_eq!(
            small(name, &[]),
            (format!("{name} {shape}"), life.to_string())
        );
    }
    // Pure bf16 (weights in bf16, no autocast): the experts run in bf16, (S, 2I)·2 bytes; the
    // fp32 routing weights promote the weighted rows to fp32, and the sum is cast back to the
    // bf16 hidden states, (B, T, C)·2.
    let pure = ["--precision_mode=pure"];
    for (name, shape) in [
        (
            "layer0.mlp.experts.gate_up_proj.out",
            "(64, 192) bf16 = 24.00 KiB",
        ),
        ("layer0.mlp.weighted_out", "(64, 64) fp32 = 16.00 KiB"),
        (
            "layer0.mlp.final_hidden_states.to",
            "(2, 16, 64) bf16 = 4.00 KiB",
        ),
    ] {
        assert_eq!(small(name, &pure).0, format!("{name} {shape}"));
    }
}

#[test]
fn mixtral_backward_allocates_what_autograd_runs() {
    // The aten ops a TorchDispatchMode logs in the block's backward (torch 2.15, CPU), two
    // steps of the small Mixtral. `view(N, k, C).sum(1)`: SumBackward's expand, copied by
    // ViewBackward's reshape to (S, C) fp32 = 64·64·4, once a step.
    let copy = "layer0.mlp.final_hidden_states.grad";
    let want = (
        format!("{copy} (64, 64) fp32 = 16.00 KiB"),
        "2 x born in backward, freed in backward".to_string(),
    );
    assert_eq!(small(copy, &[]), want);
    // IndexBackward0: `grad.new_zeros(sizes).index_put(indices, grad, True)`, an
    // out-of-place index_put: two buffers of the source's shape a step — (S, C) for the
    // un-permute, the hidden states' (B, T, C) fp32 for the token gather.
    for (name, shape) in [
        (
            "layer0.mlp.weighted_out_restored.grad",
            "(64, 64) fp32 = 16.00 KiB",
        ),
        (
            "layer0.mlp.selected_hidden_states_g.grad",
            "(2, 16, 64) fp32 = 8.00 KiB",
        ),
    ] {
        let want = (
            format!("{name} {shape}"),
            "4 x born in backward, freed in backward".to_string(),
        );
        assert_eq!(small(name, &[]), want);
    }
    // GroupedMmBackward0's weight gradient: the parameter's (E, C, I) fp32, held to the
    // optimizer step (4·64·96·4 bytes).
    let (first, _) = small("layer0.mlp.experts.down_proj.out.grad", &[]);
    assert_eq!(
        first,
        "layer0.mlp.experts.down_proj.out.grad (4, 64, 96) fp32 = 96.00 KiB"
    );
}

#[test]
fn mixtral_lora_adapts_attention_and_keeps_the_experts_frozen() {
    // PEFT finds only attention's nn.Linear layers in MixtralDecoderLayer (5.x): its default
    // targets q_proj and v_proj get adapters; the router and the 3-D experts stay frozen in
    // the loaded bf16: gate_up_proj 4·192·64·2 = 98304 bytes.
    let lora = ["--lora_rank=4"];
    assert_eq!(
        small("layer0.mlp.experts.gate_up_proj", &lora).0,
        "layer0.mlp.experts.gate_up_proj (4, 192, 64) bf16 = 96.00 KiB"
    );
    assert_eq!(
        small("layer0.self_attn.q_proj.lora_A.weight", &lora).0,
        "layer0.self_attn.q_proj.lora_A.weight (4, 64) fp32 = 1.00 KiB"
    );
    // A frozen expert weight needs no input for its gradient: the gathered rows (S, C) in the
    // bf16 stream, 64·64·2, go with the forward; the down projection's output is still kept
    // for the routing weights' gradient (they depend on the hidden states).
    assert_eq!(
        small("layer0.mlp.selected_hidden_states_g", &lora),
        (
            "layer0.mlp.selected_hidden_states_g (64, 64) bf16 = 8.00 KiB".to_string(),
            FORWARD.to_string()
        )
    );
    assert_eq!(small("layer0.mlp.experts.down_proj.out", &lora).1, BACKWARD);
    let (code, _, err) = vramplan(
        &[
            &["check"][..],
            SMALL_MIXTRAL,
            &["--lora_rank=4", "--lora_targets=gate_proj"],
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn mixtral_saves_per_layer_what_s_rows_cost_by_hand() {
    // What the forward leaves for the backward and grows with S = N·k, per layer, each
    // rounded up to the allocator's 512-byte blocks (N = 32, C = 64, I = 96):
    //   top_k_index (N, k) i64, the values before the division (N, k) fp32, perm // k,
    //   perm and inv_perm (S,) i64, sample_weights_g (S,) fp32: six tensors of at most
    //   512 bytes at k = 1 and k = 2 alike;
    //   selected rows and down's output (S, C) fp32: 2·S·64·4;
    //   gate_up's output (S, 2I) fp32 and the SiLU and product (S, I) fp32: 4·S·96·4.
    let per_layer = |s: u64| 6 * 512 + 2 * s * 64 * 4 + 4 * s * 96 * 4;
    assert_eq!(per_layer(64) - per_layer(32), 65_536);
    let two = forward_end(SMALL_MIXTRAL, &[]);
    let one = forward_end(SMALL_MIXTRAL, &["--experts_per_token=1"]);
    assert_eq!(two - one, 2 * (per_layer(64) - per_layer(32)));
    // The number of experts changes what a token saves only by the router's (N, E) fp32
    // softmax (32·E·4 bytes: one 512-byte block at E = 4, two at E = 8) and autocast's cached
    // bf16 copy of the router weight (E·64·2: one block, two); the rest is the parameters,
    // held at the last forward's end with AdamW's two fp32 states each (3 × fp32 bytes).
    let eight = forward_end(SMALL_MIXTRAL, &["--num_experts=8"]);
    let params = |e: u64| 2 * e * (64 * 4 + 3 * 64 * 96 * 4);
    assert_eq!(
        eight - two,
        3 * (params(8) - params(4)) + 2 * (1024 - 512) + 2 * (1024 - 512)
    );
}

#[test]
fn mixtral_leaves_nothing_alive_after_the_backward() {
    let knobs: &[&[&str]] = &[
        &[],
        &["--activation_checkpointing=True"],
        &["--dtype=float32"],
        &["--precision_mode=pure"],
        &["--flash=False", "--loss=chunked"],
        &["--world_size=2", "--parallelism=fsdp"],
        &["--world_size=2", "--parallelism=zero3"],
        &["--lora_rank=4", "--activation_checkpointing=True"],
    ];
    nothing_left("mixtral-8x7b", &SMALL_MIXTRAL[2..], knobs);
}

#[test]
fn mixtral_preset_runs_through_check() {
    // Full fine-tuning of 46.7B parameters with AdamW cannot fit one 80 GB card: fp32
    // weights alone are 4·46,702,792,704 bytes = 174 GiB.
    let (code, v) = json(&[
        "check",
        "--json",
        "--model",
        "mixtral-8x7b",
        "--gpu",
        "h100-80gb",
        "--batch_size=1",
        "--block_size=512",
        "--dtype=bfloat16",
    ]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["fits"], false);
    // Serving it in bf16 on 2 × 80 GB is refused plainly only for tensor parallelism.
    let (code, _, err) = vramplan(&[
        "check",
        "--model",
        "mixtral-8x7b",
        "--world_size=2",
        "--parallelism=tp",
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn what_the_moe_layer_does_not_simulate_is_refused_in_one_line() {
    let refused = |args: &[&str], says: &str| {
        let (code, _, err) = vramplan(&[&["check"][..], args].concat());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{says}: {err}");
    };
    refused(
        &["--model", "mixtral-8x7b", "--transformers_version=4.57"],
        "4.x's sparse MoE blocks loop over the experts",
    );
    refused(
        &["--model", "mixtral-8x7b", "--experts_per_token=9"],
        "at most num_experts = 8",
    );
    refused(
        &["--model", "mixtral-8x7b", "--num_experts=None"],
        "num_experts",
    );
    refused(
        &["--model", "llama-3.2-1b", "--num_experts=8"],
        "only model_type = 'mixtral'",
    );
    refused(
        &["--model", "mixtral-8x7b", "--norm_topk_prob=False"],
        "always renormalises",
    );
    refused(
        &["--model", "mixtral-8x7b", "--moe_intermediate_size=512"],
        "intermediate_size wide",
    );
    let dir = std::env::temp_dir().join(format!("vramplan-moe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    // Qwen3-MoE's dense layers among the sparse ones (Qwen3MoeDecoderLayer.__init__: a
    // Qwen3MoeMLP of intermediate_size, 6144) are read from config.json.
    let text = std::fs::read_to_string("fixtures/hf/qwen3-30b-a3b.json").unwrap();
    let dense = text.replace("\"mlp_only_layers\": []", "\"mlp_only_layers\": [0]");
    let step = text.replace("\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 2");
    for edited in [dense, step] {
        std::fs::write(&path, edited).unwrap();
        let name = "layer0.mlp.gate_proj.weight";
        let (code, out, err) = vramplan(&[
            "explain",
            name,
            "--hf-config",
            path.to_str().unwrap(),
            "--batch_size=1",
            "--block_size=64",
        ]);
        assert_eq!(code, 0, "{err}");
        let want = format!("{name} (6144, 2048) fp32 = 48.00 MiB");
        assert_eq!(out.lines().next(), Some(want.as_str()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
