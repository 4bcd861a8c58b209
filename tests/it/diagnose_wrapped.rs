//! Issue 20: a paste broken by a terminal or a web page at a fixed width says what the
//! unbroken paste says. Every log in fixtures/oom, wrapped at 60, 80 and 120 columns three
//! ways (cut anywhere, at words keeping the space, at words dropping it), gives the same
//! facts, format, device, phase and culprit (or culprit hypotheses) as the log as posted.

use crate::support::cli::json;
use crate::support::wrap::{fold, page_wrap, word_wrap};
use serde_json::Value;
use std::path::PathBuf;
use vramplan::diagnose::{parse, Diagnosis};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/oom");
const WIDTHS: [usize; 3] = [60, 80, 120];

type Wrap = fn(&str, usize) -> String;
const WRAPS: [(&str, Wrap); 3] = [
    ("fold", fold),
    ("word wrap", word_wrap),
    ("page wrap", page_wrap),
];

fn logs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .expect("fixtures/oom")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    assert!(v.len() >= 20, "fixtures/oom has {} logs", v.len());
    v
}

/// What the user reads about the failure, without the parser's own notes.
fn seen(d: &Diagnosis) -> Value {
    serde_json::json!({
        "is_oom": d.is_oom,
        "format": d.format,
        "device": d.device,
        "phase": d.phase,
        "facts": d.facts,
        "culprit": d.culprit,
        "hypotheses": d.hypotheses,
        "other_reports": d.other_reports,
        "pytorch_version": d.pytorch_version,
        "message_layout": d.message_layout,
    })
}

#[test]
fn every_fixture_wrapped_at_60_80_120_columns_reads_as_unwrapped() {
    let mut failures = Vec::new();
    for path in logs() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let log = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let clean = seen(&parse(&log));
        for w in WIDTHS {
            for (how, wrap) in WRAPS {
                let got = seen(&parse(&wrap(&log, w)));
                if got != clean {
                    failures.push(format!(
                        "{name}, {how} at {w}:\n  got  {got}\n  want {clean}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_seed_wrapped_still_names_its_culprit_with_the_config() {
    let dir = std::env::temp_dir().join(format!("vramplan-wrapped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = std::fs::read_to_string(format!("{FIXTURES}/seed-nanogpt-rtx3060.log")).unwrap();
    let run = |log: &str| -> Value {
        let p = dir.join("wrapped.log");
        std::fs::write(&p, log).unwrap();
        let (code, v) = json(&[
            "diagnose",
            p.to_str().unwrap(),
            "--config",
            "fixtures/configs/seed-rtx3060.py",
            "--json",
        ]);
        assert_eq!(code, 0, "{v}");
        v
    };
    let clean = run(&seed);
    assert!(clean["culprit"].is_object(), "{clean}");
    for w in WIDTHS {
        for (how, wrap) in WRAPS {
            let v = run(&wrap(&seed, w));
            for key in ["facts", "culprit", "phase", "format"] {
                assert_eq!(v[key], clean[key], "{how} at {w}: {key}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_candle_error_cut_inside_its_name_is_still_recognised() {
    // The paste: docker-compose's prefix pushed the error so that the terminal's cut
    // fell inside the word, `…DriverError(CUDA_ERROR_OUT_O` / `F_MEMORY, "out of memory")`.
    let log = std::fs::read_to_string(format!("{FIXTURES}/corpus-037.log")).unwrap();
    let prefixed: String = log
        .lines()
        .map(|l| format!("mistralrs-server-1  | {l}\n"))
        .collect();
    let width = "mistralrs-server-1  | Error: DriverError(CUDA_ERROR_OUT_O".len();
    let wrapped = fold(&prefixed, width);
    assert!(
        wrapped.contains("CUDA_ERROR_OUT_O\nF_MEMORY"),
        "the cut must fall inside the word:\n{wrapped}"
    );
    let d = parse(&wrapped);
    assert!(d.is_oom, "{wrapped}");
    assert_eq!(d.format.map(|f| f.as_str()), Some("candle"));
    assert_eq!(seen(&d), seen(&parse(&log)));
}
