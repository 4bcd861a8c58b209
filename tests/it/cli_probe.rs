//! Issue #18 item 4, from the user's side: the probe says how long it will take before it
//! starts, shows each step as it runs, refuses a run past --max-minutes, and prints check's
//! PyTorch prediction beside candle's measurement with a line on why they differ.

use crate::support::cli::{json, vramplan};

const TINY: &[&str] = &[
    "--batch_size=1",
    "--block_size=64",
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=64",
    "--vocab_size=100",
    "--dtype=float32",
    "--compile=False",
];

#[test]
fn probe_estimates_then_shows_each_step_then_compares_with_pytorch() {
    let (code, out, err) = vramplan(&[&["probe"][..], TINY].concat());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    // The estimate comes first, before any step.
    assert!(lines[0].starts_with("probe: about "), "{err}");
    assert!(lines[0].contains(" on cpu ("), "{err}");
    // Then one line per phase of each of the 2 steps (stderr is not a terminal here).
    let steps: Vec<&str> = lines[1..].to_vec();
    for step in 1..=2 {
        for phase in ["forward", "backward", "optimizer"] {
            let want = format!("probe: 2 layers, step {step}/2: {phase}");
            assert!(steps.contains(&want.as_str()), "{want} missing from\n{err}");
        }
    }
    // check's PyTorch figure for the same config, beside candle's.
    let (_, check) = json(&[&["check", "--json"][..], TINY].concat());
    let pytorch = check["peak"]["allocated_bytes"].as_u64().unwrap();
    let line = out
        .lines()
        .find(|l| l.starts_with("PyTorch on CUDA (`vramplan check`"))
        .unwrap_or_else(|| panic!("no PyTorch line in\n{out}"));
    assert!(
        line.contains(&format!(
            "peak {} allocated",
            vramplan::units::human(pytorch)
        )),
        "{line}"
    );
    assert!(line.contains("against candle's"), "{line}");
    let why = out
        .lines()
        .find(|l| l.starts_with("why they differ: "))
        .unwrap();
    assert!(
        why.contains("flash attention") && why.contains("autocast"),
        "{why}"
    );
    // The same in the JSON.
    let (code, v) = json(&[&["probe", "--json"][..], TINY].concat());
    assert_eq!(code, 0);
    assert_eq!(v["pytorch"]["peak_allocated_bytes"].as_u64(), Some(pytorch));
}

#[test]
fn a_probe_past_max_minutes_is_refused_before_it_starts() {
    // nanoGPT's shakespeare_char config: minutes of CPU, far past a 0.01-minute limit even at
    // 1 and 2 layers (its 64 x 256 tokens dominate).
    let (code, out, err) = vramplan(&[
        "probe",
        "fixtures/configs/train_shakespeare_char.py",
        "--max-minutes",
        "0.01",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("over --max-minutes 0.01"), "{err}");
    assert!(!err.contains("step 1/"), "it started: {err}");
    assert!(out.is_empty(), "{out}");
}
