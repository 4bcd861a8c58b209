//! Issue 20: the PyTorch release of an allocator message is judged on all the evidence in the
//! paste and reported as a range, from the user's side (`vramplan diagnose LOG --json` and the
//! line the user reads).
//!
//! The expected ranges below are read off each log by hand against the release history:
//! the `(GPU N; … total capacity; …)` layout is 1.x–2.0 and 2.1 rewrote it as `GPU N has a
//! total capacity of …`; `X cached)` is 1.0–1.3; a `RuntimeError` is ≤1.12 (1.13 added
//! `torch.cuda.OutOfMemoryError`, printed under that name up to 2.4); `torch.OutOfMemoryError`
//! is 2.5+; `Process N has … memory in use` is 2.1+; `torch/_dynamo` frames are 2.0+.

use crate::support::cli::{json, vramplan};
use serde_json::Value;

const FIXTURES: &str = "fixtures/oom";

/// (fixture, layout, from, to) — `to` None: up to the newest release.
const EXPECTED: [(&str, &str, &str, Option<&str>); 10] = [
    // torch.OutOfMemoryError, `GPU 0 has a total capacity`, torch/_dynamo frames.
    ("seed-nanogpt-rtx3060", "sentences", "2.5", None),
    // torch.cuda.OutOfMemoryError, new layout (with 2.1's `capacty`), a Process line.
    ("corpus-003", "sentences", "2.1", Some("2.4")),
    // torch.cuda.OutOfMemoryError, new layout.
    ("corpus-010", "sentences", "2.1", Some("2.4")),
    // RuntimeError, old layout ending in `25.84 MiB cached)`.
    ("corpus-021", "parenthesised", "1.0", Some("1.3")),
    // RuntimeError, old layout ending in `607.00 KiB cached)`.
    ("corpus-050", "parenthesised", "1.0", Some("1.3")),
    // torch.cuda.OutOfMemoryError, new layout.
    ("corpus-062", "sentences", "2.1", Some("2.4")),
    // Two ranks' `torch.cuda.OutOfMemoryError` interleaved (only `OutOfMemoryError` is
    // whole: 1.13+), old layout with `reserved in total by PyTorch`: 1.13–2.0.
    ("corpus-064", "parenthesised", "1.13", Some("2.0")),
    // torch.cuda.OutOfMemoryError, new layout.
    ("corpus-066", "sentences", "2.1", Some("2.4")),
    // torch.OutOfMemoryError, new layout with private pools.
    ("corpus-077", "sentences", "2.5", None),
    // torch.OutOfMemoryError, new layout, Process lines.
    ("corpus-079", "sentences", "2.5", None),
];

fn diagnose(name: &str) -> Value {
    let (code, v) = json(&["diagnose", &format!("{FIXTURES}/{name}.log"), "--json"]);
    assert_eq!(code, 0, "{name}: {v}");
    v
}

#[test]
fn each_fixture_is_dated_by_its_layout_and_the_rest_of_the_paste() {
    for (name, layout, from, to) in EXPECTED {
        let v = diagnose(name);
        assert_eq!(v["message_layout"], layout, "{name}");
        let version = &v["pytorch_version"];
        assert_eq!(version["from"], from, "{name}: {version}");
        assert_eq!(version["to"].as_str(), to, "{name}: {version}");
        assert!(
            !version["evidence"].as_array().unwrap().is_empty(),
            "{name}: {version}"
        );
    }
}

#[test]
fn format_agrees_with_the_sidecar_where_the_range_is_one_major() {
    // The sidecars' `format` was written from each thread by hand: a range inside 1.x must
    // read pytorch1 and one inside 2.x pytorch2 (the 1.13–2.0 window may be either).
    for (name, _, from, to) in EXPECTED {
        let side: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{FIXTURES}/{name}.json")).unwrap(),
        )
        .unwrap();
        let got = diagnose(name)["format"].clone();
        let whole_1x = to.is_some_and(|t| t.starts_with("1."));
        let whole_2x = !from.starts_with("1.");
        if whole_1x || whole_2x {
            assert_eq!(got, side["format"], "{name}");
            assert_eq!(
                got,
                if whole_1x { "pytorch1" } else { "pytorch2" },
                "{name}"
            );
        }
    }
}

#[test]
fn the_user_reads_the_range_and_the_layout() {
    let (code, out, _) = vramplan(&["diagnose", "fixtures/oom/corpus-064.log"]);
    assert_eq!(code, 0);
    let head: Vec<&str> = out.lines().take(2).collect();
    assert!(head[0].contains("pytorch 1.13–2.0"), "{out}");
    assert!(
        head[1].contains("format pytorch2") && head[1].contains("(GPU N; … total capacity; …)"),
        "{out}"
    );
    let (_, out, _) = vramplan(&["diagnose", "fixtures/oom/corpus-077.log"]);
    assert!(
        out.lines().next().unwrap().contains("pytorch ≥2.5"),
        "{out}"
    );
}

#[test]
fn a_paste_of_2_0_with_the_old_layout_is_not_called_1x() {
    // PyTorch 2.0 still printed the parenthesised layout; a torch.compile traceback dates it.
    let dir = std::env::temp_dir().join(format!("vramplan-version-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("2.0.log");
    std::fs::write(
        &log,
        "  File \"/venv/lib/python3.10/site-packages/torch/_dynamo/eval_frame.py\", line 209, in _fn\n\
         torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; \
         7.79 GiB total capacity; 6.01 GiB already allocated; 5.31 MiB free; 6.17 GiB reserved \
         in total by PyTorch)\n",
    )
    .unwrap();
    let (code, v) = json(&["diagnose", log.to_str().unwrap(), "--json"]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 0);
    assert_eq!(v["pytorch_version"]["from"], "2.0");
    assert_eq!(v["pytorch_version"]["to"], "2.0");
    assert_eq!(v["format"], "pytorch2");
}
