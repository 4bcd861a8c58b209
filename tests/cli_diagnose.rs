//! `vramplan diagnose` end to end on the seed case, with and without the config.

mod support;

use serde_json::Value;
use support::cli::{json, vramplan};

/// `vramplan diagnose args --json`: (exit code, the JSON).
fn diagnose(args: &[&str]) -> (i32, Value) {
    json(&[&["diagnose"], args, &["--json"]].concat())
}

const GIB: f64 = (1u64 << 30) as f64;

#[test]
fn seed_log_with_its_config_names_the_bf16_tensor_and_offers_the_largest_batch() {
    let (code, v) = diagnose(&[
        "fixtures/oom/seed-nanogpt-rtx3060.log",
        "--config",
        "fixtures/configs/seed-rtx3060.py",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["is_oom"], true);
    assert_eq!(v["format"], "pytorch2");
    assert_eq!(v["phase"], "eval");
    let culprit = &v["culprit"];
    assert_eq!(culprit["shape"], serde_json::json!([65536, 50304]));
    assert_eq!(culprit["dtype"], "bf16");
    assert_eq!(culprit["bytes"].as_u64(), Some(65536 * 50304 * 2));
    let causes = v["causes"].to_string();
    assert!(causes.contains("already live"), "{causes}");
    // 11.69 − 2.68 − 7.04 = 1.97 GiB outside this process.
    assert!(causes.contains("1.97 GiB"), "{causes}");
    // The fixes keep 65,536 tokens per step and fit.
    let fixes = v["fixes"].as_array().unwrap();
    let batch_fixes: Vec<&Value> = fixes
        .iter()
        .filter(|f| {
            f["command"]
                .as_str()
                .is_some_and(|c| c.contains("--batch_size="))
        })
        .collect();
    assert!(!batch_fixes.is_empty());
    for f in &batch_fixes {
        assert_eq!(f["fits"], true);
        let peak = f["predicted_peak_bytes"].as_u64().unwrap() as f64 / GIB;
        assert!(peak < 11.69 - 1.97, "{f}");
        let cmd = f["command"].as_str().unwrap();
        let num = |key: &str| -> u64 {
            cmd.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1024)
        };
        let tokens =
            num("--batch_size=") * num("--gradient_accumulation_steps=") * num("--block_size=");
        assert!(tokens >= 65536, "{cmd}");
    }
}

#[test]
fn without_a_config_the_facts_still_come_out() {
    let (code, v) = diagnose(&["fixtures/oom/seed-nanogpt-rtx3060.log"]);
    assert_eq!(code, 0);
    let f = &v["facts"];
    let gib = |k: &str| f[k].as_u64().unwrap() as f64 / GIB;
    assert!((gib("tried_to_allocate_bytes") - 6.14).abs() < 0.005);
    assert!((gib("total_capacity_bytes") - 11.69).abs() < 0.005);
    assert!((gib("free_bytes") - 2.68).abs() < 0.005);
    assert!((gib("process_in_use_bytes") - 7.04).abs() < 0.005);
}

#[test]
fn unreadable_log_is_exit_2() {
    let (code, _, err) = vramplan(&["diagnose", "no/such.log"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such.log"), "{err}");
}
