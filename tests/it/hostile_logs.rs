//! OOM logs mutated from fixtures/oom through `vramplan diagnose -` (issue 16): each is
//! diagnosed (exit 0) or refused in one plain line (exit 2), under the wall-time and memory
//! limits of tests/it/support/hostile.rs.

use crate::support::hostile::{assert_plain, run};

/// The mutations of one log: cut short, invisible characters, numbers blown up, lines
/// repeated, bytes that are not UTF-8. Deterministic, so a failure reproduces.
/// The mutations of one log: cut short, invisible characters, numbers blown up, lines
/// repeated, bytes that are not UTF-8. Deterministic, so a failure reproduces.
fn mutations(log: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(log);
    let mut out = vec![
        log[..log.len() / 2].to_vec(),
        log[..log.len() / 7].to_vec(),
        text.replace(' ', "\u{a0}").into_bytes(),
        text.replace("GiB", "\u{200b}GiB").into_bytes(),
        text.replace(|c: char| c.is_ascii_digit(), "9").into_bytes(),
        text.replace('.', "99999999999999999999.").into_bytes(),
        text.lines()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
        text.repeat(50).into_bytes(),
    ];
    let mut noisy = log.to_vec();
    for i in (0..noisy.len()).step_by(13) {
        noisy[i] = 0xff;
    }
    out.push(noisy);
    out
}

#[test]
fn mutated_oom_logs_are_diagnosed_or_refused_in_one_line() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/oom");
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() >= 20, "the corpus: {logs:?}");
    let mut runs = 0;
    for log in &logs {
        let bytes = std::fs::read(log).unwrap();
        for (i, input) in mutations(&bytes).iter().enumerate() {
            let o = run(&["diagnose", "-"], &[], Some(input));
            let what = format!("{} mutation {i}", log.display());
            assert!(
                o.code == 0 || o.code == 2,
                "{what}: exit {} {}",
                o.code,
                o.stderr
            );
            assert_plain(&o);
            if o.code == 2 {
                assert_eq!(o.stderr.lines().count(), 1, "{what}: {}", o.stderr);
            }
            runs += 1;
        }
    }
    assert!(runs >= 180, "{runs}");
}
