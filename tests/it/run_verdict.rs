//! The one Run and its verdict, from the user's side: `check --json` carries the decisions the
//! simulation was made under (each with its source) and the verdict with each figure's
//! provenance and band; the exit code and the printed verdict follow the band's pessimistic
//! end.

use crate::support::cli::json;
use serde_json::Value;

fn check(args: &[&str]) -> (i32, Value) {
    json(&[&["check", "--json"], args].concat())
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a byte count: {v}"))
}

/// The verdict is usable bytes against reserved + context, taken at the band's high end, and
/// the exit code says the same.
#[test]
fn the_verdict_is_usable_against_the_pessimistic_device_peak() {
    for batch in ["--batch_size=2", "--batch_size=64"] {
        let (code, v) = check(&["--gpu", "rtx3060", "--compile=False", batch]);
        let verdict = &v["verdict"];
        let usable = u(&v["gpu"]["usable_bytes"]);
        let context = u(&v["gpu"]["context_bytes"]);
        let reserved = &verdict["reserved"];
        let device = &verdict["device"];
        assert_eq!(
            u(&device["band"]["high"]),
            u(&reserved["band"]["high"]) + context
        );
        let high = u(&device["band"]["high"]);
        assert_eq!(u(&v["peak"]["device_bytes"]), high);
        let fits = high <= usable;
        assert_eq!(verdict["fits"], fits, "{batch}");
        assert_eq!(v["fits"], fits);
        assert_eq!(code, if fits { 0 } else { 1 });
        assert_eq!(
            verdict["headroom_bytes"].as_i64().unwrap(),
            usable as i64 - high as i64
        );
        // Segments hold every allocated block: the reserved band starts at the allocated peak.
        assert_eq!(
            u(&reserved["band"]["low"]),
            u(&verdict["allocated"]["bytes"])
        );
        assert!(u(&reserved["band"]["low"]) <= u(&reserved["band"]["high"]));
    }
}

/// The first overflow is the first phase (in the run's order) whose reserved + context goes
/// over the usable bytes.
#[test]
fn the_first_overflow_is_the_first_phase_over_the_card() {
    let (code, v) = check(&["--gpu", "rtx3060", "--compile=False", "--batch_size=64"]);
    assert_eq!(code, 1);
    let usable = u(&v["gpu"]["usable_bytes"]);
    let first = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| u(&p["peak_device_bytes"]) > usable)
        .map(|p| p["name"].clone())
        .expect("a phase over the card");
    assert_eq!(v["verdict"]["first_overflow"], first);
    assert_eq!(v["first_overflow_phase"], first);
}

/// Eager tensor bytes are exact and reserved is modelled; torch.compile's figures are rules
/// never measured on a GPU; the context is a calibrated constant.
#[test]
fn each_figure_says_where_it_comes_from() {
    let (_, eager) = check(&["--gpu", "a100-80gb", "--compile=False"]);
    let e = &eager["verdict"];
    assert_eq!(e["allocated"]["provenance"], "exact");
    assert_eq!(e["reserved"]["provenance"], "modelled");
    assert_eq!(e["context"]["provenance"], "calibrated");
    let (_, compiled) = check(&["--gpu", "a100-80gb", "--compile=True"]);
    assert_eq!(compiled["decisions"]["runtime"]["value"], "pytorch-compile");
    assert_eq!(compiled["verdict"]["allocated"]["provenance"], "unmeasured");
    assert_eq!(compiled["verdict"]["reserved"]["provenance"], "unmeasured");
}

/// The decisions, each with the rule that made it.
#[test]
fn the_decisions_name_their_source() {
    // nanoGPT's default dtype on a card without bf16 falls back to float16 (train.py).
    let (_, t4) = check(&["--gpu", "t4", "--compile=False"]);
    let d = &t4["decisions"];
    assert_eq!(d["precision"]["value"], "float16");
    assert!(d["precision"]["source"]
        .as_str()
        .unwrap()
        .contains("no bfloat16"));
    // No FlashAttention-2 before sm80: the T4 (sm75) runs SDPA's memory-efficient kernel.
    assert_eq!(d["attention"]["value"], "memory-efficient");
    assert!(d["attention"]["source"]
        .as_str()
        .unwrap()
        .contains("older than sm80"));
    assert_eq!(d["allocator"]["value"], "segments");
    assert_eq!(d["framework"]["value"], "nanogpt");
    // fp32 with SDPA: the memory-efficient kernel; expandable segments from alloc_conf.
    let (_, fp32) = check(&[
        "--dtype=float32",
        "--compile=False",
        "--alloc_conf=expandable_segments:True",
    ]);
    assert_eq!(fp32["decisions"]["attention"]["value"], "memory-efficient");
    assert_eq!(
        fp32["decisions"]["allocator"]["value"],
        "expandable-segments"
    );
    // compile=True on a Hugging Face model is simulated eager: the runtime says why.
    let (_, hf) = check(&[
        "--model",
        "llama-3.2-1b",
        "--compile=True",
        "--batch_size=1",
    ]);
    let r = &hf["decisions"]["runtime"];
    assert_eq!(r["value"], "pytorch");
    assert!(
        r["source"].as_str().unwrap().contains("Hugging Face"),
        "{r}"
    );
    assert_eq!(hf["runtime"]["upper_bound"], true);
    // nanoGPT's manual attention is compiled as it runs.
    let (_, manual) = check(&["--compile=True", "--flash=False"]);
    assert_eq!(manual["decisions"]["runtime"]["value"], "pytorch-compile");
    assert_eq!(manual["decisions"]["attention"]["value"], "manual");
    assert_eq!(manual["runtime"]["upper_bound"], false);
}
