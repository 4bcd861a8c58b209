//! A 1 MB log diagnosed: a long multi-rank training log (prefixes, timestamps, long progress
//! lines that the wrap rejoiner has to consider) ending in the seed OOM. Target: < 20 ms.
//!
//! Needs in Cargo.toml: `[[bench]] name = "diagnose"  harness = false`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const SEED: &str = include_str!("../fixtures/oom/seed-nanogpt-rtx3060.log");

fn one_megabyte_log() -> String {
    let mut log = String::with_capacity(1 << 20);
    let mut i = 0u64;
    while log.len() < (1 << 20) - SEED.len() {
        let rank = i % 2;
        log.push_str(&format!(
            "[rank{rank}]: 2024-05-01T12:{:02}:{:02}.{:03}Z iter {i}: loss {:.4}, time 1162.31ms, mfu 10.92%, max memory allocated 6.78 GiB, reserved 7.00 GiB\n",
            (i / 60) % 60,
            i % 60,
            i % 1000,
            10.0 / (1.0 + i as f64 / 100.0)
        ));
        if i.is_multiple_of(50) {
            log.push_str(&format!(
                "[rank{rank}]: train:  {}%|{}| {i}/600000 [01:23<12:34:56,  1.23it/s] {}\n",
                i % 100,
                "#".repeat(90),
                "x".repeat(40)
            ));
            log.push_str(&format!("[rank{rank}]: W0501 12:00:00.000000 140475426195264 torch/_dynamo/convert_frame.py:762] torch._dynamo hit config.cache_size_limit (8) function: 'forward'\n"));
        }
        i += 1;
    }
    for line in SEED.lines() {
        log.push_str("[rank0]: ");
        log.push_str(line);
        log.push('\n');
    }
    log
}

fn bench(c: &mut Criterion) {
    let log = one_megabyte_log();
    assert!(log.len() >= 1 << 20);
    let d = vramplan::diagnose::parse(&log);
    assert!(d.is_oom && d.facts.tried_to_allocate_bytes.is_some());
    c.bench_function("diagnose 1 MB log", |b| {
        b.iter(|| vramplan::diagnose::parse(black_box(&log)))
    });
}

/// `vramplan diagnose fixtures/oom/seed-nanogpt-rtx3060.log --config
/// fixtures/configs/seed-rtx3060.py` as the command runs it: the log read and parsed, the
/// config simulated, the culprit matched, the causes ranked, suggest's fixes computed. The
/// patterns compile once per process, in the first call (before the samples): the whole
/// process's time is for `/usr/bin/time` to take.
fn bench_seed_with_config(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let args = vramplan::cli::DiagnoseArgs {
        log: dir.join("fixtures/oom/seed-nanogpt-rtx3060.log"),
        config: Some(dir.join("fixtures/configs/seed-rtx3060.py")),
        gpu: None,
        model: None,
        hf_config: None,
        json: true,
        overrides: Vec::new(),
    };
    let (d, _) = vramplan::commands::diagnosis(&args).unwrap();
    assert!(d.is_oom && d.culprit.is_some());
    c.bench_function("diagnose seed log with its config (whole command)", |b| {
        b.iter(|| vramplan::commands::diagnosis(black_box(&args)).unwrap())
    });
}

criterion_group!(benches, bench, bench_seed_with_config);
criterion_main!(benches);
