//! The closed-form hand count of docs/candle-runtime.md ("Per-phase formulas") against the
//! simulator's candle runtime on random shapes: the documented formula is a test-side
//! cross-check of the runtime, and of the documentation. Bytes above what the process held
//! before the model was built, for the probe's GPT in candle 0.11.1. The formula is valid for
//! n_head ≥ 2 and B·T ≥ 2·C (otherwise weight-gradient points the table leaves out can take the
//! backward peak; the runtime covers every case).

use vramplan::config::{Precision, TrainConfig};
use vramplan::sim::{phase_bytes, simulate_candle};

#[derive(Clone, Copy, Debug, PartialEq)]
struct Dims {
    b: usize,
    t: usize,
    c: usize,
    h: usize,
    v: usize,
    l: usize,
    bias: bool,
    bf16: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Phase {
    start: u64,
    peak: u64,
    end: u64,
}

/// (start, forward end, backward candidates, backward end, optimizer peak) for `d`.
fn formula(d: Dims) -> [Phase; 3] {
    let (b, t, c, h, v, l) = (
        d.b as u64, d.t as u64, d.c as u64, d.h as u64, d.v as u64, d.l as u64,
    );
    let s: u64 = if d.bf16 { 2 } else { 4 };
    let half = u64::from(d.bf16); // 1 when activations are not f32 (LayerNorm and CE cast)
    let bias = u64::from(d.bias);
    let (n, sc, bt, bht, btv, vc, tc, cc) = (
        b * t * c,
        b * h * t * t,
        b * t,
        b * h * t,
        b * t * v,
        v * c,
        t * c,
        c * c,
    );

    // Parameters: wte, wpe, per layer 12C² + 2C LayerNorm weights (+ 13C with biases), ln_f.
    let per_layer_params = 12 * cc + (2 + 11 * bias) * c;
    let params = vc + tc + l * per_layer_params + (1 + bias) * c;
    // Params + AdamW m and v, the batch (2 × B·T u32), the causal mask (T² u8), positions
    // (T u32), the -inf scalar.
    let start = 3 * s * params + 8 * bt + t * t + 4 * t + s;

    // Forward: everything stays alive (the loss pins the graph).
    let ln = 12 * n + 24 * bt + half * 6 * n + s * n * (1 + bias);
    let per_layer = 2 * ln + s * ((23 + 9 * bias) * n + 6 * sc + 2 * bht);
    let fwd =
        l * per_layer + 2 * s * n + s * tc + ln + s * btv + half * 4 * btv + 12 * btv + 16 * bt + 8;

    // Backward: the highest of these points (bytes above the backward's start). `r`: the grads
    // every lower layer leaves behind (its parameters and its -inf mask operand).
    let r = (l - 1) * s * (sc + per_layer_params);
    let attn_tail = s * (vc + 9 * cc + (2 + 8 * bias) * c) + r;
    let candidates = [
        28 * btv,                                                         // cross-entropy
        s * (3 * n + btv + 5 * vc),                                       // lm_head weight
        s * (5 * n + btv + vc),                                           // lm_head input
        s * ((69 + 4 * bias) * n + vc + 4 * cc + (1 + 2 * bias) * c) + r, // gelu (layer 0)
        s * (12 * n + 3 * sc) + attn_tail,                                // att @ v
        s * (5 * n + 11 * sc) + attn_tail,                                // softmax
        s * (14 * n + 2 * sc) + attn_tail,                                // q, k, v copies
        s * (3 * n + sc + vc + tc + 12 * cc + (3 + 12 * bias) * c) + r,   // wpe
        s * (n + sc + 2 * vc + tc + 12 * cc + (3 + 12 * bias) * c) + r,   // wte
    ];
    let bwd_peak = *candidates.iter().max().unwrap();
    let bwd_end = s * (params + l * sc);

    // AdamW: 14 temporaries of the largest parameter at once.
    let largest = vc.max(4 * cc).max(tc);
    let f_end = start + fwd;
    let b_end = f_end + bwd_end;
    [
        Phase {
            start,
            peak: f_end,
            end: f_end,
        },
        Phase {
            start: f_end,
            peak: f_end + bwd_peak,
            end: b_end,
        },
        Phase {
            start: b_end,
            peak: b_end + 14 * s * largest,
            end: b_end,
        },
    ]
}

#[test]
fn formula_equals_the_candle_runtime_on_random_shapes() {
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
        };
        // The formula's domain: n_head ≥ 2 and B·T ≥ 2·C.
        if d.b * d.t < 2 * d.c {
            continue;
        }
        let cfg = TrainConfig {
            batch_size: d.b as u64,
            block_size: d.t as u64,
            n_embd: d.c as u64,
            n_head: d.h as u64,
            vocab_size: d.v as u64,
            n_layer: d.l as u64,
            bias: d.bias,
            dropout: 0.0,
            dtype: if d.bf16 {
                Precision::BFloat16
            } else {
                Precision::Float32
            },
            ..TrainConfig::default()
        };
        let sim = phase_bytes(&simulate_candle(&cfg).unwrap());
        let f = formula(d);
        for (a, b) in sim.iter().zip(&f) {
            let close = a.start.abs_diff(b.start) <= 8
                && a.peak.abs_diff(b.peak) <= 8
                && a.end.abs_diff(b.end) <= 8;
            assert!(close, "{d:?}\n runtime {sim:?}\n formula {f:?}");
        }
        checked += 1;
    }
    assert!(checked > 500);
}
