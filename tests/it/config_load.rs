//! Loading nanoGPT's own config files (copied verbatim from karpathy/nanoGPT's config/) and
//! their TOML twins: the resolved values are the ones nanoGPT's train.py would run with.

use std::path::{Path, PathBuf};
use vramplan::config::{load, Loaded, Precision, TrainConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/configs")
        .join(name)
}

fn load_fixture(name: &str, overrides: &[&str]) -> Loaded {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load(Some(&fixture(name)), &overrides).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn shape(c: &TrainConfig) -> (u64, u64, u64, u64, u64, bool) {
    (
        c.n_layer,
        c.n_head,
        c.n_embd,
        c.block_size,
        c.vocab_size,
        c.bias,
    )
}

#[test]
fn no_file_is_nanogpts_train_py_defaults() {
    let l = load(None, &[]).unwrap();
    assert_eq!(l.source, "nanoGPT defaults");
    assert!(l.warnings.is_empty());
    let c = &l.config;
    assert_eq!(shape(c), (12, 12, 768, 1024, 50304, false));
    assert_eq!((c.batch_size, c.gradient_accumulation_steps), (12, 40));
    assert_eq!(
        (c.dropout, c.dtype, c.compile),
        (0.0, Precision::BFloat16, true)
    );
    assert_eq!(
        (c.eval_iters, c.eval_interval, c.init_from.as_str()),
        (200, 2000, "scratch")
    );
}

#[test]
fn train_gpt2_is_124m_with_5_times_8_accumulation() {
    // The file says `gradient_accumulation_steps = 5 * 8` (5 per GPU on 8 GPUs).
    let l = load_fixture("train_gpt2.py", &[]);
    let c = &l.config;
    assert_eq!(
        (c.batch_size, c.block_size, c.gradient_accumulation_steps),
        (12, 1024, 40)
    );
    assert_eq!(shape(c), (12, 12, 768, 1024, 50304, false));
    assert_eq!(
        (c.eval_interval, c.eval_iters, c.weight_decay),
        (1000, 200, 0.1)
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert!(l.source.ends_with("train_gpt2.py"));
}

#[test]
fn shakespeare_char_is_a_baby_gpt_with_65_chars() {
    let c = load_fixture("train_shakespeare_char.py", &[]).config;
    assert_eq!(shape(&c), (6, 6, 384, 256, 65, false));
    assert_eq!(
        (c.batch_size, c.gradient_accumulation_steps, c.dropout),
        (64, 1, 0.2)
    );
    assert_eq!(
        (c.eval_interval, c.dataset.as_str()),
        (250, "shakespeare_char")
    );
}

#[test]
fn finetune_shakespeare_loads_gpt2_xl_and_warns_about_the_run_name() {
    let l = load_fixture("finetune_shakespeare.py", &[]);
    let c = &l.config;
    assert_eq!(shape(c), (48, 25, 1600, 1024, 50257, true));
    assert_eq!(
        (
            c.batch_size,
            c.gradient_accumulation_steps,
            c.eval_iters,
            c.eval_interval
        ),
        (1, 32, 40, 5)
    );
    assert_eq!(c.init_from, "gpt2-xl");
    // `wandb_run_name = 'ft-' + str(time.time())` on line 8: not a literal, no memory effect.
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(
        l.warnings[0]
            .contains("finetune_shakespeare.py:8: `wandb_run_name = 'ft-' + str(time.time())`"),
        "{}",
        l.warnings[0]
    );
    assert!(l.warnings[0].contains("does not change memory"));
}

#[test]
fn eval_configs_take_the_gpt2_family_shapes() {
    for (file, want) in [
        ("eval_gpt2.py", (12, 12, 768)),
        ("eval_gpt2_medium.py", (24, 16, 1024)),
        ("eval_gpt2_large.py", (36, 20, 1280)),
        ("eval_gpt2_xl.py", (48, 25, 1600)),
    ] {
        let c = load_fixture(file, &[]).config;
        assert_eq!((c.n_layer, c.n_head, c.n_embd), want, "{file}");
        assert_eq!(
            (
                c.vocab_size,
                c.block_size,
                c.bias,
                c.batch_size,
                c.eval_iters,
                c.eval_only
            ),
            (50257, 1024, true, 8, 500, true),
            "{file}"
        );
    }
}

#[test]
fn seed_case_is_gpt2_124m_at_batch_64() {
    let c = load_fixture("seed-rtx3060.py", &[]).config;
    assert_eq!(shape(&c), (12, 12, 768, 1024, 50304, false));
    assert_eq!(
        (
            c.batch_size,
            c.gradient_accumulation_steps,
            c.dtype,
            c.compile
        ),
        (64, 1, Precision::BFloat16, true)
    );
    assert_eq!(c.eval_batch(), 64);
}

#[test]
fn toml_twins_equal_their_python_files() {
    for twin in [
        "train_gpt2",
        "train_shakespeare_char",
        "finetune_shakespeare",
        "seed-rtx3060",
    ] {
        let py = load_fixture(&format!("{twin}.py"), &[]).config;
        let toml = load_fixture(&format!("{twin}.toml"), &[]);
        assert_eq!(toml.config, py, "{twin}");
        assert!(toml.warnings.is_empty(), "{twin}: {:?}", toml.warnings);
    }
}

#[test]
fn overrides_come_after_the_file() {
    let c = load_fixture(
        "seed-rtx3060.py",
        &[
            "--batch_size=8",
            "--gradient_accumulation_steps=8",
            "--compile=False",
        ],
    )
    .config;
    assert_eq!(
        (c.batch_size, c.gradient_accumulation_steps, c.compile),
        (8, 8, false)
    );
    // An override of init_from re-derives the shape; one of vocab_size wins over the preset.
    let c = load_fixture("train_gpt2.py", &["--init_from=gpt2-medium"]).config;
    assert_eq!(shape(&c), (24, 16, 1024, 1024, 50257, true));
    let c = load_fixture(
        "finetune_shakespeare.py",
        &["--vocab_size=50304", "--block_size=512"],
    )
    .config;
    assert_eq!(shape(&c), (48, 25, 1600, 512, 50304, true));
    let c = load_fixture("train_shakespeare_char.py", &["--init_from=resume"]).config;
    assert_eq!(shape(&c), (6, 6, 384, 256, 65, false));
}

#[test]
fn gpt2_weights_ignore_shape_keys_with_a_warning() {
    let l = load_fixture(
        "finetune_shakespeare.py",
        &["--n_layer=12", "--block_size=2048"],
    );
    assert_eq!(shape(&l.config), (48, 25, 1600, 1024, 50257, true));
    assert!(
        l.warnings
            .iter()
            .any(|w| w
                .contains("override --n_layer=12: n_layer = 12 is ignored: init_from='gpt2-xl'")),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("block_size = 2048 exceeds GPT-2's 1024 positions")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn format_is_sniffed_without_a_known_extension() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_load");
    std::fs::create_dir_all(&dir).unwrap();
    let py = dir.join("run.cfg");
    std::fs::write(&py, "import math\nbatch_size = 4 * 2\ncompile = False\n").unwrap();
    let c = load(Some(&py), &[]).unwrap().config;
    assert_eq!((c.batch_size, c.compile), (8, false));
    let toml = dir.join("run.conf");
    std::fs::write(&toml, "batch_size = 8\ncompile = false\n").unwrap();
    assert_eq!(load(Some(&toml), &[]).unwrap().config, c);
}

#[test]
fn json_uses_nanogpt_key_names() {
    let c = load_fixture("seed-rtx3060.py", &[]).config;
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["batch_size"], 64);
    assert_eq!(json["dtype"], "bfloat16");
    assert_eq!(json["gradient_accumulation_steps"], 1);
    assert_eq!(json["optimizer"], "adamw");
    assert_eq!(json["eval_batch_size"], serde_json::Value::Null);
    let back: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);
}

#[test]
fn byte_order_mark_and_crlf_are_accepted() {
    let py = vramplan::config::load_str(
        "w.py",
        "\u{feff}batch_size = 8\r\nn_layer = (4 +\r\n 2)\r\n",
        &[],
    )
    .unwrap();
    assert_eq!((py.config.batch_size, py.config.n_layer), (8, 6));
    let toml =
        vramplan::config::load_str("w.toml", "\u{feff}batch_size = 8\r\nn_layer = 6\r\n", &[])
            .unwrap();
    assert_eq!(toml.config, py.config);
}

#[test]
fn only_a_written_dtype_is_kept_on_a_card_without_bf16() {
    use vramplan::budget::find;
    use vramplan::config::load_str;
    use vramplan::sim::runtime::effective_precision;
    let t4 = find("t4").unwrap();
    // nanoGPT's default: 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'.
    let default = load_str("run.toml", "batch_size = 4\n", &[])
        .unwrap()
        .config;
    assert!(!default.dtype_written.0);
    assert_eq!(effective_precision(&default, Some(&t4)), Precision::Float16);
    // Written in the file, or on the command line: what runs.
    let file = load_str("run.toml", "dtype = \"bfloat16\"\n", &[])
        .unwrap()
        .config;
    let flag = load_str("run.toml", "", &["--dtype=bfloat16".into()])
        .unwrap()
        .config;
    for cfg in [file, flag] {
        assert!(cfg.dtype_written.0);
        assert_eq!(effective_precision(&cfg, Some(&t4)), Precision::BFloat16);
    }
}
