//! Hostile input through the built binary (issue 16): absurd sizes, files that are not files,
//! invisible characters, malformed fake NVML readings and GPU profiles, usage errors and probe
//! sizes. Every run is under a wall-time and a memory limit (tests/it/support/hostile.rs); a
//! refusal is exit 2 with one plain line on stderr, valid input exits 0 or 1.

use crate::support::hostile::{assert_refused, refused, run, temp};
use std::process::Command;

#[test]
fn absurd_sizes_are_refused_naming_the_key_and_the_limit() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["check", "--n_layer=10000000"],
            "n_layer = 10000000: expected at most 1024 layers",
        ),
        (
            &["check", "--n_layer=1000000000"],
            "n_layer = 1000000000: expected at most 1024",
        ),
        (
            &["suggest", "--n_layer=10000", "--gpus", "8", "--gpu", "h100"],
            "n_layer = 10000",
        ),
        (
            &["explain", "lm_head.logits", "--n_layer=1000000"],
            "n_layer = 1000000",
        ),
        (
            &["check", "--model", "llama-3.1-8b", "--n_layer=1000000"],
            "n_layer = 1000000",
        ),
        (
            &["check", "--mode", "inference", "--n_layer=10000000"],
            "n_layer = 10000000",
        ),
        (
            &["check", "--n_embd=1048576", "--n_head=1"],
            "n_embd = 1048576: expected at most 131072",
        ),
        (
            &["check", "--vocab_size=10000000000"],
            "vocab_size = 10000000000: expected at most 4194304",
        ),
        (
            &["check", "--block_size=100000000"],
            "block_size = 100000000: expected at most 16777216",
        ),
        (&["check", "--batch_size=1000000"], "tokens per micro-batch"),
        (
            &["check", "--gradient_accumulation_steps=1000000000000"],
            "gradient_accumulation_steps",
        ),
        (
            &["check", "--mode=inference", "--max_num_seqs=100000000"],
            "max_num_seqs",
        ),
        (&["probe", "--n_layer=2000"], "n_layer = 2000"),
    ];
    for (args, says) in cases {
        refused(args, &[says, "override --"]);
    }
}

#[test]
fn files_that_are_not_regular_or_too_large_are_refused_at_once() {
    let dir = std::env::temp_dir().display().to_string();
    refused(
        &["check", "/dev/urandom"],
        &["/dev/urandom", "expected a regular file, found a device"],
    );
    refused(&["check", &dir], &["found a directory"]);
    refused(
        &["check", "/no/such/run.py"],
        &["/no/such/run.py: cannot read the config file: no such file"],
    );
    refused(&["diagnose", "/dev/zero"], &["found a device"]);
    refused(
        &["check", "--hf-config", "/dev/urandom"],
        &["found a device"],
    );
    refused(&["check", "--gpu-file", "/dev/zero"], &["found a device"]);
    let fifo = std::env::temp_dir().join(format!("vramplan-fifo-{}", std::process::id()));
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let fifo = fifo.display().to_string();
        refused(&["check", &fifo], &["found a named pipe (FIFO)"]);
        std::fs::remove_file(&fifo).unwrap();
    }
    let big = temp("big.py", &vec![b'#'; 2 << 20]);
    refused(
        &["check", &big],
        &["the config file is larger than 1.00 MiB"],
    );
    let huge_log = vec![b'x'; 17 << 20];
    let o = run(&["diagnose", "-"], &[], Some(&huge_log));
    assert_refused(&o, &["standard input: the log is larger than 16.00 MiB"]);
}

#[test]
fn odd_characters_are_named_with_line_and_column() {
    let py = temp(
        "zwsp.py",
        "batch_size = 8\nn_layer = 2\u{200b}\n".as_bytes(),
    );
    refused(
        &["check", &py],
        &[":2: not valid Python: unexpected character U+200B ZERO WIDTH SPACE at column 12"],
    );
    let toml = temp("nbsp.toml", "n_layer =\u{a0}2\n".as_bytes());
    refused(
        &["check", &toml],
        &[":1:10: not valid TOML: unexpected character U+00A0 NO-BREAK SPACE"],
    );
    let dotted = temp("dotted.toml", b"n_layer.x = 2\n");
    refused(
        &["check", &dotted],
        &["dotted.toml:1: [n_layer] is a table: expected a flat file"],
    );
    let json = temp(
        "config.json",
        "{\"model_type\": \"llama\",\u{200b} \"x\": 1}".as_bytes(),
    );
    refused(
        &["check", "--hf-config", &json],
        &[":1:24: not valid JSON: unexpected character U+200B ZERO WIDTH SPACE"],
    );
    refused(
        &["check", "--gpu", "rtx\u{200b}3060x"],
        &["<U+200B ZERO WIDTH SPACE>"],
    );
}

#[test]
fn malformed_fake_nvml_readings_are_one_plain_line() {
    let card = r#"{"index":0,"name":"x","total_bytes":1,"free_bytes":1,"used_bytes":0,"driver_version":"1","cuda_version":"1""#;
    let cases: Vec<(String, &str)> = vec![
        ("[{\"index\":1}]".into(), "missing key `name`"),
        ("[{\"index\":\"a\"}]".into(), "expected a whole number from 0 to 4294967295"),
        ("{\"a\":1}".into(), "got an object, expected a list"),
        ("[1".into(), "expected an object with name"),
        ("[".into(), "not valid JSON"),
        ("\u{200b}[]".into(), "unexpected character U+200B ZERO WIDTH SPACE"),
        (
            format!("[{card},\"processes\":[{{\"pid\":1,\"name\":null,\"used_bytes\":null,\"kind\":\"vulkan\"}}]}}]"),
            "unknown value `vulkan`, expected one of `compute`, `graphics`, `both`",
        ),
        (format!("[{card},\"compute_capability\":[8]}}]"), "expected a pair such as [8, 6]"),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        let path = temp(&format!("nvml{i}.json"), text.as_bytes());
        for args in [&["gpus", "--live"][..], &["check", "--live"]] {
            let o = run(args, &[("VRAMPLAN_FAKE_NVML", &path)], None);
            assert_refused(&o, &["VRAMPLAN_FAKE_NVML=", says]);
            for jargon in ["u32", "variant", "sequence", "struct"] {
                assert!(!o.stderr.contains(jargon), "{jargon}: {}", o.stderr);
            }
        }
    }
    let missing = std::env::temp_dir().join("vramplan-hostile-no-such-readings.json");
    let o = run(
        &["gpus", "--live"],
        &[("VRAMPLAN_FAKE_NVML", &missing.display().to_string())],
        None,
    );
    assert_refused(&o, &["cannot read the fake NVML readings: no such file"]);
}

#[test]
fn gpus_live_with_zero_cards_says_so_and_exits_1() {
    let none = temp("no-cards.json", b"[]");
    for json in [false, true] {
        let args: &[&str] = if json {
            &["gpus", "--live", "--json"]
        } else {
            &["gpus", "--live"]
        };
        let o = run(args, &[("VRAMPLAN_FAKE_NVML", &none)], None);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert_eq!(o.stderr.trim(), "vramplan: NVML found no NVIDIA GPU on this machine: use --gpu NAME to plan for a card from the catalogue");
    }
}

#[test]
fn gpu_profiles_are_validated_like_configs() {
    let absurd = temp(
        "absurd-gpu.toml",
        b"total_bytes = \"2000TiB\"\ncublas_workspace_bytes = \"100GiB\"\n",
    );
    refused(
        &["check", "--gpu-file", &absurd],
        &[
            "`total_bytes`: expected a total between 256.00 MiB and 1024.00 GiB",
            "`cublas_workspace_bytes`: expected between 0 bytes and 4.00 GiB",
        ],
    );
    let empty = temp("empty-gpu.toml", b"name = \"mine\"\n");
    refused(&["check", "--gpu-file", &empty], &["missing `total_bytes`"]);
    refused(
        &["check", "--gpu", "5000GiB"],
        &["--gpu \"5000GiB\": expected a total between"],
    );
    refused(&["check", "--gpu", "24GB"], &["ambiguous", "--gpu 23.6GiB"]);

    // Only the total: planned for, with the defaults it took printed.
    let minimal = temp("minimal-gpu.toml", b"total_bytes = \"47.5GiB\"\n");
    let o = run(&["check", "--gpu-file", &minimal], &[], None);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains(
            "fields left out take the generic card's defaults: compute capability unknown"
        ),
        "{}",
        o.stdout
    );
    // --gpu 48GiB: a generic card of that total, its assumptions on one warning line.
    let o = run(&["check", "--gpu", "48GiB"], &[], None);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("GPU: generic 48.00 GiB card — 48.00 GiB total"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("assumed: compute capability unknown, unknown SMs, bf16 assumed unsupported"),
        "{}",
        o.stdout
    );
}

#[test]
fn usage_errors_are_one_line_and_say_how_overrides_are_written() {
    refused(&["check", "--batch_size"], &["unexpected argument '--batch_size' found: config overrides are written --batch_size=VALUE"]);
    refused(&["check", "--batch_size", "8"], &["--batch_size=VALUE"]);
    refused(
        &["check", "--jsn"],
        &["unexpected argument '--jsn' found; tip: a similar argument exists: '--json'"],
    );
    refused(&["chek"], &["unrecognized subcommand 'chek'"]);
    refused(
        &["check", "--gpu"],
        &["a value is required for '--gpu <GPU>'"],
    );
    refused(
        &["probe", "--steps", "1000000000"],
        &["--steps 1000000000: expected 1 to 100"],
    );
    refused(&["probe", "--steps", "99999999999999"], &["invalid value"]);
    refused(
        &["probe", "--n_layer=1000"],
        &["FLOPs", "--layers 2 extrapolates"],
    );
    refused(
        &["probe", "--layers", "0"],
        &["--layers 0: expected 1 to n_layer = 12"],
    );
}

#[test]
fn absurd_moe_sizes_are_refused_before_any_work() {
    refused(
        &[
            "check",
            "--model",
            "mixtral-8x7b",
            "--num_experts=100000000",
        ],
        &["num_experts = 100000000: expected at most 4096 experts per MoE layer"],
    );
    refused(
        &[
            "check",
            "--model",
            "qwen3-30b-a3b",
            "--moe_intermediate_size=99999999999",
        ],
        &["moe_intermediate_size = 99999999999: expected at most 1048576"],
    );
}
