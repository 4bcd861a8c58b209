//! The Hugging Face architectures from the files people have: presets and config.json files
//! give the published parameter counts (by arithmetic and as the simulator's tensors), bad
//! files are exit-2 errors, every knob runs without leaking a tensor, and the numbers people
//! know hold (Llama-3.1-8B with AdamW does not fit an 80 GB card).

use crate::support::cli::vramplan;
use crate::support::hf::preset;
use crate::support::sim::run;
use std::path::Path;
use vramplan::config::{load_with_model, ModelSource, ModelType, TrainConfig};
use vramplan::model::n_params;
use vramplan::sim::{Category, Timeline};

fn hf(file: &str) -> vramplan::error::Result<TrainConfig> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hf")
        .join(file);
    Ok(load_with_model(None, Some(ModelSource::HfConfig(&path)), &[])?.config)
}

/// Parameters the simulator put on the device (buffers excluded).
fn simulated_params(tl: &Timeline) -> u64 {
    tl.tensors
        .iter()
        .filter(|t| t.category == Category::Parameters && t.name.module != "attn.bias")
        .map(|t| t.shape.numel().unwrap())
        .sum()
}

/// The published counts (the models' own `num_parameters()`), each checked against the
/// config arithmetic in the preset's comment.
const PUBLISHED: &[(&str, u64)] = &[
    ("gpt2", 124_439_808),
    ("gpt2-medium", 354_823_168),
    ("gpt2-large", 774_030_080),
    ("gpt2-xl", 1_557_611_200),
    ("llama-3.2-1b", 1_235_814_400),
    ("llama-3.2-3b", 3_212_749_824),
    ("llama-3.1-8b", 8_030_261_248),
    ("mistral-7b", 7_241_732_096),
    ("qwen2.5-0.5b", 494_032_768),
    ("qwen2.5-1.5b", 1_543_714_304),
    ("qwen2.5-7b", 7_615_616_512),
    ("gemma-2b", 2_506_172_416),
    ("qwen3-0.6b", 596_049_920),
    ("qwen3-8b", 8_190_735_360),
    ("phi-3-mini-4k", 3_821_079_552),
    ("pythia-1b", 1_011_781_632),
    // Derived field by field in models_gemma2_olmo2.rs.
    ("gemma-2-2b", 2_614_341_888),
    ("gemma-2-9b", 9_241_705_984),
    ("gemma-3-1b", 999_885_952),
    ("olmo-2-7b", 7_298_617_344),
    // Derived field by field in models_moe.rs.
    ("mixtral-8x7b", 46_702_792_704),
    ("qwen3-30b-a3b", 30_532_122_624),
    // Derived field by field in models_qwen2_moe.rs.
    ("qwen1.5-moe-a2.7b", 14_315_784_192),
];

#[test]
fn presets_have_the_published_parameter_counts() {
    for (name, want) in PUBLISHED {
        let c = preset(name, &["--batch_size=1"]);
        assert_eq!(n_params(&c), *want, "{name}: model::n_params");
        let tl = run(&c);
        assert_eq!(simulated_params(&tl), *want, "{name}: simulated tensors");
        // fp32 master weights: 4 bytes each.
        let bytes: u64 = tl
            .tensors
            .iter()
            .filter(|t| t.category == Category::Parameters && t.name.module != "attn.bias")
            .map(|t| t.bytes)
            .sum();
        assert_eq!(bytes, 4 * want, "{name}: parameter bytes");
    }
}

#[test]
fn hf_config_files_give_the_presets_shapes() {
    let pairs = [
        ("gpt2.json", "gpt2"),
        ("llama-3.2-1b.json", "llama-3.2-1b"),
        ("llama-3.1-8b.json", "llama-3.1-8b"),
        ("mistral-7b.json", "mistral-7b"),
        ("qwen2.5-0.5b.json", "qwen2.5-0.5b"),
        ("qwen2.5-7b.json", "qwen2.5-7b"),
        ("gemma-2b.json", "gemma-2b"),
        ("qwen3-0.6b.json", "qwen3-0.6b"),
        ("qwen3-8b.json", "qwen3-8b"),
        ("phi-3-mini-4k.json", "phi-3-mini-4k"),
        ("pythia-1b.json", "pythia-1b"),
        ("gemma-2-2b.json", "gemma-2-2b"),
        ("gemma-2-9b.json", "gemma-2-9b"),
        ("gemma-3-1b.json", "gemma-3-1b"),
        ("olmo-2-7b.json", "olmo-2-7b"),
        ("mixtral-8x7b.json", "mixtral-8x7b"),
        ("qwen3-30b-a3b.json", "qwen3-30b-a3b"),
        ("qwen1.5-moe-a2.7b.json", "qwen1.5-moe-a2.7b"),
    ];
    for (file, name) in pairs {
        let a = hf(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let b = preset(name, &[]);
        assert_eq!(n_params(&a), n_params(&b), "{file}");
        let shape = |c: &TrainConfig| {
            (
                c.model_type,
                c.n_layer,
                c.n_head,
                c.kv_heads(),
                c.head_size(),
                c.n_embd,
                c.mlp_width(),
                c.vocab_size,
                c.tie_word_embeddings,
                c.bias,
                c.rotary_dim(),
                c.parallel_residual,
            )
        };
        assert_eq!(shape(&a), shape(&b), "{file} vs {name}");
        // Gemma's soft-capping and sliding window, read from the file as the preset has them.
        let attention = |c: &TrainConfig| {
            (
                c.attn_softcap,
                c.final_softcap,
                c.sliding_window,
                c.global_every,
            )
        };
        assert_eq!(attention(&a), attention(&b), "{file} vs {name}");
    }
    assert_eq!(hf("gemma-2b.json").unwrap().model_type, ModelType::Gemma);
}

#[test]
fn unknown_model_type_and_bad_files_are_errors_naming_what_is_supported() {
    let e = hf("bert-base.json").unwrap_err().to_string();
    assert!(e.contains("bert-base.json:5: model_type = \"bert\""), "{e}");
    for m in [
        "'llama'",
        "'mistral'",
        "'qwen2'",
        "'gemma'",
        "'gpt_neox'",
        "'gpt2'",
    ] {
        assert!(e.contains(m), "{e}");
    }
    let e = load_with_model(None, Some(ModelSource::Preset("llama-9")), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown model") && e.contains("llama-3.1-8b"),
        "{e}"
    );
    // An organisation prefix and case are ignored.
    assert_eq!(preset("meta-llama/Llama-3.1-8B", &[]).n_layer, 32);
    assert_eq!(preset("mistralai/Mistral-7B-v0.1", &[]).vocab_size, 32000);
    // n_kv_head must divide n_head.
    let o = vec!["--n_kv_head=5".to_string()];
    let e = load_with_model(None, Some(ModelSource::Preset("llama-3.2-1b")), &o)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("n_kv_head = 5: expected a divisor of n_head = 32"),
        "{e}"
    );
    // nanoGPT's GPT has no grouped-query attention.
    let mut c = TrainConfig::default();
    let e = vramplan::config::apply_overrides(&mut c, &["--n_kv_head=4".to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("model_type = 'gpt2'"), "{e}");
}

#[test]
fn cli_model_and_hf_config_flags() {
    // Full fine-tuning of Llama-3.1-8B with AdamW: 16 bytes per parameter of model states
    // alone (fp32 weights, grads, two moments) is 119.7 GiB — no 80 GB card holds it.
    let (code, out, err) = vramplan(&[
        "check",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "a100-80gb",
        "--batch_size=1",
        "--compile=False",
        "--json",
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["fits"], false);
    assert_eq!(v["n_params"].as_u64(), Some(8_030_261_248));
    assert!(v["peak"]["allocated_bytes"].as_u64().unwrap() > 16 * 8_030_261_248);
    let (code, out, err) = vramplan(&[
        "check",
        "--hf-config",
        "fixtures/hf/qwen2.5-0.5b.json",
        "--gpu",
        "a100-80gb",
        "--batch_size=2",
        "--block_size=512",
        "--compile=False",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.starts_with("qwen2: 24 layers, 14 heads (2 key/value)"),
        "{out}"
    );
    let (code, _, err) = vramplan(&["check", "--hf-config", "fixtures/hf/bert-base.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected one of"), "{err}");
    let (code, _, err) = vramplan(&["check", "--model", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("llama-3.1-8b"), "{err}");
}

#[test]
fn every_knob_runs_and_nothing_outlives_the_run() {
    let small = [
        "--n_layer=2",
        "--n_embd=128",
        "--n_head=4",
        "--n_kv_head=4",
        "--intermediate_size=320",
        "--vocab_size=1000",
        "--block_size=64",
        "--batch_size=2",
        "--gradient_accumulation_steps=2",
        "--compile=False",
    ];
    let models = ["llama-3.2-1b", "qwen2.5-0.5b", "gemma-2b", "pythia-1b"];
    let knobs: &[&[&str]] = &[
        &[],
        &["--n_kv_head=2"],
        &["--flash=False"],
        &["--flash=False", "--n_kv_head=1"],
        &["--dtype=float32"],
        &["--dtype=float32", "--n_kv_head=2"],
        &["--activation_checkpointing=True"],
        &["--activation_checkpointing=True", "--flash=False"],
        &["--loss=chunked"],
        &["--tie_word_embeddings=False"],
        &["--optimizer=adamw8bit"],
        &["--lora_rank=4"],
        &[
            "--lora_rank=4",
            "--lora_targets=all-linear",
            "--lora_dropout=0.1",
        ],
        &["--lora_rank=4", "--activation_checkpointing=True"],
        &["--lora_rank=4", "--flash=False", "--loss=chunked"],
        &["--lora_rank=4", "--dtype=float32"],
    ];
    for m in models {
        for k in knobs {
            let mut o: Vec<&str> = small.to_vec();
            if m == "gemma-2b" || m == "pythia-1b" {
                o.push("--head_dim=32");
            }
            if m == "pythia-1b" && k.iter().any(|x| x.starts_with("--n_kv_head")) {
                continue;
            }
            o.extend_from_slice(k);
            let c = preset(m, &o);
            let tl = run(&c);
            for t in tl.live_after(tl.events.len() - 1) {
                let r = &tl.tensors[t as usize];
                let expected = matches!(
                    r.category,
                    Category::Parameters | Category::Optimizer | Category::Workspace
                ) || r.name.module == "batch"
                    || r.name.module == "rotary_emb"
                    || (r.name.module == "loss" && r.name.what == "scaled")
                    || (r.name.module == "lm_head" && r.name.what == "logits");
                assert!(expected, "{m} {k:?}: {} {} still alive", r.name, r.shape);
            }
        }
    }
}
