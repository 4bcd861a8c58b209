//! Every class of bad input is an `Error` whose one-line message names the file and line (or
//! the override, or the key) and says what was expected. Fixtures: fixtures/configs/bad/.

use std::path::{Path, PathBuf};
use vramplan::config::{apply_overrides, load, load_str, TrainConfig};

fn bad(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/configs/bad")
        .join(name)
}

/// The error message of loading a bad fixture; asserts it names the file and is one line.
fn error_of(name: &str) -> String {
    let e = load(Some(&bad(name)), &[]).expect_err(name).to_string();
    assert!(
        e.contains(&format!("bad/{name}")),
        "{name}: message does not name the file: {e}"
    );
    assert!(!e.contains('\n'), "{name}: message is not one line: {e}");
    e
}

fn override_error(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut c = TrainConfig::default();
    let e = apply_overrides(&mut c, &args)
        .expect_err("override should fail")
        .to_string();
    assert_eq!(
        c,
        TrainConfig::default(),
        "a failed override must leave the config as it was"
    );
    e
}

#[test]
fn unknown_key_names_line_and_closest_key() {
    let e = error_of("unknown_key.py");
    assert!(
        e.contains("unknown_key.py:3: unknown key 'batchsize' (did you mean 'batch_size'?)"),
        "{e}"
    );
    let e = override_error(&["--n_embed=512"]);
    assert!(
        e.starts_with("override --n_embed=512: unknown key 'n_embed' (did you mean 'n_embd'?)"),
        "{e}"
    );
    let e = load_str("x.toml", "gradient_accumulation = 4\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("x.toml:1: unknown key 'gradient_accumulation' (did you mean 'gradient_accumulation_steps'?)"), "{e}");
}

#[test]
fn non_literal_memory_key_is_an_error_naming_the_line() {
    let e = error_of("non_literal_memory.py");
    assert!(
        e.contains(
            "non_literal_memory.py:3: `batch_size = int(os.environ[\"BS\"])` calls a function"
        ),
        "{e}"
    );
    assert!(
        e.contains("batch_size changes memory: expected a literal"),
        "{e}"
    );
    // ... unless an override sets it, as it would in nanoGPT.
    let l = load(
        Some(&bad("non_literal_memory.py")),
        &["--batch_size=4".to_string()],
    )
    .unwrap();
    assert_eq!(l.config.batch_size, 4);
}

#[test]
fn heads_must_divide_the_width() {
    let e = error_of("heads_do_not_divide.toml");
    assert!(e.contains("heads_do_not_divide.toml:3: n_embd = 768 is not divisible by n_head = 7: expected n_embd % n_head == 0"), "{e}");
    let e = override_error(&["--n_embd=100"]);
    assert!(
        e.starts_with("override --n_embd=100: n_embd = 100 is not divisible by n_head = 12"),
        "{e}"
    );
}

#[test]
fn zero_and_negative_sizes() {
    let e = error_of("zero_batch.py");
    assert!(
        e.contains("zero_batch.py:1: batch_size = 0: expected a positive integer"),
        "{e}"
    );
    let e = error_of("negative_layers.py");
    assert!(
        e.contains("negative_layers.py:1: n_layer = -2: expected a positive integer"),
        "{e}"
    );
    let e = error_of("eval_batch_zero.toml");
    assert!(
        e.contains("eval_batch_zero.toml:1: eval_batch_size = 0: expected a positive integer"),
        "{e}"
    );
    let e = error_of("world_size_zero.toml");
    assert!(
        e.contains("world_size_zero.toml:1: world_size = 0: expected a positive integer"),
        "{e}"
    );
    let e = override_error(&["--block_size=-1"]);
    assert!(
        e.starts_with("override --block_size=-1: block_size = -1: expected a positive integer"),
        "{e}"
    );
}

#[test]
fn dropout_outside_zero_one() {
    let e = error_of("dropout.toml");
    assert!(
        e.contains("dropout.toml:1: dropout = 1.5: expected a probability in [0, 1)"),
        "{e}"
    );
    let e = override_error(&["--dropout=-0.1"]);
    assert!(
        e.starts_with("override --dropout=-0.1: dropout = -0.1: expected a finite number >= 0"),
        "{e}"
    );
}

#[test]
fn unknown_dtype_lists_the_three() {
    let e = error_of("dtype.py");
    assert!(
        e.contains("dtype.py:1: dtype = 'bf16': expected one of 'float32', 'bfloat16', 'float16'"),
        "{e}"
    );
}

#[test]
fn absurd_sizes_and_overflow() {
    let e = error_of("absurd.toml");
    assert!(
        e.contains("absurd.toml:1: n_embd = 2199023255552: expected at most 131072 model width"),
        "{e}"
    );
    let e = error_of("overflow.py");
    assert!(e.contains("overflow.py:5: block_size = 16777216: with batch_size = 8, n_head = 1024, n_layer = 1024, the attention scores"), "{e}");
    assert!(e.contains("overflow 64 bits"), "{e}");
    let e = override_error(&["--n_layer=2**100"]);
    assert!(
        e.contains("n_layer = '2**100': expected an int, got a str"),
        "{e}"
    );
    let e = load_str("x.py", "n_layer = 2 ** 200\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("x.py:1: `n_layer = 2 ** 200` makes an integer too large"),
        "{e}"
    );
}

#[test]
fn wrong_types() {
    let e = error_of("wrong_type.toml");
    assert!(
        e.contains("wrong_type.toml:1: batch_size = '12': expected an int, got a str"),
        "{e}"
    );
    let e = override_error(&["--compile=yes"]);
    assert!(
        e.starts_with("override --compile=yes: compile = 'yes': expected True or False, got a str"),
        "{e}"
    );
    let e = override_error(&["--batch_size=8.0"]);
    assert!(
        e.contains("batch_size = 8.0: expected an int, got a float"),
        "{e}"
    );
    let e = override_error(&["--max_iters=1e5"]);
    assert!(
        e.contains("max_iters = 100000.0: expected an int, got a float"),
        "{e}"
    );
}

#[test]
fn toml_tables_are_refused() {
    let e = error_of("table.toml");
    assert!(e.contains("table.toml:3: [model] is a table"), "{e}");
}

#[test]
fn unreadable_and_unknown_formats() {
    let e = load(Some(Path::new("/nonexistent/run.py")), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/run.py: cannot read the config file"),
        "{e}"
    );
    let e = load_str("run.cfg", "!!! not a config\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("run.cfg: cannot tell the config format"),
        "{e}"
    );
    let e = load_str("x.py", "batch_size = 12\n  n_layer = 2\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("x.py:2: unexpected indent"), "{e}");
}

#[test]
fn invalid_init_from_and_alloc_conf() {
    let e = load_str("x.py", "init_from = 'gpt3'\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("x.py:1: init_from = 'gpt3': expected one of 'scratch', 'resume', 'gpt2'"),
        "{e}"
    );
    let e = override_error(&["--alloc_conf=expandable_segment:True"]);
    assert!(e.contains("expected PyTorch allocator options"), "{e}");
    assert!(e.contains("got 'expandable_segment'"), "{e}");
}

#[test]
fn block_assignments_of_memory_keys_need_a_literal() {
    let src = "import torch\nif torch.cuda.is_available():\n    dtype = 'bfloat16'\n";
    let e = load_str("x.py", src, &[]).unwrap_err().to_string();
    assert!(
        e.starts_with("x.py:3: `dtype = 'bfloat16'` is assigned inside an `if` block"),
        "{e}"
    );
    let l = load_str("x.py", src, &["--dtype=float16".to_string()]).unwrap();
    assert_eq!(l.config.dtype.as_str(), "float16");
}

#[test]
fn messages_stay_one_short_line_for_huge_values() {
    let huge = "x".repeat(1 << 20);
    for src in [
        format!("dtype = '{huge}'\n"),
        format!("init_from = '{huge}'\n"),
        format!("{huge} = 1\n"),
    ] {
        let e = load_str("x.py", &src, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("x.py:1: ") && e.len() < 500 && !e.contains('\n'),
            "{}",
            &e[..e.len().min(300)]
        );
    }
    let e = override_error(&[&format!("--batch_size={huge}")]);
    assert!(e.len() < 500, "{}", &e[..300]);
}

#[test]
fn configs_built_in_code_validate_too() {
    TrainConfig::default().validate().unwrap();
    let c = TrainConfig {
        n_head: 5,
        ..TrainConfig::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("n_embd = 768 is not divisible by n_head = 5"),
        "{e}"
    );
}

#[test]
fn combinations_without_a_policy_are_refused_not_guessed() {
    let err = |model: &str, o: &[&str]| {
        let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        vramplan::config::load_with_model(
            None,
            Some(vramplan::config::ModelSource::Preset(model)),
            &o,
        )
        .expect_err("should be refused")
        .to_string()
    };
    let e = err("llama-3.2-1b", &["--mode=inference", "--world_size=2"]);
    assert!(
        e.contains("world_size = 2: expected 1 with mode = 'inference'"),
        "{e}"
    );
    // LoRA shards under FSDP and ZeRO now; LLM.int8()'s weights cannot be sharded.
    let e = err(
        "llama-3.2-1b",
        &[
            "--lora_rank=8",
            "--quantization=int8",
            "--world_size=2",
            "--parallelism=fsdp",
            "--gradient_accumulation_steps=2",
        ],
    );
    assert!(
        e.contains("quantization = 'int8': expected 'nf4' or 'fp4' with parallelism = 'fsdp'"),
        "{e}"
    );
    let e = err(
        "llama-3.2-1b",
        &[
            "--world_size=2",
            "--parallelism=fsdp",
            "--offload_optimizer=True",
            "--gradient_accumulation_steps=2",
        ],
    );
    assert!(
        e.contains("offload_optimizer = True: expected parallelism = 'zero2' or 'zero3'"),
        "{e}"
    );
    // DDP with LoRA is what people run, and it is simulated.
    let o: Vec<String> = [
        "--lora_rank=8",
        "--world_size=2",
        "--gradient_accumulation_steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert!(vramplan::config::load_with_model(
        None,
        Some(vramplan::config::ModelSource::Preset("llama-3.2-1b")),
        &o
    )
    .is_ok());
}

/// Programs (the Python wheel, scripts) read what went wrong from the error's kind, not its
/// message: the key or the path it is about.
#[test]
fn errors_carry_their_kind_and_the_key_or_path() {
    use vramplan::error::ErrorKind;
    let kind =
        |r: vramplan::error::Result<vramplan::config::Loaded>| r.err().unwrap().kind().clone();
    assert_eq!(
        kind(load_str("x.py", "batch_size = -3\n", &[])),
        ErrorKind::BadValue {
            key: "batch_size".into()
        }
    );
    assert_eq!(
        kind(load_str("x.py", "batchsize = 8\n", &[])),
        ErrorKind::UnknownKey {
            key: "batchsize".into()
        }
    );
    assert_eq!(
        kind(load(None, &["--n_layr=4".to_string()])),
        ErrorKind::UnknownKey {
            key: "n_layr".into()
        }
    );
    let missing = bad("no-such-file.py");
    assert_eq!(
        kind(load(Some(&missing), &[])),
        ErrorKind::File {
            path: missing.display().to_string()
        }
    );
    // A file that is not what it should be is about the file, whatever line broke.
    assert_eq!(
        kind(load_str("x.toml", "batch_size = = 8\n", &[])),
        ErrorKind::File {
            path: "x.toml".into()
        }
    );
    let gpu = vramplan::budget::find("no-such-card").unwrap_err();
    assert_eq!(gpu.kind(), &ErrorKind::Gpu);
    assert!(!gpu.to_string().contains('\n'));
}
