//! Issue #12 item 6, mixture-of-experts decoders: Qwen2-MoE (Qwen2MoeForCausalLM), where it
//! differs from Qwen3-MoE (models_qwen3_moe.rs): Qwen2's attention (q/k/v biases, no q/k
//! norms), and a shared expert beside the routed ones (transformers 5.25.0,
//! models/qwen2_moe/modeling_qwen2_moe.py `Qwen2MoeSparseMoeBlock.forward`):
//! `shared_expert(x)` (a Qwen2MoeMLP of shared_expert_intermediate_size) first, then the
//! router and the grouped experts, then `sigmoid(shared_expert_gate(x)) * shared_out` added to
//! the routed output. What each op keeps was read from the real block's autograd graph
//! (scripts/moe-truth/qwen2_moe_block.py, torch 2.15 CPU): each mm its input and weight,
//! SiLU its input, the products both factors, the sigmoid its result.

use crate::support::cli::{explain, explains_nothing, forward_end, json, vramplan};
use crate::support::hf::{assert_n_params_from_each, nothing_left};
use crate::support::hostile::temp;

const FORWARD: &str = "2 x born in forward, freed in forward";
const BACKWARD: &str = "2 x born in forward, freed in backward";

#[test]
fn qwen1_5_moe_a2_7b_counts_what_config_json_gives_by_hand() {
    // Qwen/Qwen1.5-MoE-A2.7B config.json (= Qwen2MoeConfig's defaults): hidden_size 2048,
    // num_hidden_layers 24, num_attention_heads 16, num_key_value_heads 16 (head_dim 128),
    // qkv_bias, num_experts 60, moe_intermediate_size 1408, shared_expert_intermediate_size
    // 5632, vocab_size 151936, untied. Per layer: q, k, v, o 4·2048·2048 and the q, k, v
    // biases 3·2048; the router (60, 2048); 60 experts of gate, up, down 3·2048·1408; the
    // shared expert 3·2048·5632 and its gate (1, 2048); two RMSNorms 2·2048.
    let attention: u64 = 4 * 2048 * 2048 + 3 * 2048;
    let routed = 60 * 2048 + 60 * 3 * 2048 * 1408;
    let shared = 3 * 2048 * 5632 + 2048;
    let layer = attention + routed + shared + 2 * 2048;
    assert_eq!(layer, 570_560_512);
    // Embeddings and lm_head 2·151936·2048, the final norm.
    let want = 2 * 151_936 * 2048 + 24 * layer + 2048;
    // The model card: "14.3B parameters in total and 2.7B activated".
    assert_eq!(want, 14_315_784_192);
    // Activated: 4 of the 60 experts per token, everything else.
    let active = want - 24 * 56 * 3 * 2048 * 1408;
    assert_eq!(active, 2_689_173_504);
    assert_n_params_from_each(
        &[
            &["--model", "qwen1.5-moe-a2.7b"][..],
            &["--model", "Qwen/Qwen1.5-MoE-A2.7B"][..],
            &["--hf-config", "fixtures/hf/qwen1.5-moe-a2.7b.json"][..],
        ],
        want,
    );
}

/// A small Qwen2-MoE: 2 layers, 2 heads (1 kv head) of 32, C = 64, 4 experts of width 48
/// with 2 per token, a shared expert of width 80, dense MLPs (where a layer has one) of 128,
/// vocabulary 1000, batch 2 × 16: N = 32 tokens, S = 64 routed rows. bf16 autocast over fp32
/// master weights.
const SMALL_QWEN2_MOE: &[&str] = &[
    "--model",
    "qwen1.5-moe-a2.7b",
    "--n_layer=2",
    "--n_embd=64",
    "--n_head=2",
    "--n_kv_head=1",
    "--head_dim=32",
    "--intermediate_size=128",
    "--moe_intermediate_size=48",
    "--shared_expert_intermediate_size=80",
    "--vocab_size=1000",
    "--num_experts=4",
    "--experts_per_token=2",
    "--batch_size=2",
    "--block_size=16",
    "--dtype=bfloat16",
];

fn small(name: &str, extra: &[&str]) -> (String, String) {
    explain(name, SMALL_QWEN2_MOE, extra)
}

fn absent(name: &str, extra: &[&str]) -> bool {
    explains_nothing(name, SMALL_QWEN2_MOE, extra)
}

#[test]
fn qwen2_moe_parameters_add_the_shared_expert_and_q_k_v_biases() {
    let cases = [
        // Qwen2MoeMLP(intermediate_size=80): gate_proj (80, 64) fp32 = 80·64·4.
        (
            "layer0.mlp.shared_expert.gate_proj.weight",
            "(80, 64) fp32 = 20.00 KiB",
        ),
        (
            "layer1.mlp.shared_expert.down_proj.weight",
            "(64, 80) fp32 = 20.00 KiB",
        ),
        // Linear(C, 1, bias=False).
        (
            "layer0.mlp.shared_expert_gate.weight",
            "(1, 64) fp32 = 256 bytes",
        ),
        // The routed experts: (E, 2·48, C) = 4·96·64·4.
        (
            "layer0.mlp.experts.gate_up_proj",
            "(4, 96, 64) fp32 = 96.00 KiB",
        ),
        // Qwen2MoeAttention: q_proj with bias=config.qkv_bias (True): 2·32 fp32.
        ("layer0.self_attn.q_proj.bias", "(64) fp32 = 256 bytes"),
    ];
    for (name, shape) in cases {
        assert_eq!(small(name, &[]).0, format!("{name} {shape}"));
    }
    // o_proj has no bias; no dense MLP and no q/k norms in a sparse layer.
    for name in [
        "layer0.self_attn.o_proj.bias",
        "layer0.mlp.gate_proj.weight",
        "layer0.self_attn.q_norm.weight",
    ] {
        assert!(absent(name, &[]), "{name}");
    }
}

#[test]
fn the_shared_expert_gate_keeps_its_sigmoid_and_both_factors() {
    let cases = [
        // shared_expert_gate(x): (N, 1) bf16 = 32·2 bytes; the sigmoid keeps its result, not
        // its input, so the logit goes at once.
        (
            "layer0.mlp.shared_expert_gate.out",
            "(2, 16, 1) bf16 = 64 bytes",
            FORWARD,
        ),
        // SigmoidBackward0 keeps it; so does the multiply, for the shared output's gradient.
        (
            "layer0.mlp.shared_expert_gate.sigmoid",
            "(2, 16, 1) bf16 = 64 bytes",
            BACKWARD,
        ),
        // shared_expert(x): down_proj's (N, C) bf16 = 32·64·2, kept by the multiply.
        (
            "layer0.mlp.shared_expert.down_proj.out",
            "(2, 16, 64) bf16 = 4.00 KiB",
            BACKWARD,
        ),
        // The gated product (N, C) bf16: only added, so nothing keeps it.
        (
            "layer0.mlp.shared_expert_output",
            "(2, 16, 64) bf16 = 4.00 KiB",
            FORWARD,
        ),
        // expert_output + shared: the routed rows are fp32 (grouped_mm over fp32 master
        // weights, `.to(hidden_states.dtype)` of the fp32 norm output), the sum promotes:
        // 32·64·4.
        (
            "layer0.mlp.expert_output",
            "(2, 16, 64) fp32 = 8.00 KiB",
            FORWARD,
        ),
        // The shared expert's SiLU output (N, 80) bf16 = 32·80·2, kept by the product.
        (
            "layer0.mlp.shared_expert.act_fn",
            "(2, 16, 80) bf16 = 5.00 KiB",
            BACKWARD,
        ),
    ];
    for (name, shape, life) in cases {
        let want = (format!("{name} {shape}"), life.to_string());
        assert_eq!(small(name, &[]), want, "{name}");
    }
    // Qwen2MoeTopKRouter is Qwen3's: softmax(logits, dtype=float) without an fp32 copy, no
    // renormalisation (norm_topk_prob = False, Qwen2MoeConfig's default), weights cast back
    // to the logits' dtype.
    assert!(absent("layer0.mlp.router_logits.float", &[]));
    assert!(absent("layer0.mlp.gate.top_k_sum", &[]));
    assert!(!absent(
        "layer0.mlp.gate.top_k_sum",
        &["--norm_topk_prob=True"]
    ));
    let to = "layer0.mlp.gate.top_k_weights.to";
    assert_eq!(small(to, &[]).0, format!("{to} (32, 2) bf16 = 128 bytes"));
}

#[test]
fn the_shared_experts_width_costs_four_activations_and_its_weights() {
    // Widening the shared expert from 80 to 160 adds, per layer, at the forward's end:
    //   gate_proj's output, its SiLU, up_proj's output and their product, each (N, I_s)
    //   bf16 and each kept (SiLU its input, the product both factors, down_proj its input):
    //   4·32·80·2 = 20480 bytes (multiples of 512: no rounding);
    //   autocast's cached bf16 copies of gate_proj, up_proj, down_proj: 3·80·64·2 = 30720;
    //   the fp32 parameters with AdamW's two fp32 states: 3·(3·80·64·4) = 184320.
    let per_layer = 4 * 32 * 80 * 2 + 3 * 80 * 64 * 2 + 3 * (3 * 80 * 64 * 4);
    assert_eq!(per_layer, 235_520);
    let narrow = forward_end(SMALL_QWEN2_MOE, &[]);
    let wide = forward_end(SMALL_QWEN2_MOE, &["--shared_expert_intermediate_size=160"]);
    assert_eq!(wide - narrow, 2 * per_layer);
}

#[test]
fn mlp_only_layers_and_decoder_sparse_step_make_dense_layers() {
    // Qwen2MoeDecoderLayer.__init__: sparse where `layer_idx not in mlp_only_layers and
    // (layer_idx + 1) % decoder_sparse_step == 0`, else Qwen2MoeMLP(intermediate_size).
    let dense = "layer0.mlp.gate_proj.weight (128, 64) fp32 = 32.00 KiB";
    for knob in ["--mlp_only_layers='0'", "--decoder_sparse_step=2"] {
        assert_eq!(
            small("layer0.mlp.gate_proj.weight", &[knob]).0,
            dense,
            "{knob}"
        );
        assert!(absent("layer0.mlp.gate.weight", &[knob]), "{knob}");
        assert!(
            !absent("layer1.mlp.shared_expert_gate.weight", &[knob]),
            "{knob}"
        );
    }
    // The parameter count: one sparse layer's MLP (router 4·64, experts 4·3·64·48, shared
    // expert 3·64·80 and its gate 64) becomes a dense one (3·64·128).
    let sparse_mlp = 4 * 64 + 4 * 3 * 64 * 48 + 3 * 64 * 80 + 64;
    let dense_mlp = 3 * 64 * 128;
    let params = |extra: &[&str]| {
        let (code, v) = json(&[&["check", "--json"][..], SMALL_QWEN2_MOE, extra].concat());
        assert_eq!(code, 0, "{extra:?}");
        v["n_params"].as_i64().unwrap()
    };
    let all_sparse = params(&[]);
    for knob in ["--mlp_only_layers='0'", "--decoder_sparse_step=2"] {
        assert_eq!(
            all_sparse - params(&[knob]),
            sparse_mlp - dense_mlp,
            "{knob}"
        );
    }
    // Both layers dense: a step past the last layer.
    let none = params(&["--decoder_sparse_step=3"]);
    assert_eq!(all_sparse - none, 2 * (sparse_mlp - dense_mlp));
    // Qwen3-MoE reads the same two keys the same way.
    let (code, _, err) = vramplan(&[
        "explain",
        "layer0.mlp.gate_proj.weight",
        "--model",
        "qwen3-30b-a3b",
        "--n_layer=2",
        "--mlp_only_layers='0'",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn qwen2_moe_leaves_nothing_alive_after_the_backward() {
    let knobs: &[&[&str]] = &[
        &[],
        &["--norm_topk_prob=True", "--precision_mode=pure"],
        &["--lora_rank=4", "--activation_checkpointing=True"],
        &["--lora_rank=4", "--lora_targets=all-linear"],
        &[
            "--mlp_only_layers='1'",
            "--world_size=2",
            "--parallelism=fsdp",
        ],
    ];
    nothing_left("qwen1.5-moe-a2.7b", &SMALL_QWEN2_MOE[2..], knobs);
}

#[test]
fn lora_on_all_linear_wraps_the_shared_expert_and_its_gate() {
    // PEFT's all-linear finds every nn.Linear: the attention's four, the shared expert's
    // gate_proj, up_proj, down_proj and shared_expert_gate; not the router or the experts
    // (3-D parameters). r = 4: r·(in + out) each, per layer:
    //   q, o: 4·(64 + 64) each; k, v: 4·(64 + 32) each;
    //   gate, up: 4·(64 + 80) each; down: 4·(80 + 64); shared_expert_gate: 4·(64 + 1).
    let layer = 2 * 4 * 128 + 2 * 4 * 96 + 3 * 4 * 144 + 4 * 65;
    let (code, v) = json(
        &[
            &[
                "check",
                "--json",
                "--lora_rank=4",
                "--lora_targets=all-linear",
            ][..],
            SMALL_QWEN2_MOE,
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    let (_, base) = json(&[&["check", "--json"][..], SMALL_QWEN2_MOE].concat());
    let added = v["n_params"].as_u64().unwrap() - base["n_params"].as_u64().unwrap();
    assert_eq!(added, 2 * layer);
    let a = "layer0.mlp.shared_expert_gate.lora_A.weight";
    let line = small(a, &["--lora_rank=4", "--lora_targets=all-linear"]).0;
    assert_eq!(line, format!("{a} (4, 64) fp32 = 1.00 KiB"));
}

#[test]
fn what_qwen2_moe_does_not_take_is_refused_in_one_line() {
    let refused = |args: &[&str], says: &str| {
        let (code, _, err) = vramplan(&[&["check"][..], args].concat());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{says}: {err}");
    };
    let small = |extra: &'static str| [SMALL_QWEN2_MOE, &[extra]].concat();
    refused(
        &small("--shared_expert_intermediate_size=None"),
        "shared_expert_intermediate_size = None: expected a positive integer for model_type = 'qwen2_moe'",
    );
    refused(
        &small("--decoder_sparse_step=0"),
        "decoder_sparse_step = 0: expected a positive integer",
    );
    refused(
        &small("--mlp_only_layers='0,2'"),
        "mlp_only_layers = '0,2': expected comma-separated layer indices from 0 to n_layer - 1 = 1",
    );
    refused(
        &[
            "--model",
            "qwen3-30b-a3b",
            "--shared_expert_intermediate_size=64",
        ],
        "only Qwen2MoeSparseMoeBlock has a shared expert",
    );
    refused(
        &["--model", "llama-3.2-1b", "--decoder_sparse_step=2"],
        "decoder_sparse_step = 2: expected None (only model_type = 'mixtral', 'qwen3_moe' and 'qwen2_moe' read it)",
    );
    refused(
        &["--model", "llama-3.2-1b", "--mlp_only_layers='0'"],
        "mlp_only_layers = '0': expected '' (only model_type = 'qwen2_moe' and 'qwen3_moe' read it)",
    );
    // config.json: a malformed list, DeepSeek's MLA.
    let base = std::fs::read_to_string("fixtures/hf/qwen1.5-moe-a2.7b.json").unwrap();
    let write = |name: &str, text: String| temp(&format!("qwen2-moe-{name}"), text.as_bytes());
    let list = write(
        "list.json",
        base.replace(
            "\"decoder_sparse_step\": 1,",
            "\"mlp_only_layers\": [0, -1],",
        ),
    );
    refused(&["--hf-config", &list], "expected a list of layer indices");
    let dense = write(
        "dense.json",
        base.replace(
            "\"decoder_sparse_step\": 1,",
            "\"mlp_only_layers\": [0, 23],",
        ),
    );
    let (code, v) = json(&["check", "--json", "--hf-config", &dense]);
    assert_eq!(code, 0, "{v}");
    let deepseek = write("ds.json", "{\"model_type\": \"deepseek_v3\"}".to_string());
    refused(
        &["--hf-config", &deepseek],
        "model_type = \"deepseek_v3\": expected one of 'gpt2', 'llama'",
    );
}

#[test]
fn qwen2_moe_serving_splits_the_shared_expert_over_tensor_parallel_ranks() {
    // vLLM with tensor_parallel_size=2, bf16, one rank: the vocabulary (151936, a multiple
    // of 64) split; q, k, v, o by heads (8 of 128 per rank, k and v as many: 16 kv heads)
    // with q, k, v's biases split alike; each of 60 experts' width 1408/2 = 704 (FusedMoE);
    // the shared expert's 5632/2 = 2816 (vllm/model_executor/models/qwen2_moe.py
    // `Qwen2MoeMLP`: MergedColumnParallelLinear, RowParallelLinear); the router,
    // shared_expert_gate (a plain torch.nn.Linear(2048, 1)) and the norms replicated. vLLM
    // stores gate and up (and q, k, v) as one merged tensor; the simulator keeps
    // transformers' separate ones, as for every served model, so the counts below do too.
    let block = |b: u64| b.div_ceil(512) * 512;
    let mib = 1u64 << 20;
    let large = |b: u64| {
        let segment = b.div_ceil(2 * mib) * 2 * mib;
        if segment - b <= mib {
            segment
        } else {
            b
        }
    };
    let (c, bf16) = (2048u64, 2u64);
    let embeddings = 2 * large(151_936 / 2 * c * bf16);
    let attention = 4 * block(c * 8 * 128 * bf16) + 3 * block(8 * 128 * bf16);
    let norms = 2 * block(c * bf16);
    let experts =
        block(60 * c * bf16) + large(60 * 2 * 704 * c * bf16) + large(60 * c * 704 * bf16);
    assert_eq!(large(60 * c * 704 * bf16), 166 * mib);
    let shared = 2 * large(2816 * c * bf16) + large(c * 2816 * bf16) + block(c * bf16);
    assert_eq!(large(2816 * c * bf16), 12 * mib);
    let layer = attention + norms + experts + shared;
    let want = embeddings + 24 * layer + block(c * bf16) + block(64 * 4);
    let (code, v) = json(&[
        "check",
        "--json",
        "--model",
        "qwen1.5-moe-a2.7b",
        "--mode=inference",
        "--dtype=bfloat16",
        "--gpu",
        "h100-80gb",
        "--tensor_parallel_size=2",
        "--block_size=4096",
        "--batch_size=1",
    ]);
    assert!(code == 0 || code == 1, "{v}");
    assert_eq!(v["vllm"]["weights_bytes"].as_u64(), Some(want));
}

#[test]
fn the_block_keeps_what_the_real_modules_autograd_graph_keeps() {
    // scripts/moe-truth/qwen2_moe_block.out: the real Qwen2MoeSparseMoeBlock on the same
    // tiny shapes (N = 32, C = 64, E = 4, k = 2, I = 48, I_s = 80) in bf16 without autocast,
    // each autograd node with what it saved — the truth this simulator's pure-bf16 run is
    // held to, tensor by tensor (shape and dtype; kept until the backward).
    let truth = std::fs::read_to_string("scripts/moe-truth/qwen2_moe_block.out").unwrap();
    let cases = [
        // The shared expert's gate: sigmoid keeps its (N, 1) result; the multiply keeps it
        // and down_proj's (N, C) output.
        (
            "SigmoidBackward0: result=(32, 1) bfloat16",
            "layer0.mlp.shared_expert_gate.sigmoid",
            "(2, 16, 1) bf16 = 64 bytes",
        ),
        (
            "MulBackward0: other=(32, 64) bfloat16, self=(32, 1) bfloat16",
            "layer0.mlp.shared_expert.down_proj.out",
            "(2, 16, 64) bf16 = 4.00 KiB",
        ),
        // Qwen2MoeMLP: SiLU keeps gate_proj's output, the product both factors, down_proj
        // the product.
        (
            "SiluBackward0: self=(32, 80) bfloat16",
            "layer0.mlp.shared_expert.gate_proj.out",
            "(2, 16, 80) bf16 = 5.00 KiB",
        ),
        (
            "MulBackward0: other=(32, 80) bfloat16, self=(32, 80) bfloat16",
            "layer0.mlp.shared_expert.up_proj.out",
            "(2, 16, 80) bf16 = 5.00 KiB",
        ),
        (
            "MmBackward0: mat2=(80, 64) bfloat16, self=(32, 80) bfloat16",
            "layer0.mlp.shared_expert.gate_up",
            "(2, 16, 80) bf16 = 5.00 KiB",
        ),
        // The router: softmax's fp32 result, topk's int64 indices.
        (
            "SoftmaxBackward0: result=(32, 4) float32",
            "layer0.mlp.gate.probs",
            "(32, 4) fp32 = 512 bytes",
        ),
        (
            "TopkBackward0: indices=(32, 2) int64",
            "layer0.mlp.gate.top_k_index",
            "(32, 2) int64 = 512 bytes",
        ),
        // The routed experts: grouped_mm keeps its input, weight and offsets; the weighting
        // multiply the (S, 1) routing weights.
        (
            "GroupedMmBackward0: mat2=(4, 48, 64) bfloat16, offs=(4,) int32, self=(64, 48) bfloat16",
            "layer0.mlp.offsets",
            "(4) int32 = 16 bytes",
        ),
        (
            "MulBackward0: other=(64, 1) bfloat16, self=(64, 64) bfloat16",
            "layer0.mlp.sample_weights_g",
            "(64) bf16 = 128 bytes",
        ),
    ];
    let pure = ["--precision_mode=pure"];
    for (node, name, shape) in cases {
        assert!(truth.contains(node), "the truth has no `{node}`");
        let want = (format!("{name} {shape}"), BACKWARD.to_string());
        assert_eq!(small(name, &pure), want, "{node}");
    }
    // No node keeps shared_expert_gate's logit, the gated product or the sum.
    for name in [
        "layer0.mlp.shared_expert_gate.out",
        "layer0.mlp.shared_expert_output",
        "layer0.mlp.expert_output",
    ] {
        assert_eq!(small(name, &pure).1, FORWARD, "{name}");
    }
    assert!(truth.contains("AddBackward0: -"));
}
