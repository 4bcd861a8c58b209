//! `--safety PCT` on check and suggest: a percentage of the card's total kept free on top of
//! `--margin`, said in the line the user reads, and the verdict judged against what is left.

use crate::support::cli::{json, vramplan};

/// The RTX 3060's CUDA total, from profiles/gpus/rtx3060.toml.
const RTX3060_TOTAL: u64 = 12_552_041_923;
const MIB: u64 = 1 << 20;

#[test]
fn check_keeps_the_percentage_free_and_says_so() {
    let (code, v) = json(&[
        "check",
        "--json",
        "fixtures/configs/eval_gpt2.py",
        "--gpu",
        "rtx3060",
        "--safety",
        "10",
    ]);
    assert_eq!(code, 0, "{v}");
    let safety = (RTX3060_TOTAL as f64 * 0.10).round() as u64;
    assert_eq!(v["gpu"]["safety_bytes"], safety);
    assert_eq!(v["gpu"]["usable_bytes"], RTX3060_TOTAL - 256 * MIB - safety);
    let (_, out, _) = vramplan(&[
        "check",
        "fixtures/configs/eval_gpt2.py",
        "--gpu",
        "rtx3060",
        "--safety",
        "10%",
    ]);
    let gpu = out.lines().find(|l| l.starts_with("GPU: ")).unwrap();
    assert!(
        gpu.ends_with("usable after 1.42 GiB kept free (256.00 MiB margin + 10% safety) (profile)"),
        "{gpu}"
    );
}

/// The verdict follows the budget the safety leaves: with eval_gpt2.py's peak on an RTX 3060,
/// the largest whole percentage that still leaves room for it fits, one more does not.
#[test]
fn the_verdict_is_judged_against_what_the_safety_leaves() {
    let (_, v) = json(&[
        "check",
        "--json",
        "fixtures/configs/eval_gpt2.py",
        "--gpu",
        "rtx3060",
    ]);
    let peak = v["peak"]["device_bytes"].as_u64().unwrap();
    let usable = |pct: u64| {
        let kept = 256 * MIB + (RTX3060_TOTAL as f64 * pct as f64 / 100.0).round() as u64;
        RTX3060_TOTAL.saturating_sub(kept)
    };
    let fits_at = (0..100)
        .rev()
        .find(|&p| usable(p) >= peak)
        .expect("fits at 0%");
    assert!(fits_at < 99, "peak {peak}");
    let verdict = |pct: u64| {
        let (code, out, _) = vramplan(&[
            "check",
            "fixtures/configs/eval_gpt2.py",
            "--gpu",
            "rtx3060",
            "--safety",
            &pct.to_string(),
        ]);
        let line = out
            .lines()
            .find(|l| l.starts_with("FITS") || l.starts_with("DOES NOT FIT"))
            .unwrap()
            .to_string();
        (code, line)
    };
    let (code, line) = verdict(fits_at);
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("FITS"), "{line}");
    let (code, line) = verdict(fits_at + 1);
    assert_eq!(code, 1, "{line}");
    assert!(line.starts_with("DOES NOT FIT"), "{line}");
}

#[test]
fn suggest_plans_within_what_the_safety_leaves() {
    let (code, v) = json(&[
        "suggest",
        "--json",
        "--gpu",
        "rtx3060",
        "--compile=False",
        "--safety",
        "5",
    ]);
    assert_eq!(code, 0, "{v}");
    let usable = RTX3060_TOTAL - 256 * MIB - (RTX3060_TOTAL as f64 * 0.05).round() as u64;
    assert_eq!(v["gpu"]["usable_bytes"], usable);
    let best = v["best"]["peak_device_bytes"].as_u64().unwrap();
    assert!(best <= usable, "{best} > {usable}");
    let (_, out, _) = vramplan(&[
        "suggest",
        "--gpu",
        "rtx3060",
        "--compile=False",
        "--safety",
        "5",
    ]);
    let first = out.lines().next().unwrap();
    assert!(first.contains("(256.00 MiB margin + 5% safety)"), "{first}");
}

#[test]
fn a_bad_safety_is_one_plain_line_and_exit_2() {
    for bad in ["abc", "-5", "100", "nan"] {
        let (code, out, err) = vramplan(&["check", "--gpu", "rtx3060", "--safety", bad]);
        assert_eq!(code, 2, "{bad}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--safety"), "{err}");
    }
}
