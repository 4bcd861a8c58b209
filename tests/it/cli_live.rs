//! `--live` end to end through a fake NVML reading (VRAMPLAN_FAKE_NVML): a shared RTX 3060 with
//! two other processes. The budget is what is free now, and the report says who holds the rest.

use crate::support::cli::{vramplan, vramplan_env};
use serde_json::Value;

const FAKE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/nvml/rtx3060-shared.json"
);

/// `vramplan args` reading the fake NVML.
fn run(args: &[&str]) -> (i32, String, String) {
    vramplan_env(args, &[("VRAMPLAN_FAKE_NVML", FAKE)])
}

fn reading() -> Value {
    serde_json::from_str::<Value>(&std::fs::read_to_string(FAKE).unwrap()).unwrap()[0].clone()
}

#[test]
fn live_budget_is_free_memory_less_the_margin() {
    let (code, out, err) = run(&["check", "--live", "--json", "--batch_size=2"]);
    assert!(code == 0 || code == 1, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let free = reading()["free_bytes"].as_u64().unwrap();
    assert_eq!(v["gpu"]["source"], "fake-nvml");
    assert_eq!(
        v["gpu"]["usable_bytes"].as_u64().unwrap(),
        free - (256 << 20)
    );
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("2 other processes hold"), "{warnings}");
    assert!(warnings.contains("pid 1234 python"), "{warnings}");
}

#[test]
fn without_gpu_flags_the_live_card_is_used() {
    let (_, out, _) = run(&["check", "--json", "--batch_size=2"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["gpu"]["source"], "fake-nvml");
    assert!(v["fits"].is_boolean());
}

/// Readings from VRAMPLAN_FAKE_NVML are no live card: the report never says "live".
#[test]
fn fake_readings_never_print_as_live() {
    let (code, out, err) = run(&["check", "--live", "--batch_size=2"]);
    assert!(code == 0 || code == 1, "{err}");
    let gpu_line = out
        .lines()
        .find(|l| l.starts_with("GPU: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        gpu_line.ends_with("(VRAMPLAN_FAKE_NVML readings, not a live card)"),
        "{gpu_line}"
    );
    assert!(!out.contains("live)"), "{out}");
}

#[test]
fn gpus_live_lists_the_card_and_its_processes() {
    let (code, out, _) = run(&["gpus", "--live"]);
    assert_eq!(code, 0);
    assert!(out.contains("RTX 3060"), "{out}");
    assert!(out.contains("1234"), "{out}");
}

#[test]
fn no_driver_is_one_plain_line() {
    let (code, _, err) = vramplan(&["check", "--live"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "vramplan: no NVIDIA driver found (libnvidia-ml.so.1): use --gpu NAME to plan for a card from the catalogue"
    );
}
