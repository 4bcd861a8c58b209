//! The feel of the tool: help with examples, version, completions, explain, and errors that
//! never show Rust debug formatting or a panic.

use crate::support::cli::vramplan as run;

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        "check",
        "suggest",
        "diagnose",
        "probe",
        "gpus",
        "explain",
        "completions",
    ] {
        let (code, out, _) = run(&[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}");
        assert!(
            out.contains("Example"),
            "{cmd} --help has no example:\n{out}"
        );
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("vramplan "), "{out}");
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, _) = run(&["completions", shell]);
        assert_eq!(code, 0);
        assert!(
            out.contains("vramplan") && out.contains("suggest"),
            "{shell}"
        );
    }
}

#[test]
fn explain_names_the_op_the_dtype_and_the_lifetime() {
    let (code, out, err) = run(&[
        "explain",
        "loss.log_probs_fp32",
        "fixtures/configs/seed-rtx3060.py",
        "--compile=False",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(65536, 50304) fp32 = 12.28 GiB"), "{out}");
    assert!(out.contains("nll_loss"), "{out}");
    assert!(out.contains("born in forward, freed in backward"), "{out}");
    assert!(!out.contains("torch.compile"), "{out}");
    // Compiled (the seed's own setting), the same value is fused into the loss's reductions,
    // while GELU's output is written for the c_proj matmul, and c_fc's output is a buffer.
    let explain = |name: &str| {
        let (code, out, err) = run(&["explain", name, "fixtures/configs/seed-rtx3060.py"]);
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = explain("loss.log_probs_fp32");
    assert!(out.contains("Under torch.compile: fused away"), "{out}");
    assert!(out.contains("Never allocated"), "{out}");
    let out = explain("layer3.mlp.gelu");
    assert!(
        out.contains("Under torch.compile: written to a buffer only as a matmul's operand"),
        "{out}"
    );
    let out = explain("layer3.mlp.c_fc.out");
    assert!(out.contains("Under torch.compile: kept"), "{out}");
    let (code, out, _) = run(&["explain", "optimizer", "--batch_size=1"]);
    assert_eq!(code, 0);
    assert!(out.contains("wte.adam.exp_avg"), "{out}");
    let (code, _, err) = run(&["explain", "lm_head.logit"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean lm_head.logits"), "{err}");
}

#[test]
fn errors_are_one_plain_line() {
    let cases: &[&[&str]] = &[
        &["check", "--gpu", "a100"],
        &["check", "--gpu", "rtx3060", "--gpu-file", "x.toml"],
        &["check", "--gpu-file", "no/such.toml"],
        &["check", "--live"],
        &["gpus", "--live"],
        &["suggest"],
        &["suggest", "--gpu", "rtx3060", "--keep", "blocksize"],
        &["diagnose", "missing.log"],
        &["explain", "nothing_like_this"],
        &["check", "Cargo.toml"],
        &["check", "--gpu", "rtx3060", "--dtype=float8"],
        &["frobnicate"],
    ];
    for args in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        for bad in ["panicked", "Error {", "Os {", "kind:", "RUST_BACKTRACE"] {
            assert!(!err.contains(bad), "{args:?}: {err}");
        }
        if args[0] != "frobnicate" {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
}

/// `vramplan check --json | head -1`: the reader goes away before the output is written. That
/// is no bug of ours: no "internal error" line, the exit status of a process SIGPIPE killed.
#[test]
fn a_reader_that_goes_away_is_not_an_internal_error() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_vramplan"))
        .args(["check", "--model", "llama-3.1-8b", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the simulation has printed anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("internal error"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

/// The in-process entry the Python package calls: an error about one key carries that key
/// (the package no longer reads it out of the message), other errors none.
#[test]
fn run_cli_json_names_the_key_an_error_is_about() {
    use vramplan::commands::run_cli_json;
    let key_of = |args: &[&str]| {
        let argv = std::iter::once("vramplan")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        run_cli_json(argv).unwrap_err().key
    };
    assert_eq!(
        key_of(&["check", "--json", "--batchsize=8"]).as_deref(),
        Some("batchsize")
    );
    assert_eq!(
        key_of(&["check", "--json", "--n_layer=twelve"]).as_deref(),
        Some("n_layer")
    );
    assert_eq!(key_of(&["check", "--json", "--gpu", "rtx9999"]), None);
    let ok = run_cli_json(["vramplan", "check", "--json"].map(String::from).to_vec());
    assert!(matches!(ok, Ok((0, Some(_)))));
}
