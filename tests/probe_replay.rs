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
