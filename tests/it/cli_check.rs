//! `vramplan check` end to end: the seed case, exit codes, JSON names, bad input.

use crate::support::cli::{json, vramplan};
use serde_json::Value;

/// `vramplan check --json args`: (exit code, the JSON).
fn check_json(args: &[&str]) -> (i32, Value) {
    json(&[&["check", "--json"], args].concat())
}

/// The seed case: GPT-2 124M, batch 64, block 1024, bf16 on an RTX 3060 crashed in
/// estimate_loss() before the first step, failing to allocate 6.14 GiB.
#[test]
fn seed_case_under_eager_rules_does_not_fit_and_eval_overflows_first() {
    let (code, v) = check_json(&[
        "fixtures/configs/seed-rtx3060.py",
        "--gpu",
        "rtx3060",
        "--compile=False",
    ]);
    assert_eq!(code, 1, "does not fit → exit 1");
    assert_eq!(v["fits"], false);
    assert_eq!(v["first_overflow_phase"], "eval");
    // 11.69 GiB as PyTorch printed it.
    let total = v["gpu"]["total_bytes"].as_u64().unwrap();
    assert!((total as f64 / (1u64 << 30) as f64 - 11.69).abs() < 0.005);
    let tensors = v["tensors"].as_array().unwrap();
    let logits_bytes = 64u64 * 1024 * 50304 * 2;
    assert_eq!(logits_bytes, 6_593_445_888);
    let logits = tensors
        .iter()
        .find(|t| t["name"] == "lm_head.logits")
        .expect("logits among the peak tensors");
    assert_eq!(logits["shape"], serde_json::json!([64, 1024, 50304]));
    assert_eq!(logits["dtype"], "bf16");
    assert_eq!(logits["bytes"].as_u64(), Some(logits_bytes));
    let log_probs = tensors
        .iter()
        .find(|t| t["name"] == "loss.log_probs")
        .expect("bf16 log-probs among the peak tensors");
    assert_eq!(log_probs["dtype"], "bf16");
    assert_eq!(log_probs["bytes"].as_u64(), Some(logits_bytes));
    // The eval phase alone needs more than the card: logits + log-probs + their fp32 copy.
    let eval = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "eval")
        .unwrap();
    assert!(eval["peak_allocated_bytes"].as_u64().unwrap() > 4 * logits_bytes);
    assert!(v["headroom_bytes"].as_i64().unwrap() < 0);
}

#[test]
fn seed_case_compiled_does_not_fit_and_eval_overflows_first() {
    // The seed as it ran (compile=True): the eval's compiled forward allocates the second
    // logits buffer, inductor's 2-D (B·T, V) mm output, while the first is still referenced.
    let (code, v) = check_json(&["fixtures/configs/seed-rtx3060.py", "--gpu", "rtx3060"]);
    assert_eq!(code, 1, "does not fit → exit 1");
    assert_eq!(v["runtime"]["name"], "pytorch-compile");
    assert_eq!(v["first_overflow_phase"], "eval");
    let logits_bytes = 64u64 * 1024 * 50304 * 2;
    let tensors = v["tensors"].as_array().unwrap();
    for name in [
        "lm_head.logits",
        "lm_head.logits.tangent",
        "loss.logits.grad",
    ] {
        let t = tensors
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} among the peak tensors"));
        assert_eq!(t["shape"], serde_json::json!([65536, 50304]), "{name}");
        assert_eq!(t["dtype"], "bf16", "{name}");
        assert_eq!(t["bytes"].as_u64(), Some(logits_bytes), "{name}");
    }
    // No fp32 copy of the log-probs exists under compile.
    assert!(tensors
        .iter()
        .all(|t| t["dtype"] != "fp32" || t["bytes"].as_u64() < Some(logits_bytes)));
    let eval = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "eval")
        .unwrap();
    let eval_peak = eval["peak_allocated_bytes"].as_u64().unwrap();
    assert!(eval_peak > 2 * logits_bytes && eval_peak < 3 * logits_bytes);
}

#[test]
fn json_has_the_documented_shape() {
    let (code, v) = check_json(&["--gpu", "h100-80gb", "--batch_size=4"]);
    assert_eq!(code, 0);
    let names: Vec<&str> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "init",
            "eval",
            "forward",
            "backward",
            "optimizer",
            "eval_after_step"
        ]
    );
    // Categories add up to the allocated peak.
    let cats: u64 = v["categories"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(cats, v["peak"]["allocated_bytes"].as_u64().unwrap());
    assert!(v["tensors"].as_array().unwrap().len() >= 10);
    // device = reserved + context, and headroom = usable - device.
    let device = v["peak"]["device_bytes"].as_u64().unwrap() as i64;
    let usable = v["gpu"]["usable_bytes"].as_u64().unwrap() as i64;
    assert_eq!(v["headroom_bytes"].as_i64().unwrap(), usable - device);
    assert_eq!(v["config"]["batch_size"], 4);
    assert_eq!(v["config"]["dtype"], "bfloat16");
    assert!(v["first_overflow_phase"].is_null());
}

#[test]
fn no_gpu_gives_figures_without_a_verdict() {
    let (code, out, _) = vramplan(&["check"]);
    assert_eq!(code, 0);
    assert!(out.contains("No GPU given"), "{out}");
}

#[test]
fn card_without_bf16_falls_back_to_fp16_with_a_warning() {
    let (_, v) = check_json(&["--gpu", "t4", "--batch_size=1"]);
    assert_eq!(v["runtime"]["dtype"], "float16");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("float16"), "{warnings}");
}

#[test]
fn bad_input_is_exit_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["check", "--gpu", "rtx3060", "--batch_sise=4"],
            "batch_size",
        ),
        (&["check", "--gpu", "rtx3060", "--n_head=7"], "n_head"),
        (
            &["check", "--gpu", "rtx3060", "--batch_size=0"],
            "batch_size",
        ),
        (&["check", "--gpu", "rtx9999"], "rtx"),
        (&["check", "no/such/file.py"], "no/such/file.py"),
        (
            &["check", "--gpu", "rtx3060", "--margin", "lots"],
            "--margin",
        ),
        (
            &["check", "--gpu", "rtx3060", "--vocab_size=99999999999999"],
            "vocab_size",
        ),
    ];
    for (args, needle) in cases {
        let (code, out, err) = vramplan(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr should name {needle}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            !err.contains("Error {"),
            "{args:?}: debug formatting: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
}

#[test]
fn every_bad_fixture_is_exit_2() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/configs/bad");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let p = path.to_str().unwrap();
        let (code, out, err) = vramplan(&["check", p, "--gpu", "rtx3060"]);
        assert_eq!(code, 2, "{p}: {out}{err}");
        assert!(!err.contains("panicked"), "{p}: {err}");
    }
}

#[test]
fn a_written_bf16_dtype_on_a_card_without_bf16_is_kept_with_a_warning() {
    let (_, v) = check_json(&["--gpu", "t4", "--batch_size=1", "--dtype=bfloat16"]);
    assert_eq!(v["runtime"]["dtype"], "bfloat16");
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("no bfloat16") && warnings.contains("kept"),
        "{warnings}"
    );
}
