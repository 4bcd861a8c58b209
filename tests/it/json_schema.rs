//! Issue #18 item 7, from the user's side: every command's `--json` is an object that starts
//! with schema_version, command and mode, and has exactly the keys docs/json-schema.md lists,
//! in that order — with null, not a missing key, where a value does not apply.

use crate::support::cli::{vramplan, vramplan_env};
use serde_json::Value;

/// The documented key lists: "### heading" followed by a "keys: `a`, `b`" line.
fn documented() -> Vec<(String, Vec<String>)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json-schema.md"))
        .unwrap();
    let mut out = Vec::new();
    let mut heading = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            heading = Some(h.to_string());
        } else if let Some(keys) = line.strip_prefix("keys: ") {
            let keys = keys
                .split(", ")
                .map(|k| k.trim_matches('`').to_string())
                .collect();
            out.push((heading.take().expect("keys line without a heading"), keys));
        }
    }
    out
}

/// The top-level keys in the order printed (serde_json's map here sorts them): the lines of
/// the pretty-printed object indented by exactly two spaces.
fn keys_in_order(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("  \""))
        .filter_map(|l| l.split_once("\":").map(|(k, _)| k.to_string()))
        .collect()
}

fn run_json_text(args: &[&str], env: &[(&str, &str)]) -> (Value, String) {
    let (code, out, err) = vramplan_env(args, env);
    assert!(code == 0 || code == 1, "{args:?}: exit {code}: {err}");
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    (v, out)
}

fn run_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    run_json_text(args, env).0
}

#[test]
fn every_command_prints_the_documented_keys_in_order() {
    let tiny = [
        "--batch_size=1",
        "--block_size=64",
        "--n_layer=2",
        "--n_head=2",
        "--n_embd=64",
        "--vocab_size=100",
        "--dtype=float32",
    ];
    let nvml = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/nvml/rtx3060-shared.json"
    );
    // (documented heading, the command, its mode)
    type Case<'a> = (&'a str, Vec<&'a str>, Value, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "check",
            vec!["check", "--json", "--batch_size=1"],
            "train".into(),
            vec![],
        ),
        (
            "check",
            vec![
                "check",
                "--json",
                "--model",
                "llama-3.2-1b",
                "--mode",
                "inference",
                "--gpu",
                "t4",
                "--batch_size=1",
            ],
            "inference".into(),
            vec![],
        ),
        (
            "suggest (mode train)",
            vec!["suggest", "--json", "--gpu", "rtx3060"],
            "train".into(),
            vec![],
        ),
        (
            "suggest (mode inference)",
            vec![
                "suggest",
                "--json",
                "--model",
                "llama-3.2-1b",
                "--mode",
                "inference",
                "--gpu",
                "l4",
            ],
            "inference".into(),
            vec![],
        ),
        (
            "diagnose",
            vec![
                "diagnose",
                "--json",
                "fixtures/oom/seed-nanogpt-rtx3060.log",
            ],
            Value::Null,
            vec![],
        ),
        (
            "probe",
            [&["probe", "--json"][..], &tiny[..]].concat(),
            "train".into(),
            vec![],
        ),
        ("gpus", vec!["gpus", "--json"], Value::Null, vec![]),
        (
            "gpus",
            vec!["gpus", "--live", "--json"],
            Value::Null,
            vec![("VRAMPLAN_FAKE_NVML", nvml)],
        ),
        (
            "explain",
            vec!["explain", "lm_head.logits", "--json", "--batch_size=1"],
            "train".into(),
            vec![],
        ),
        (
            "explain",
            vec!["explain", "optimizer", "--json", "--batch_size=1"],
            "train".into(),
            vec![],
        ),
    ];
    let docs = documented();
    for (heading, args, mode, env) in cases {
        let want = &docs
            .iter()
            .find(|(h, _)| h == heading)
            .unwrap_or_else(|| panic!("docs/json-schema.md has no `### {heading}`"))
            .1;
        let (v, text) = run_json_text(&args, &env);
        assert_eq!(&keys_in_order(&text), want, "{args:?}");
        assert_eq!(v.as_object().unwrap().len(), want.len(), "{args:?}");
        assert_eq!(v["schema_version"], 1, "{args:?}");
        assert_eq!(v["command"], args[0], "{args:?}");
        assert_eq!(v["mode"], mode, "{args:?}");
    }
    // Every documented section was exercised.
    assert_eq!(docs.len(), 7);
}

#[test]
fn absent_values_are_null_not_missing() {
    // No card: no verdict, but the keys are there.
    let v = run_json(&["check", "--json", "--batch_size=1"], &[]);
    for k in [
        "gpu",
        "fits",
        "headroom_bytes",
        "first_overflow_phase",
        "vllm",
        "ranks",
    ] {
        assert!(v[k].is_null(), "{k}: {}", v[k]);
    }
    assert!(v["runtime"]["kv_cache_dtype"].is_null());
    assert_eq!(v["categories"]["kv_cache"], 0);
    assert_eq!(v["categories"]["communication"], 0);
    // A tensor's explanation has no "largest"; a category's has no shape.
    let t = run_json(
        &[
            "explain",
            "lm_head.logits",
            "--json",
            "--batch_size=1",
            "--compile=False",
        ],
        &[],
    );
    assert_eq!(t["kind"], "tensor");
    assert_eq!(t["shape"], serde_json::json!([1, 1024, 50304]));
    assert_eq!(t["largest"], serde_json::json!([]));
    let c = run_json(&["explain", "optimizer", "--json", "--batch_size=1"], &[]);
    assert_eq!(c["kind"], "category");
    assert!(c["shape"].is_null() && c["dtype"].is_null());
}

/// `explain --json` is JSON, and says what the text says: the same bytes and lifetimes.
#[test]
fn explain_json_matches_its_text() {
    let args = [
        "explain",
        "loss.log_probs_fp32",
        "fixtures/configs/seed-rtx3060.py",
        "--compile=False",
    ];
    let (code, text, err) = vramplan(&args);
    assert_eq!(code, 0, "{err}");
    let v = run_json(&[&args[..], &["--json"]].concat(), &[]);
    // 64 x 1024 tokens x 50304 vocabulary x 4 bytes.
    assert_eq!(v["bytes"], 64u64 * 1024 * 50304 * 4);
    assert!(text.starts_with("loss.log_probs_fp32 (65536, 50304) fp32 = 12.28 GiB"));
    let total: u64 = v["lifetimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    assert!(text.contains(&format!("Allocated {total} times")), "{text}");
}
