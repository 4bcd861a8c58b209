//! Issue #18 item 5, model types: Gemma 2, Gemma 3 (text) and OLMo 2. Each preset's parameter
//! count is derived by hand from its config.json (the arithmetic written out below, field by
//! field) and checked against the published figure; each mechanism (soft-capping, the four
//! norms, the sliding-window masks, q_norm/k_norm) is checked on a small config by the tensors
//! it adds, their bytes counted by hand, as the user reads them from the built binary.

use crate::support::cli::{explain, forward_end, json, vramplan};

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

/// Rounded to 10^7 as the model cards write "2.6B" (hundredths of a billion).
fn billions(n: u64) -> f64 {
    (n as f64 / 1e7).round() / 100.0
}

#[test]
fn gemma2_presets_count_what_config_json_gives_by_hand() {
    // google/gemma-2-2b config.json: hidden_size 2304, num_hidden_layers 26,
    // num_attention_heads 8, num_key_value_heads 4, head_dim 256, intermediate_size 9216,
    // vocab_size 256000, tied. Per layer: q_proj 2304·(8·256) + k_proj, v_proj 2·2304·(4·256)
    // + o_proj (8·256)·2304 + gate, up, down 3·2304·9216 + four RMSNorms 4·2304.
    let layer_2b = 2304 * 2048 + 2 * 2304 * 1024 + 2048 * 2304 + 3 * 2304 * 9216 + 4 * 2304;
    assert_eq!(layer_2b, 77_865_984);
    let want_2b = 256_000 * 2304 + 26 * layer_2b + 2304;
    assert_eq!(want_2b, 2_614_341_888);
    // The model card: "2.6B" (2,614,341,888 as the Hub's safetensors metadata lists it).
    assert_eq!(billions(want_2b), 2.61);
    // google/gemma-2-9b: hidden 3584, 42 layers, 16 heads, 8 kv heads, head_dim 256,
    // intermediate 14336, vocab 256000, tied.
    let layer_9b = 3584 * 4096 + 2 * 3584 * 2048 + 4096 * 3584 + 3 * 3584 * 14336 + 4 * 3584;
    assert_eq!(layer_9b, 198_195_200);
    let want_9b = 256_000 * 3584 + 42 * layer_9b + 3584;
    assert_eq!(want_9b, 9_241_705_984);
    for (args, want) in [
        (&["--model", "gemma-2-2b"][..], want_2b),
        (&["--model", "google/gemma-2-2b-it"][..], want_2b),
        (&["--hf-config", "fixtures/hf/gemma-2-2b.json"][..], want_2b),
        (&["--model", "google/gemma-2-9b"][..], want_9b),
        (&["--hf-config", "fixtures/hf/gemma-2-9b.json"][..], want_9b),
    ] {
        assert_eq!(n_params(args), want, "{args:?}");
    }
    let (_, out, _) = vramplan(&["check", "--model", "gemma-2-2b", "--batch_size=1"]);
    assert!(
        out.starts_with("gemma2: 26 layers, 8 heads (4 key/value), n_embd 2304, vocab 256000 — 2614.3M parameters"),
        "{out}"
    );
}

#[test]
fn gemma3_and_olmo2_presets_count_what_config_json_gives_by_hand() {
    // google/gemma-3-1b-pt config.json (Gemma3ForCausalLM): hidden 1152, 26 layers, 4 heads,
    // 1 kv head, head_dim 256, intermediate 6912, vocab 262144, tied. Per layer: q 1152·1024,
    // k and v 2·1152·256, o 1024·1152, MLP 3·1152·6912, four norms 4·1152, q_norm and k_norm
    // 2·256.
    let layer_1b = 1152 * 1024 + 2 * 1152 * 256 + 1024 * 1152 + 3 * 1152 * 6912 + 4 * 1152 + 512;
    assert_eq!(layer_1b, 26_842_112);
    let embed_1b = 262_144 * 1152;
    let want_1b = embed_1b + 26 * layer_1b + 1152;
    assert_eq!(want_1b, 999_885_952);
    // The Gemma 3 technical report, table 1: 302M embedding, 698M non-embedding parameters.
    assert_eq!((embed_1b as f64 / 1e6).round(), 302.0);
    assert_eq!(((want_1b - embed_1b) as f64 / 1e6).round(), 698.0);
    // google/gemma-3-4b-it (Gemma3ForConditionalGeneration): its text_config lists hidden 2560,
    // intermediate 10240, 34 layers; the rest are Gemma3TextConfig's defaults (8 heads, 4 kv
    // heads, head_dim 256, vocab 262208). Per layer: q 2560·2048, k and v 2·2560·1024, o
    // 2048·2560, MLP 3·2560·10240, four norms 4·2560, q_norm and k_norm 2·256.
    let layer_4b = 2560 * 2048 + 2 * 2560 * 1024 + 2048 * 2560 + 3 * 2560 * 10240 + 4 * 2560 + 512;
    let want_4b_text = 262_208 * 2560 + 34 * layer_4b + 2560;
    assert_eq!(want_4b_text, 3_880_263_168);
    // The report's 3,209M non-embedding parameters for the 4B.
    assert_eq!(((34 * layer_4b + 2560) as f64 / 1e6).round(), 3209.0);
    // allenai/OLMo-2-1124-7B config.json: hidden 4096, 32 layers, 32 heads and kv heads,
    // intermediate 11008, vocab 100352, untied. Per layer: q, k, v, o 4·4096², MLP
    // 3·4096·11008, post-attention and post-feedforward norms 2·4096, q_norm over all of q
    // (4096) and k_norm over all of k (32·128 = 4096).
    let layer_7b = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096 + 4096 + 4096;
    assert_eq!(layer_7b, 202_391_552);
    let want_7b = 2 * 100_352 * 4096 + 32 * layer_7b + 4096;
    assert_eq!(want_7b, 7_298_617_344);
    // The model card: "7B" (7.30B).
    assert_eq!(billions(want_7b), 7.3);
    for (args, want) in [
        (&["--model", "gemma-3-1b"][..], want_1b),
        (&["--model", "google/gemma-3-1b-it"][..], want_1b),
        (&["--hf-config", "fixtures/hf/gemma-3-1b.json"][..], want_1b),
        (
            &["--hf-config", "fixtures/hf/gemma-3-4b.json"][..],
            want_4b_text,
        ),
        (&["--model", "olmo-2-7b"][..], want_7b),
        (&["--model", "allenai/OLMo-2-1124-7B"][..], want_7b),
        (&["--hf-config", "fixtures/hf/olmo-2-7b.json"][..], want_7b),
    ] {
        assert_eq!(n_params(args), want, "{args:?}");
    }
    // The multimodal config says what it leaves out.
    let (code, out, err) = vramplan(&[
        "check",
        "--hf-config",
        "fixtures/hf/gemma-3-4b.json",
        "--batch_size=1",
        "--block_size=64",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        format!("{out}{err}")
            .contains("the vision tower (vision_config) and the multimodal projector are not"),
        "{out}{err}"
    );
}

/// A small Gemma 2: 2 layers, 2 heads (1 kv head) of 32, width 64, MLP 128, vocabulary 1000,
/// batch 2 × 16 tokens in bf16 autocast, the preset's soft-capping (50, 30) and window.
const SMALL_GEMMA2: &[&str] = &[
    "--model",
    "gemma-2-2b",
    "--n_layer=2",
    "--n_embd=64",
    "--n_head=2",
    "--n_kv_head=1",
    "--head_dim=32",
    "--intermediate_size=128",
    "--vocab_size=1000",
    "--batch_size=2",
    "--block_size=16",
    "--dtype=bfloat16",
];

#[test]
fn gemma2_soft_capping_keeps_tanh_results_until_the_backward() {
    // eager_attention_forward (modeling_gemma2.py): scores / 50, tanh, * 50 on each layer's
    // (B, heads, T, T) scores in bf16 (the matmul's dtype under autocast; tanh is on none of
    // autocast's lists): 2·2·16·16·2 = 2048 bytes. TanhBackward keeps its result.
    let (first, life) = explain("layer1.self_attn.scores_tanh", SMALL_GEMMA2, &[]);
    assert_eq!(
        first,
        "layer1.self_attn.scores_tanh (2, 2, 16, 16) bf16 = 2.00 KiB"
    );
    assert_eq!(life, "2 x born in forward, freed in backward");
    // The divide's output goes as soon as tanh has run.
    let (_, life) = explain("layer0.self_attn.scores_div", SMALL_GEMMA2, &[]);
    assert_eq!(life, "2 x born in forward, freed in forward");
    // Gemma2ForCausalLM.forward: logits / 30, tanh, * 30 on the full (B, T, V) logits:
    // 2·16·1000·2 = 64000 bytes = 62.50 KiB, tanh's result kept through the backward.
    let (first, life) = explain("lm_head.softcap_tanh", SMALL_GEMMA2, &[]);
    assert_eq!(first, "lm_head.softcap_tanh (2, 16, 1000) bf16 = 62.50 KiB");
    assert_eq!(life, "2 x born in forward, freed in backward");
    // What the forward leaves for the backward grows by exactly those results: one (B, T, V)
    // tensor for the final cap (64000 bytes, 125 blocks of 512), one (B, heads, T, T) per
    // layer for the attention cap (2 · 2048).
    let capped = forward_end(SMALL_GEMMA2, &[]);
    let no_final = forward_end(SMALL_GEMMA2, &["--final_softcap=None"]);
    let no_attn = forward_end(SMALL_GEMMA2, &["--attn_softcap=None"]);
    assert_eq!(capped - no_final, 2 * 16 * 1000 * 2);
    assert_eq!(capped - no_attn, 2 * (2 * 2 * 16 * 16 * 2));
}

#[test]
fn gemma2_runs_eager_attention_with_a_full_and_a_sliding_mask() {
    // Gemma2PreTrainedModel._supports_sdpa = False: from_pretrained falls back to eager even
    // with flash=True (vramplan's default), and says why.
    let (code, v) = json(&[&["check", "--json"][..], SMALL_GEMMA2].concat());
    assert_eq!(code, 0);
    let attention = &v["decisions"]["attention"];
    assert_eq!(attention["value"], "eager", "{attention}");
    assert!(
        attention["source"]
            .as_str()
            .unwrap()
            .contains("_supports_sdpa = False"),
        "{attention}"
    );
    // Gemma2Model.forward builds causal_mask_mapping whole: create_causal_mask and
    // create_sliding_window_causal_mask, each (B, 1, T, T) in the embeddings' dtype under eager
    // (fp32 master weights): 2·1·16·16·4 = 2048 bytes each, locals of the model's forward.
    for mask in ["causal_mask", "sliding_mask"] {
        let (first, life) = explain(mask, SMALL_GEMMA2, &[]);
        assert_eq!(first, format!("{mask} (2, 1, 16, 16) fp32 = 2.00 KiB"));
        assert_eq!(life, "2 x born in forward, freed in forward");
    }
    // Four norms per layer: the feed-forward ones exist (Gemma's (1 + weight) in fp32).
    let (first, _) = explain(
        "layer0.post_feedforward_layernorm.weight",
        SMALL_GEMMA2,
        &[],
    );
    assert_eq!(
        first,
        "layer0.post_feedforward_layernorm.weight (64) fp32 = 256 bytes"
    );
}

/// A small Gemma 3 text model: 6 layers (5 sliding, 1 global), 4 heads (1 kv) of 32.
const SMALL_GEMMA3: &[&str] = &[
    "--model",
    "gemma-3-1b",
    "--n_layer=6",
    "--n_embd=64",
    "--n_head=4",
    "--n_kv_head=1",
    "--head_dim=32",
    "--intermediate_size=128",
    "--vocab_size=1000",
    "--batch_size=2",
    "--block_size=16",
    "--dtype=bfloat16",
];

#[test]
fn gemma3_normalizes_each_head_and_rotates_sliding_layers_with_their_own_tables() {
    // Gemma3Attention.forward: q_norm(q_proj(h).view(B, T, -1, hd).transpose(1, 2)), a Gemma
    // RMSNorm over head_dim whose `type_as(x)` returns the bf16 of q_proj's output:
    // (2, 4, 16, 32) bf16 = 8192 bytes; k: one head, 2048 bytes.
    let (first, _) = explain("layer0.self_attn.q_norm.out", SMALL_GEMMA3, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.q_norm.out (2, 4, 16, 32) bf16 = 8.00 KiB"
    );
    let (first, _) = explain("layer0.self_attn.k_norm.out", SMALL_GEMMA3, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.k_norm.out (2, 1, 16, 32) bf16 = 2.00 KiB"
    );
    // Gemma3TextModel.forward: position_embeddings per layer type — a second (cos, sin) pair
    // (rope_local_base_freq), (1, T, hd) fp32 = 16·32·4 = 2048 bytes each.
    let (first, _) = explain("local_rotary_emb.cos", SMALL_GEMMA3, &[]);
    assert_eq!(first, "local_rotary_emb.cos (1, 16, 32) fp32 = 2.00 KiB");
    // No soft-capping in the released configs; and Gemma3Attention never passes
    // attn_logit_softcapping to its attention function, so even eager with the key set has no
    // tanh. final_logit_softcapping, when set, is honoured (Gemma3ForCausalLM.forward).
    let eager_capped = ["--flash=False", "--attn_softcap=50.0"];
    let (code, _, err) = vramplan(
        &[
            &["explain", "layer0.self_attn.scores_tanh"][..],
            SMALL_GEMMA3,
            &eager_capped,
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = vramplan(&[&["explain", "lm_head.softcap_tanh"][..], SMALL_GEMMA3].concat());
    assert_eq!(code, 2);
    let (first, _) = explain(
        "lm_head.softcap_tanh",
        SMALL_GEMMA3,
        &["--final_softcap=30.0"],
    );
    assert_eq!(first, "lm_head.softcap_tanh (2, 16, 1000) bf16 = 62.50 KiB");
}

#[test]
fn gemma3_says_when_the_sliding_layers_change_kernel() {
    // gemma-3-1b slides over 512 tokens: at block_size 512 the sliding layers' SDPA gets an
    // explicit mask (masking_utils._ignore_causal_mask_sdpa returns False at kv_length >=
    // the window); below it, nothing changes.
    let run = |t: &str| {
        let (code, v) = json(&[
            "check",
            "--json",
            "--model",
            "gemma-3-1b",
            "--batch_size=1",
            t,
        ]);
        assert_eq!(code, 0);
        v["warnings"].to_string()
    };
    assert!(run("--block_size=512").contains("explicit (B, 1, T, T) mask"));
    assert!(!run("--block_size=511").contains("explicit (B, 1, T, T) mask"));
}

/// A small OLMo 2: 2 layers, 4 heads of 16 (2 kv heads), width 64.
const SMALL_OLMO2: &[&str] = &[
    "--model",
    "olmo-2-7b",
    "--n_layer=2",
    "--n_embd=64",
    "--n_head=4",
    "--n_kv_head=2",
    "--intermediate_size=128",
    "--vocab_size=1000",
    "--batch_size=2",
    "--block_size=16",
    "--dtype=bfloat16",
];

#[test]
fn olmo2_normalizes_whole_projections_and_each_sublayer_output() {
    // Olmo2Attention.forward: q_norm(q_proj(h)) over all 4·16 = 64 channels before the head
    // view; Olmo2RMSNorm's `(weight * x).to(input_dtype)` returns q_proj's bf16:
    // (2, 16, 64) bf16 = 4096 bytes; k_norm over 2·16 = 32 channels: 2048 bytes.
    let (first, _) = explain("layer0.self_attn.q_norm.out", SMALL_OLMO2, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.q_norm.out (2, 16, 64) bf16 = 4.00 KiB"
    );
    let (first, _) = explain("layer0.self_attn.k_norm.out", SMALL_OLMO2, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.k_norm.out (2, 16, 32) bf16 = 2.00 KiB"
    );
    // Its statistics are per token of the whole projection: rstd (2, 16, 1) fp32 = 128 bytes.
    let (first, _) = explain("layer0.self_attn.q_norm.rstd", SMALL_OLMO2, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.q_norm.rstd (2, 16, 1) fp32 = 128 bytes"
    );
    // The norms sit after the sublayers: post_attention_layernorm normalises o_proj's bf16
    // output, (2, 16, 64) bf16 = 4096 bytes; there is no input_layernorm.
    let (first, _) = explain("layer0.post_attention_layernorm.out", SMALL_OLMO2, &[]);
    assert_eq!(
        first,
        "layer0.post_attention_layernorm.out (2, 16, 64) bf16 = 4.00 KiB"
    );
    let (code, _, _) = vramplan(
        &[
            &["explain", "layer0.input_layernorm.weight"][..],
            SMALL_OLMO2,
        ]
        .concat(),
    );
    assert_eq!(code, 2);
}

#[test]
fn the_new_keys_and_types_are_refused_where_they_mean_nothing() {
    // Soft-capping on Llama: one line, exit 2, naming the key.
    let (code, _, err) = vramplan(&["check", "--model", "llama-3.2-1b", "--final_softcap=30.0"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("final_softcap"), "{err}");
    assert!(err.contains("only gemma2 and gemma3_text read it"), "{err}");
    // An unknown model_type lists every supported one, the new ones included.
    let dir = std::env::temp_dir().join(format!("vramplan-mt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, r#"{"model_type": "mamba", "hidden_size": 64}"#).unwrap();
    let (code, _, err) = vramplan(&["check", "--hf-config", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for t in ["'gemma2'", "'gemma3_text'", "'olmo2'", "'qwen3'", "'phi3'"] {
        assert!(err.contains(t), "{t}: {err}");
    }
    // A layer_types list that does not repeat is refused, not guessed.
    std::fs::write(
        &path,
        r#"{"model_type": "gemma2", "sliding_window": 8, "num_hidden_layers": 3,
            "layer_types": ["sliding_attention", "full_attention", "full_attention"]}"#,
    )
    .unwrap();
    let (code, _, err) = vramplan(&["check", "--hf-config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"layer_types\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gemma3_sliding_layers_cache_and_read_only_the_window_when_serving() {
    // Serving with a context of 16 and a window of 8: the sliding layers' cache keeps
    // min(8, 16) tokens (cache_utils.py's sliding-window layers), the global layer (the 6th)
    // all 16. k of layer 0: (2, 1, 8, 32) bf16 = 2·8·32·2 = 1024 bytes; layer 5's: 2048.
    let serve = [
        SMALL_GEMMA3,
        &["--mode=inference", "--sliding_window=8", "--flash=False"],
    ]
    .concat();
    let (first, _) = explain("layer0.kv_cache.k", &serve, &[]);
    assert_eq!(first, "layer0.kv_cache.k (2, 1, 8, 32) bf16 = 1.00 KiB");
    let (first, _) = explain("layer5.kv_cache.k", &serve, &[]);
    assert_eq!(first, "layer5.kv_cache.k (2, 1, 16, 32) bf16 = 2.00 KiB");
    // The decode step's eager scores read as much: (B, heads, 1, ctx) bf16, 2·4·1·8·2 = 128
    // bytes on a sliding layer, 256 on the global one.
    let (first, _) = explain("layer0.self_attn.decode.scores", &serve, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.decode.scores (2, 4, 1, 8) bf16 = 128 bytes"
    );
    let (first, _) = explain("layer5.self_attn.decode.scores", &serve, &[]);
    assert_eq!(
        first,
        "layer5.self_attn.decode.scores (2, 4, 1, 16) bf16 = 256 bytes"
    );
}

#[test]
fn gemma3_sliding_layers_past_the_window_run_sdpa_with_a_mask() {
    // block_size 16 >= sliding_window 8: create_sliding_window_causal_mask materialises a
    // boolean (1, 1, T, T) mask (batch expanded as a view): 16·16 = 256 bytes, a local of the
    // model's forward.
    let past = [SMALL_GEMMA3, &["--sliding_window=8"]].concat();
    let (first, life) = explain("sliding_mask", &past, &[]);
    assert_eq!(first, "sliding_mask (1, 1, 16, 16) bool = 256 bytes");
    assert_eq!(life, "2 x born in forward, freed in forward");
    // With a mask, sdpa_attention.py repeat_kv's k and v to the 4 query heads: the rotated k
    // is fp32 under autocast, (2, 4, 16, 32) fp32 = 16384 bytes; SDPA's autocast cast to bf16
    // is what the kernel keeps, so the fp32 copy goes with the forward.
    let (first, life) = explain("layer0.self_attn.k_repeat.out", &past, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.k_repeat.out (2, 4, 16, 32) fp32 = 16.00 KiB"
    );
    assert_eq!(life, "2 x born in forward, freed in forward");
    // scaled_dot_product_attention turns the boolean mask into an additive one in q's dtype,
    // (B, 1, T, T) bf16 = 2·16·16·2 = 1024 bytes, kept for the backward.
    let (first, life) = explain("layer0.self_attn.attn_bias", &past, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.attn_bias (2, 1, 16, 16) bf16 = 1.00 KiB"
    );
    assert_eq!(life, "2 x born in forward, freed in backward");
    // The kernel is the memory-efficient one (its logsumexp padded to 32 rows: 2·4·32·4 =
    // 1024 bytes); the global layer (the 6th) keeps flash (16 rows, 512 bytes).
    let (first, _) = explain("layer0.self_attn.sdpa.logsumexp", &past, &[]);
    assert_eq!(
        first,
        "layer0.self_attn.sdpa.logsumexp (2, 4, 32) fp32 = 1.00 KiB"
    );
    let (first, _) = explain("layer5.self_attn.sdpa.logsumexp", &past, &[]);
    assert_eq!(
        first,
        "layer5.self_attn.sdpa.logsumexp (2, 4, 16) fp32 = 512 bytes"
    );
    // Below the window nothing of this exists.
    let within = [SMALL_GEMMA3, &["--sliding_window=17"]].concat();
    let (code, _, _) =
        vramplan(&[&["explain", "layer0.self_attn.attn_bias"][..], &within].concat());
    assert_eq!(code, 2);
}
