//! Issue #18 item 5, model types: the Qwen3 and Phi-3 presets against the parameter count
//! derived by hand from its config.json (the arithmetic is written out below, field by field),
//! and the tensors its forward adds, as the user reads them from the built binary.

use crate::support::cli::{json, vramplan};

/// `check --json` of a model: its parameter count.
fn n_params(args: &[&str]) -> u64 {
    let (code, v) = json(
        &[
            &["check", "--json", "--batch_size=1", "--block_size=64"],
            args,
        ]
        .concat(),
    );
    assert!(code == 0, "{args:?}: exit {code}");
    v["n_params"].as_u64().unwrap()
}

#[test]
fn qwen3_presets_count_what_config_json_gives_by_hand() {
    // Qwen/Qwen3-0.6B config.json: hidden_size 1024, num_hidden_layers 28, num_attention_heads 16,
    // num_key_value_heads 8, head_dim 128, intermediate_size 3072, vocab_size 151936, tied.
    // Per layer: q_proj 1024·(16·128) + k_proj, v_proj 2·1024·(8·128) + o_proj (16·128)·1024
    // + gate, up, down 3·1024·3072 + two RMSNorms 2·1024 + q_norm, k_norm 2·128.
    let layer_06 =
        1024 * 2048 + 2 * 1024 * 1024 + 2048 * 1024 + 3 * 1024 * 3072 + 2 * 1024 + 2 * 128;
    assert_eq!(layer_06, 15_730_944);
    let embed_06 = 151_936 * 1024;
    let want_06 = embed_06 + 28 * layer_06 + 1024;
    assert_eq!(want_06, 596_049_920);
    // The model card: "0.6B, 0.44B non-embedding".
    assert_eq!(((want_06 - embed_06) as f64 / 1e7).round() / 100.0, 0.44);
    // Qwen/Qwen3-8B: hidden 4096, 36 layers, 32 heads, 8 kv heads, head_dim 128,
    // intermediate 12288, untied (embed_tokens and lm_head both 151936 x 4096).
    let layer_8 =
        4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096 + 3 * 4096 * 12288 + 2 * 4096 + 2 * 128;
    let embed_8 = 2 * 151_936 * 4096;
    let want_8 = embed_8 + 36 * layer_8 + 4096;
    assert_eq!(want_8, 8_190_735_360);
    // "8.2B, 6.95B non-embedding".
    assert_eq!(((want_8 - embed_8) as f64 / 1e7).round() / 100.0, 6.95);

    for (args, want) in [
        (&["--model", "qwen3-0.6b"][..], want_06),
        (&["--hf-config", "fixtures/hf/qwen3-0.6b.json"][..], want_06),
        (&["--model", "Qwen/Qwen3-8B"][..], want_8),
        (&["--hf-config", "fixtures/hf/qwen3-8b.json"][..], want_8),
    ] {
        assert_eq!(n_params(args), want, "{args:?}");
    }
    let (_, out, _) = vramplan(&["check", "--model", "qwen3-0.6b", "--batch_size=1"]);
    assert!(
        out.starts_with("qwen3: 28 layers, 16 heads (8 key/value), n_embd 1024, vocab 151936 — 596.0M parameters"),
        "{out}"
    );
}

#[test]
fn qwen3_normalizes_each_head_of_q_and_k_before_rotary() {
    // Qwen3Attention.forward: q_norm(q_proj(h).view(B, T, 16, 128)): an RMSNorm over head_dim whose
    // output is fp32 (the fp32 weight times the bf16 cast promotes), B·T·16·128·4 bytes:
    // 1·64·16·128·4 = 524288 = 512.00 KiB; k: 8 heads, 256.00 KiB. Its statistics are per head:
    // rstd (B, T, 16, 1) fp32 = 4096 bytes.
    let common = [
        "--model",
        "qwen3-0.6b",
        "--batch_size=1",
        "--block_size=64",
        "--compile=False",
    ];
    for (tensor, shape, bytes) in [
        (
            "layer0.self_attn.q_norm.out",
            "(1, 64, 16, 128)",
            "512.00 KiB",
        ),
        (
            "layer0.self_attn.k_norm.out",
            "(1, 64, 8, 128)",
            "256.00 KiB",
        ),
    ] {
        let (code, out, err) = vramplan(&[&["explain", tensor][..], &common[..]].concat());
        assert_eq!(code, 0, "{err}");
        let first = out.lines().next().unwrap();
        assert_eq!(first, format!("{tensor} {shape} fp32 = {bytes}"), "{out}");
    }
    let (_, out, _) = vramplan(
        &[
            &["explain", "layer0.self_attn.q_norm.rstd"][..],
            &common[..],
        ]
        .concat(),
    );
    assert!(
        out.starts_with("layer0.self_attn.q_norm.rstd (1, 64, 16, 1) fp32 = 4.00 KiB"),
        "{out}"
    );
    // Llama has no such tensor.
    let (code, _, err) = vramplan(&[
        "explain",
        "layer0.self_attn.q_norm.out",
        "--model",
        "llama-3.2-1b",
        "--batch_size=1",
        "--block_size=64",
    ]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn phi3_preset_counts_what_config_json_gives_by_hand() {
    // microsoft/Phi-3-mini-4k-instruct config.json: hidden_size 3072, num_hidden_layers 32,
    // num_attention_heads 32, num_key_value_heads 32 (head_dim 96), intermediate_size 8192,
    // vocab_size 32064, untied. Per layer: qkv_proj 3072·(32·96 + 2·32·96) + o_proj 3072·3072
    // + gate_up_proj 3072·(2·8192) + down_proj 8192·3072 + two RMSNorms 2·3072.
    let layer = 3072 * 9216 + 3072 * 3072 + 3072 * 16384 + 8192 * 3072 + 2 * 3072;
    assert_eq!(layer, 113_252_352);
    let want = 2 * 32_064 * 3072 + 32 * layer + 3072;
    assert_eq!(want, 3_821_079_552);
    // The model card: "3.8B parameters".
    assert_eq!((want as f64 / 1e8).round() / 10.0, 3.8);
    for args in [
        &["--model", "phi-3-mini-4k"][..],
        &["--model", "microsoft/Phi-3-mini-4k-instruct"][..],
        &["--hf-config", "fixtures/hf/phi-3-mini-4k.json"][..],
    ] {
        assert_eq!(n_params(args), want, "{args:?}");
    }
}

#[test]
fn phi3_slices_qkv_and_chunks_gate_up() {
    let common = [
        "--model",
        "phi-3-mini-4k",
        "--batch_size=1",
        "--block_size=64",
        "--compile=False",
        // A model alone takes the Trainer's defaults (fp32): bf16 autocast as nanoGPT's.
        "--dtype=bfloat16",
    ];
    let first_line = |tensor: &str| {
        let (code, out, err) = vramplan(&[&["explain", tensor][..], &common[..]].concat());
        assert_eq!(code, 0, "explain {tensor}: {err}");
        out.lines().next().unwrap().to_string()
    };
    // gate_up_proj's output is (B, T, 2·8192) bf16 = 1·64·16384·2 = 2 MiB; silu runs on the
    // gate half, (B, T, 8192): 1 MiB, and so does up * silu(gate).
    assert_eq!(
        first_line("layer0.mlp.gate_up_proj.out"),
        "layer0.mlp.gate_up_proj.out (1, 64, 16384) bf16 = 2.00 MiB"
    );
    assert_eq!(
        first_line("layer0.mlp.act_fn"),
        "layer0.mlp.act_fn (1, 64, 8192) bf16 = 1.00 MiB"
    );
    assert_eq!(
        first_line("layer0.mlp.up_states"),
        "layer0.mlp.up_states (1, 64, 8192) bf16 = 1.00 MiB"
    );
    // q, k and v are slices of qkv: each slice's gradient is a zero tensor of qkv's whole
    // shape (SliceBackward), (B, T, 3·3072) bf16 = 1·64·9216·2 = 1.125 MiB.
    assert_eq!(
        first_line("layer0.self_attn.query_states.grad"),
        "layer0.self_attn.query_states.grad (1, 64, 9216) bf16 = 1.12 MiB"
    );
    assert_eq!(
        first_line("layer0.self_attn.value_states.grad"),
        "layer0.self_attn.value_states.grad (1, 64, 9216) bf16 = 1.12 MiB"
    );
}
