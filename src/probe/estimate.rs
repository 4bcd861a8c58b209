//! How long a probe will take, said before it starts: the step's FLOPs (the planner's
//! `flops_per_token`, 6·N + 12·L·T·C per token, times the batch's tokens) over the matmul
//! throughput this machine reaches in candle, measured just now. Matmuls are most of a step but
//! not all (softmax, layer norm, AdamW and candle's copies come on top), so the figure is a
//! lower bound on the time, good to a small factor — enough to refuse a 14-minute run that the
//! user expected to take seconds.

use crate::config::{Precision, TrainConfig};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::time::{Duration, Instant};

/// FLOPs of one probe step with `layers` layers: forward and backward of batch_size sequences
/// of block_size tokens (AdamW's elementwise update is negligible beside them).
pub fn step_flops(cfg: &TrainConfig, layers: u64) -> f64 {
    let mut c = cfg.clone();
    c.n_layer = layers;
    crate::plan::speed::flops_per_token(&c) * (cfg.batch_size * cfg.block_size) as f64
}

/// Seconds for `steps` steps at each of `layer_counts` at `flops_per_second`.
pub fn seconds(cfg: &TrainConfig, layer_counts: &[u64], steps: u32, flops_per_second: f64) -> f64 {
    let flops: f64 = layer_counts.iter().map(|&l| step_flops(cfg, l)).sum();
    f64::from(steps.max(1)) * flops / flops_per_second.max(1.0)
}

/// The matmul throughput candle reaches on this CPU in the probe's dtype: a 256 x 256 square
/// matmul repeated for at least 0.2 s, on a thread of its own that then exits — so the gemm
/// buffers it leaves in its thread-locals go with it, and the probe's first step still finds
/// the process as it was (the meter counts what that step leaves behind).
pub fn cpu_flops_per_second(dtype: Precision) -> Result<f64> {
    std::thread::spawn(move || time_matmul(dtype))
        .join()
        .unwrap_or_else(|_| Err(Error::new("probe: timing a matmul failed")))
}

fn time_matmul(dtype: Precision) -> Result<f64> {
    let n = 256usize;
    let dt = crate::sim::candle::dtype_of(dtype);
    let err = |e: candle_core::Error| Error::new(format!("probe: timing a matmul failed: {e}"));
    let a = Tensor::ones((n, n), dt, &Device::Cpu).map_err(err)?;
    let start = Instant::now();
    let mut reps = 0u32;
    while start.elapsed() < Duration::from_millis(200) {
        a.matmul(&a).map_err(err)?;
        reps += 1;
    }
    let flops = 2.0 * (n as f64).powi(3) * f64::from(reps);
    Ok(flops / start.elapsed().as_secs_f64())
}

/// "42 s", "3.5 min", "2.1 h".
pub fn human_duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// What to run so the probe stays under `limit_s`: the full model, or the largest `k` whose
/// k/2 and k layer runs (extrapolated, memory being affine in n_layer) fit. None: not even
/// 1 and 2 layers do.
pub fn layers_within(
    cfg: &TrainConfig,
    steps: u32,
    flops_per_second: f64,
    limit_s: f64,
) -> Option<u64> {
    let full = seconds(cfg, &[cfg.n_layer], steps, flops_per_second);
    if full <= limit_s {
        return Some(cfg.n_layer);
    }
    (2..cfg.n_layer)
        .rev()
        .find(|&k| seconds(cfg, &[(k / 2).max(1), k], steps, flops_per_second) <= limit_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_six_flops_per_parameter_and_token_plus_attention() {
        // nanoGPT's shakespeare_char shape: 6 layers, n_embd 384, block 256, vocab 65,
        // batch 64; N the model's parameters, attention 12·L·T·C per token.
        let cfg = TrainConfig {
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            block_size: 256,
            vocab_size: 65,
            batch_size: 64,
            bias: false,
            ..TrainConfig::default()
        };
        let n = crate::model::n_params(&cfg) as f64;
        let per_token = 6.0 * n + 12.0 * 6.0 * 256.0 * 384.0;
        let want = per_token * 64.0 * 256.0;
        assert!(
            (step_flops(&cfg, 6) - want).abs() < 1.0,
            "{}",
            step_flops(&cfg, 6)
        );
        // Two steps at 1 GFLOP/s.
        assert!((seconds(&cfg, &[6], 2, 1e9) - 2.0 * want / 1e9).abs() < 1e-6);
    }

    #[test]
    fn too_slow_runs_shrink_to_fewer_layers_or_are_refused() {
        let cfg = TrainConfig {
            n_layer: 12,
            ..TrainConfig::default()
        };
        let rate = 1e9;
        let full = seconds(&cfg, &[12], 2, rate);
        assert_eq!(layers_within(&cfg, 2, rate, full), Some(12));
        let k = layers_within(&cfg, 2, rate, full * 0.8).unwrap();
        assert!((2..12).contains(&k));
        assert!(seconds(&cfg, &[k / 2, k], 2, rate) <= full * 0.8);
        let next = k + 1;
        assert!(seconds(&cfg, &[next / 2, next], 2, rate) > full * 0.8);
        assert_eq!(layers_within(&cfg, 2, rate, 1e-3), None);
    }
}
