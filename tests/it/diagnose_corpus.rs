//! Every real log parses, and every fact its sidecar states is what we extract (within the
//! rounding of the printed unit). The corpus lives in `shared/` beside the clone; copies of a
//! part of it sit in `fixtures/oom/` so these tests never depend on `shared/` alone.

use serde_json::Value;
use std::path::{Path, PathBuf};
use vramplan::diagnose::size::parse_size;
use vramplan::diagnose::{parse, CauseKind, Phase};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/oom");

/// `shared/oom-corpus` beside the clone (CI), or beside a worktree's parent, or as named.
fn corpus_dir() -> Option<PathBuf> {
    let mut dirs = vec![
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/oom-corpus")),
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/oom-corpus"
        )),
    ];
    if let Ok(d) = std::env::var("VRAMPLAN_OOM_CORPUS") {
        dirs.insert(0, PathBuf::from(d));
    }
    dirs.into_iter().find(|d| d.is_dir())
}

#[derive(Default)]
struct Tally {
    cases: usize,
    facts_matched: usize,
    facts_not_in_log: usize,
    failures: Vec<String>,
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).expect("readable")).into_owned()
}

/// Is a printed figure present in the log at all (the sidecar may quote the same post)?
fn in_log(log: &str, printed: &str) -> bool {
    if printed.starts_with("derived") {
        return true;
    }
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    // An exact byte count may be printed without its unit (`buffer of size 151851674624`).
    let digits = printed.trim_end_matches("bytes").trim();
    squash(log).contains(&squash(printed)) || (printed.ends_with("bytes") && log.contains(digits))
}

fn check(log_path: &Path, json_path: &Path, t: &mut Tally) {
    let name = log_path.file_name().unwrap().to_string_lossy().into_owned();
    let log = read(log_path);
    let side: Value = serde_json::from_str(&read(json_path)).expect("sidecar json");
    let d = parse(&log);
    t.cases += 1;
    if !d.is_oom {
        t.failures.push(format!("{name}: not recognised as an OOM"));
    }
    let want_format = side["format"].as_str().unwrap_or("");
    let got_format = d.format.map_or("null", |f| f.as_str());
    if want_format != got_format {
        t.failures.push(format!(
            "{name}: format {got_format}, sidecar says {want_format}"
        ));
    }
    let mine = serde_json::to_value(&d.facts).expect("facts serialise");
    let printed = &side["facts_as_printed"];
    for (key, want) in side["facts"].as_object().into_iter().flatten() {
        // The mapping: the sidecar's `cached_bytes` is `reserved_total_bytes` here.
        // (PyTorch 1.0–1.3 printed cached − allocated; where that is below what is allocated
        // the same figure is also reported as reserved_unallocated_bytes — checked below.)
        let field = if key == "cached_bytes" {
            "reserved_total_bytes"
        } else {
            key
        };
        let shown = printed[key].as_str().unwrap_or("");
        if !shown.is_empty() && !in_log(&log, shown) {
            t.facts_not_in_log += 1;
            println!(
                "{name}: {key} = {shown} is stated by the sidecar but not in the log; skipped"
            );
            continue;
        }
        let got = mine[field].as_u64();
        match want.as_u64() {
            None => {
                // Beyond u64 (2^64 bytes): must be null, with a bogus_figure cause.
                let bogus = d.causes.iter().any(|c| c.kind == CauseKind::BogusFigure);
                if got.is_some() || !bogus {
                    t.failures.push(format!(
                        "{name}: {key} is beyond u64, got {got:?}, bogus cause {bogus}"
                    ));
                } else {
                    t.facts_matched += 1;
                }
            }
            Some(w) => {
                let tol = parse_size(shown).map_or(0, |s| s.half_ulp) + 1;
                match got {
                    Some(g) if g.abs_diff(w) <= tol => t.facts_matched += 1,
                    _ => t
                        .failures
                        .push(format!("{name}: {key} = {got:?}, sidecar {w} ({shown})")),
                }
            }
        }
    }
}

fn run_dir(dir: &Path, t: &mut Tally) {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let json = log.with_extension("json");
        if json.is_file() {
            check(&log, &json, t);
        } else {
            // No sidecar: it must still parse without a panic.
            let _ = parse(&read(&log));
        }
    }
}

#[test]
fn shared_corpus_facts_match_their_sidecars() {
    let Some(dir) = corpus_dir() else {
        println!("note: shared/oom-corpus not found beside the clone; skipped (fixtures/oom is still tested)");
        return;
    };
    let mut t = Tally::default();
    run_dir(&dir, &mut t);
    println!(
        "corpus {}: {} cases, {} sidecar facts matched, {} stated only by the sidecar",
        dir.display(),
        t.cases,
        t.facts_matched,
        t.facts_not_in_log
    );
    assert!(
        t.failures.is_empty(),
        "{} mismatches:\n{}",
        t.failures.len(),
        t.failures.join("\n")
    );
    assert!(t.cases >= 40);
}

#[test]
fn fixture_copies_match_their_sidecars() {
    let mut t = Tally::default();
    run_dir(Path::new(FIXTURES), &mut t);
    println!(
        "fixtures: {} cases, {} facts matched",
        t.cases, t.facts_matched
    );
    assert!(t.failures.is_empty(), "{}", t.failures.join("\n"));
    assert!(t.cases >= 10);
}

fn fixture(name: &str) -> vramplan::diagnose::Diagnosis {
    parse(&read(&Path::new(FIXTURES).join(name)))
}

#[test]
fn phases_from_real_tracebacks() {
    let cases = [
        ("corpus-003.log", Phase::Backward),
        ("corpus-024.log", Phase::ModelLoad),
        ("corpus-026.log", Phase::KvCache),
        ("corpus-029.log", Phase::KvCache),
        ("corpus-037.log", Phase::ModelLoad),
        ("corpus-050.log", Phase::Forward),
        ("corpus-062.log", Phase::Backward),
        ("corpus-066.log", Phase::ModelLoad),
    ];
    for (f, want) in cases {
        assert_eq!(fixture(f).phase, want, "{f}");
    }
}

#[test]
fn what_the_real_cases_imply() {
    // Two ranks' messages glued together: both GPUs are reported.
    let d = fixture("corpus-064.log");
    assert_eq!(d.device.as_deref(), Some("0"));
    assert!(d
        .other_reports
        .iter()
        .any(|r| r.device.as_deref() == Some("3")));
    // A container hides "this process": the 41.99 GiB process is this one, the 1.23 GiB one
    // (another rank's context on GPU 0) is the other, and it is named as a cause.
    let d = fixture("corpus-079.log");
    assert_eq!(d.facts.other_processes.len(), 1);
    assert_eq!(d.facts.other_processes[0].pid, 1856718);
    assert!(d.causes.iter().any(|c| c.kind == CauseKind::OtherProcesses));
    // CUDA-graph pools.
    let d = fixture("corpus-077.log");
    assert!(d.causes.iter().any(|c| c.kind == CauseKind::PrivatePools));
    // 2^64 bytes in use: null and bogus.
    let d = fixture("corpus-010.log");
    assert_eq!(d.facts.process_in_use_bytes, None);
    assert!(d.causes.iter().any(|c| c.kind == CauseKind::BogusFigure));
    // A request larger than the whole card comes first.
    let d = fixture("corpus-024.log");
    assert_eq!(d.device.as_deref(), Some("0"));
    // JAX: the printed shape f32[4096,128,3] is exactly the 6 MiB request.
    let d = fixture("corpus-033.log");
    let c = d.culprit.expect("culprit from the log's buffer listing");
    assert_eq!(c.shape, vec![4096, 128, 3]);
    // TensorFlow: the shape gives the bytes and names the node.
    let d = fixture("corpus-054.log");
    assert_eq!(d.culprit.map(|c| c.shape), Some(vec![6272, 30000]));
    assert_eq!(d.phase, Phase::Forward);
    // NCCL names the GPU only by its [local rank] bracket.
    assert_eq!(fixture("corpus-043.log").device.as_deref(), Some("3"));
}

#[test]
fn decoys_are_not_vram_ooms() {
    for f in ["decoy-triton-shared-memory.log", "decoy-cpu-ram.log"] {
        let d = fixture(f);
        assert!(!d.is_oom, "{f}");
        assert_eq!(
            d.causes.first().map(|c| c.kind),
            Some(CauseKind::NotVram),
            "{f}"
        );
    }
    let d = fixture("decoy-triton-shared-memory.log");
    assert!(
        d.causes[0].evidence.contains("shared memory"),
        "{}",
        d.causes[0].evidence
    );
    let d = fixture("decoy-normal-training.log");
    assert!(!d.is_oom);
    assert!(d.causes.is_empty());
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["is_oom"], Value::Bool(false));
}
