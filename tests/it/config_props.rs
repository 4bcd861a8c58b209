//! Properties: no input makes the loaders panic, and configs survive the round trips that
//! `suggest` and the TOML writer rely on.

use proptest::prelude::*;
use vramplan::config::{apply_overrides, load_str, to_overrides, to_toml, TrainConfig};

/// Lines that look like config files, so the fuzzing reaches past the first syntax error.
fn configish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "[a-z_]{1,28} ?[-+*/]?= ?[-+*/%() 0-9.eE_a-zA-Z'\"\\[\\]:,]{0,24}",
        "(batch_size|n_head|n_embd|dtype|init_from|dataset|vocab_size|dropout|block_size) = [-0-9.e*+/() 'a-z_]{0,16}",
        "(import|from|if|else:|for|def|    |\t|#)[ -~]{0,20}",
        "[ -~]{0,30}",
        Just("'''".to_string()),
        Just("\\".to_string()),
        Just("[model]".to_string()),
    ];
    prop::collection::vec(line, 0..10).prop_map(|ls| ls.join("\n"))
}

fn overrides_for_a_config() -> impl Strategy<Value = Vec<String>> {
    let heads = prop::sample::select(vec![1u64, 2, 4, 6, 8, 12, 16]);
    (
        (
            1u64..256,
            1u64..5,
            1u64..40,
            heads,
            1u64..8,
            prop::sample::select(vec![64u64, 128, 256, 1024, 2048]),
        ),
        prop::sample::select(vec!["scratch", "resume", "gpt2", "gpt2-medium", "gpt2-xl"]),
        prop::sample::select(vec![
            "openwebtext",
            "shakespeare_char",
            "shakespeare",
            "'my data'",
            "'12'",
        ]),
        prop::option::of(1u64..60000),
        prop::sample::select(vec!["float32", "bfloat16", "float16"]),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (
            prop::option::of(1u64..64),
            prop::option::of(Just("expandable_segments:True")),
            0u32..9,
            1u64..5,
        ),
        prop::sample::select(vec!["adamw", "adamw8bit", "sgd"]),
    )
        .prop_map(
            |(
                (batch, layers_x, accum, heads, width_x, block),
                init,
                dataset,
                vocab,
                dtype,
                flags,
                opt,
                optimizer,
            )| {
                let (eval_bs, alloc, dropout_tenths, world) = opt;
                let mut o = vec![
                    format!("--batch_size={batch}"),
                    format!("--n_layer={}", layers_x * 3),
                    format!("--n_head={heads}"),
                    format!("--n_embd={}", heads * 16 * width_x),
                    format!("--block_size={block}"),
                    format!("--init_from={init}"),
                    format!("--dataset={dataset}"),
                    format!("--dtype={dtype}"),
                    format!("--compile={}", if flags.0 { "True" } else { "False" }),
                    format!("--flash={}", if flags.1 { "True" } else { "False" }),
                    format!("--bias={}", if flags.2 { "True" } else { "False" }),
                    format!("--dropout={}", f64::from(dropout_tenths) / 10.0),
                    format!("--world_size={world}"),
                    format!("--gradient_accumulation_steps={}", accum * world),
                    format!("--optimizer={optimizer}"),
                ];
                if let Some(v) = vocab {
                    o.push(format!("--vocab_size={v}"));
                }
                if let Some(e) = eval_bs {
                    o.push(format!("--eval_batch_size={e}"));
                }
                if let Some(a) = alloc {
                    o.push(format!("--alloc_conf={a}"));
                }
                o
            },
        )
}

fn config_from(overrides: &[String]) -> TrainConfig {
    let mut c = TrainConfig::default();
    apply_overrides(&mut c, overrides).unwrap_or_else(|e| panic!("{overrides:?}: {e}"));
    c
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}", configish in configish()) {
        for name in ["x.py", "x.toml", "x.cfg"] {
            let _ = load_str(name, &text, &[]);
            let _ = load_str(name, &configish, &[]);
        }
    }

    #[test]
    fn arbitrary_overrides_never_panic(value in "\\PC{0,40}", key in "[a-z_]{0,30}", raw in "\\PC{0,60}") {
        let mut c = TrainConfig::default();
        let _ = apply_overrides(&mut c, std::slice::from_ref(&raw));
        let _ = apply_overrides(&mut c, &[format!("--{key}={value}")]);
        for k in vramplan::config::key_table().iter().map(|r| r.0) {
            let mut c = TrainConfig::default();
            let _ = apply_overrides(&mut c, &[format!("--{k}={value}")]);
        }
        let _ = load_str("x.py", "batch_size = 8\n", &[raw]);
    }

    #[test]
    fn to_overrides_round_trips(c in overrides_for_a_config(), base in overrides_for_a_config()) {
        let (c, base) = (config_from(&c), config_from(&base));
        let args = to_overrides(&c, &base);
        let mut back = base.clone();
        apply_overrides(&mut back, &args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        prop_assert_eq!(back, c, "{:?}", args);
    }

    #[test]
    fn to_toml_round_trips(c in overrides_for_a_config()) {
        let c = config_from(&c);
        let text = to_toml(&c);
        let loaded = load_str("x.toml", &text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"));
        prop_assert_eq!(loaded.config, c);
        prop_assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}

#[test]
fn to_overrides_of_an_unchanged_config_is_empty() {
    let c = TrainConfig::default();
    assert!(to_overrides(&c, &c).is_empty());
}

#[test]
fn suggest_style_command_line() {
    let base = config_from(&[]);
    let c = config_from(&[
        "--batch_size=8".into(),
        "--gradient_accumulation_steps=8".into(),
    ]);
    assert_eq!(
        to_overrides(&c, &base),
        ["--gradient_accumulation_steps=8", "--batch_size=8"]
    );
}

#[test]
fn pathological_nesting_is_an_error_not_a_stack_overflow() {
    let deep = |open: &str, close: &str, n: usize| {
        format!("batch_size = {}1{}\n", open.repeat(n), close.repeat(n))
    };
    for src in [
        deep("(", ")", 100_000),
        deep("-", "", 100_000),
        deep("", " ** 2", 100_000),
        "(".repeat(100_000),
        "'''".repeat(3),
    ] {
        let e = load_str("x.py", &src, &[]).unwrap_err();
        assert!(
            e.message().starts_with("x.py:1:"),
            "{}",
            e.message().chars().take(200).collect::<String>()
        );
    }
    let mut c = TrainConfig::default();
    assert!(apply_overrides(&mut c, &[format!("--batch_size={}", "(".repeat(100_000))]).is_err());
}
