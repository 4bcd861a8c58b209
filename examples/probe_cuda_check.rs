//! The probe on a real GPU against the simulator's candle runtime (`--features cuda`; run it
//! where there is one, see README "vramplan probe"):
//!
//!   cargo build --release --features cuda --example probe_cuda_check
//!   LD_LIBRARY_PATH=<PyTorch's nvidia/cu13/lib> ./probe_cuda_check
//!
//! candle allocates every tensor from the device's memory pool, so the pool's USED_MEM_HIGH
//! should equal the CPU counting allocator's tensor bytes — the candle runtime's prediction —
//! unless the pool rounds allocations up. Exits 1 when the worst peak is off by 2% or more.

use vramplan::config::{Precision, TrainConfig};
use vramplan::probe::shapes::{self, SHAPES};
use vramplan::probe::{render_text, run_with, ProbeOptions, Progress};
use vramplan::sim::candle_phase_peaks;

fn main() {
    let predict = |c: &TrainConfig| candle_phase_peaks(c).ok();
    let mut worst: f64 = 0.0;
    for shape in &SHAPES {
        for dtype in [Precision::Float32, Precision::BFloat16] {
            let config = shapes::config(shape, dtype);
            let args = ProbeOptions {
                device: "cuda:0".to_string(),
                ..ProbeOptions::default()
            };
            let report = match run_with(&args, &config, Some(&predict), &Progress::silent()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            };
            println!("{}", render_text(&report));
            println!("{}", serde_json::to_string(&report.phases).unwrap());
            worst = worst.max(report.peak.relative_error.unwrap_or(1.0).abs());
        }
    }
    println!(
        "worst peak error vs the candle runtime: {:.3}%",
        100.0 * worst
    );
    if worst >= 0.02 {
        std::process::exit(1);
    }
}
