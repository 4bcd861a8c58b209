//! The probe on a real GPU (`--features cuda`, ignored: run it where there is one):
//!
//!   LD_LIBRARY_PATH=<PyTorch's nvidia/cu13/lib> ./probe_cuda-<hash> --ignored --nocapture
//!
//! candle allocates every tensor from the device's memory pool, so the pool's USED_MEM_HIGH
//! should equal the CPU counting allocator's tensor bytes — the documented formula — unless the
//! pool rounds allocations up (not measured yet: this test is where that is found out).
#![cfg(feature = "cuda")]

mod probe_handcount;

use probe_handcount::formula::formula;
use probe_handcount::gpt::Dims;
use vramplan::cli::ProbeArgs;
use vramplan::config::{Precision, TrainConfig};
use vramplan::probe::{render_text, run_with, Progress};

#[test]
#[ignore]
fn cuda_pool_peaks_match_the_formula() {
    let specs = [
        (4u64, 64u64, 128u64, 4u64, 2048u64, 2u64, true),
        (8, 128, 256, 8, 8192, 4, false),
        (16, 128, 192, 6, 65, 3, false),
        (2, 256, 128, 8, 512, 2, true),
    ];
    let mut worst: f64 = 0.0;
    for (b, t, c, h, v, l, bias) in specs {
        for bf16 in [false, true] {
            let config = TrainConfig {
                batch_size: b,
                block_size: t,
                n_embd: c,
                n_head: h,
                vocab_size: v,
                n_layer: l,
                bias,
                dropout: 0.0,
                dtype: if bf16 {
                    Precision::BFloat16
                } else {
                    Precision::Float32
                },
                ..TrainConfig::default()
            };
            let args = ProbeArgs {
                config: None,
                device: "cuda:0".to_string(),
                steps: 2,
                layers: None,
                margin: "256MiB".to_string(),
                json: false,
                overrides: Vec::new(),
            };
            let report = run_with(&args, &config, None, &Progress::silent()).unwrap();
            let d = Dims {
                b: b as usize,
                t: t as usize,
                c: c as usize,
                h: h as usize,
                v: v as usize,
                l: l as usize,
                bias,
                bf16,
                dropout: false,
            };
            let f = formula(d);
            let predicted: Vec<(String, u64)> = report
                .phases
                .iter()
                .zip(&f)
                .map(|(p, q)| (p.name.clone(), q.peak))
                .collect();
            let mut report = report;
            report.set_predictions(&predicted);
            println!("{}", render_text(&report));
            println!("{}", serde_json::to_string(&report.phases).unwrap());
            worst = worst.max(report.peak.relative_error.unwrap_or(1.0).abs());
        }
    }
    println!("worst peak error vs the CPU formula: {:.3}%", 100.0 * worst);
    assert!(worst < 0.02);
}
