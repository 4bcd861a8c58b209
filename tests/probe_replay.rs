//! The documented closed-form hand count (tests/probe_handcount/formula.rs, written out in
//! docs/candle-runtime.md) against the op-by-op replay of candle, on random shapes.

mod probe_handcount;

use probe_handcount::formula::formula;
use probe_handcount::gpt::{replay, Dims};

#[test]
fn formula_equals_replay_on_random_shapes() {
    let mut seed = 777u64;
    let mut rnd = |lo: usize, hi: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + (seed % (hi - lo + 1) as u64) as usize
    };
    let mut checked = 0;
    for i in 0..1500 {
        let h = rnd(2, 6);
        let d = Dims {
            b: rnd(1, 8),
            t: rnd(2, 64),
            c: h * rnd(1, 16),
            h,
            v: rnd(2, 400),
            l: rnd(1, 4),
            bias: i % 2 == 0,
            bf16: i % 4 < 2,
            dropout: false,
        };
        // The formula's domain: n_head ≥ 2 and B·T ≥ 2·C.
        if d.b * d.t < 2 * d.c {
            continue;
        }
        let (r, f) = (replay(d), formula(d));
        for (a, b) in r.iter().zip(&f) {
            let close = a.start.abs_diff(b.start) <= 8
                && a.peak.abs_diff(b.peak) <= 8
                && a.end.abs_diff(b.end) <= 8;
            assert!(close, "{d:?}\n replay  {r:?}\n formula {f:?}");
        }
        checked += 1;
    }
    assert!(checked > 500);
}

/// `cargo test --test probe_replay fixture_table -- --ignored --nocapture`: the markdown table
/// of docs/candle-runtime.md (fixture vs formula).
#[test]
#[ignore]
fn fixture_table() {
    let text = std::fs::read_to_string("fixtures/probe/measured-cpu.json").unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    println!(
        "| shape | dtype | phase | start (measured) | peak (measured) | peak (formula) | error |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for r in json["runs"].as_array().unwrap() {
        let cfg = &r["config"];
        let g = |k: &str| cfg[k].as_u64().unwrap() as usize;
        let d = Dims {
            b: g("batch_size"),
            t: g("block_size"),
            c: g("n_embd"),
            h: g("n_head"),
            v: g("vocab_size"),
            l: g("n_layer"),
            bias: cfg["bias"].as_bool().unwrap(),
            bf16: r["dtype"] == "bfloat16",
            dropout: false,
        };
        for (p, f) in r["phases"].as_array().unwrap().iter().zip(&formula(d)) {
            let m = p["measured_peak_bytes"].as_u64().unwrap();
            println!(
                "| {} | {} | {} | {} | {} | {} | {:+.3}% |",
                r["name"].as_str().unwrap(),
                r["dtype"].as_str().unwrap(),
                p["phase"].as_str().unwrap(),
                p["start_bytes"],
                m,
                f.peak,
                100.0 * (f.peak as f64 - m as f64) / m as f64
            );
        }
    }
}
