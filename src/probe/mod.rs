//! The probe: run the config's GPT for real in candle (forward + backward + AdamW) and measure
//! each phase's peak exactly — on CPU with a counting global allocator, on CUDA with the memory
//! pool's high-water marks — to compare with the simulator's `candle` runtime.
//!
//! candle's retention rules, op by op, are in docs/candle-runtime.md.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod estimate;
pub mod meter;
pub mod model;
pub mod run;
pub mod shapes;

mod report;

pub use report::{
    render_text, LiveMemory, PeakReport, PhaseReport, ProbeReport, PytorchPrediction,
};
pub use run::{run, run_with, Predictor, ProbeOptions, Progress};

use crate::error::Result;
use crate::units::human;
use serde::Serialize;

/// One phase of one measured step. Bytes are above what the process held before the model was
/// built (on CPU also minus what the first step left behind for good).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseMeasurement {
    pub name: String,
    /// Most bytes in use during the phase.
    pub measured_peak_bytes: u64,
    /// Bytes in use when the phase began.
    pub start_bytes: u64,
    /// Bytes in use when the phase ended.
    pub end_bytes: u64,
    /// The CUDA pool's reserved high-water mark; None on CPU.
    pub reserved_peak_bytes: Option<u64>,
}

/// What one model size (layer count) measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerRun {
    pub layers: u64,
    pub phases: Vec<PhaseMeasurement>,
    /// Bytes the first step left allocated for good (gemm's per-thread buffers on CPU),
    /// excluded from the phases' numbers.
    pub runtime_bytes: u64,
}

impl LayerRun {
    /// Per phase, the larger peak of the two runs (the later run's other fields).
    pub fn max_with(self, later: LayerRun) -> LayerRun {
        let phases = later
            .phases
            .into_iter()
            .zip(&self.phases)
            .map(|(mut p, q)| {
                p.measured_peak_bytes = p.measured_peak_bytes.max(q.measured_peak_bytes);
                p
            })
            .collect();
        LayerRun { phases, ..later }
    }
}

/// Affine extrapolation of two runs (`a.layers < b.layers`) to `n_layer`: each phase's start,
/// end and peak are affine in the layer count. A phase's peak may sit at different places for
/// different depths (backward: in the cross-entropy part for shallow models, at the end with
/// all grads for deep ones), so the extrapolated peak is never below the extrapolated end.
pub fn extrapolate(a: &LayerRun, b: &LayerRun, n_layer: u64) -> Vec<PhaseMeasurement> {
    let (ka, kb, n) = (a.layers as f64, b.layers as f64, n_layer as f64);
    let lin = |va: u64, vb: u64| -> u64 {
        let slope = (vb as f64 - va as f64) / (kb - ka);
        (vb as f64 + (n - kb) * slope).round().max(0.0) as u64
    };
    a.phases
        .iter()
        .zip(&b.phases)
        .map(|(pa, pb)| {
            let start = lin(pa.start_bytes, pb.start_bytes);
            let end = lin(pa.end_bytes, pb.end_bytes);
            let peak = lin(pa.measured_peak_bytes, pb.measured_peak_bytes);
            PhaseMeasurement {
                name: pb.name.clone(),
                measured_peak_bytes: peak.max(start).max(end),
                start_bytes: start,
                end_bytes: end,
                reserved_peak_bytes: match (pa.reserved_peak_bytes, pb.reserved_peak_bytes) {
                    (Some(x), Some(y)) => Some(lin(x, y)),
                    _ => None,
                },
            }
        })
        .collect()
}

/// Which layer counts to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One entry (the full model) or two (extrapolate); empty when nothing can run safely.
    pub layers: Vec<u64>,
    pub notes: Vec<String>,
}

/// Decide what to run: the full model if `bound(n_layer)` fits in free − margin, else the two
/// largest safe layer counts k/2 and k (k ≥ 2) for an extrapolation; `forced` (--layers) wins.
pub fn plan(
    n_layer: u64,
    forced: Option<u64>,
    live: &Option<LiveMemory>,
    bound: &dyn Fn(u64) -> u64,
) -> Result<Plan> {
    if n_layer == 0 {
        crate::bail!("probe: n_layer must be at least 1");
    }
    let pair = |k: u64| vec![(k / 2).max(1), k];
    let mut notes = Vec::new();
    if let Some(k) = forced {
        if k >= n_layer {
            return Ok(Plan {
                layers: vec![n_layer],
                notes,
            });
        }
        if k < 2 {
            crate::bail!("probe: --layers {k}: at least 2 layers are needed to extrapolate (two layer counts are measured)");
        }
        notes.push(format!(
            "--layers {k}: measured {} and {k} layers and extrapolated to {n_layer} (memory is affine in n_layer)",
            (k / 2).max(1)
        ));
        return Ok(Plan {
            layers: pair(k),
            notes,
        });
    }
    let Some(live) = live else {
        notes.push("free memory unknown: the full model ran without a safety check".to_string());
        return Ok(Plan {
            layers: vec![n_layer],
            notes,
        });
    };
    let budget = live.free_bytes.saturating_sub(live.margin_bytes);
    let full = bound(n_layer);
    if full <= budget {
        return Ok(Plan {
            layers: vec![n_layer],
            notes,
        });
    }
    let fits: Vec<u64> = (2..n_layer).filter(|&k| bound(k) <= budget).collect();
    match fits.last() {
        Some(&k) => {
            notes.push(format!(
                "{n_layer} layers may need {} but only {} is free minus the {} margin: measured {} and {k} layers and extrapolated (memory is affine in n_layer)",
                human(full), human(live.free_bytes), human(live.margin_bytes), (k / 2).max(1)
            ));
            Ok(Plan {
                layers: pair(k),
                notes,
            })
        }
        None => {
            notes.push(format!(
                "not run: even 2 layers may need {} and only {} is free minus the {} margin",
                human(bound(2.min(n_layer))),
                human(live.free_bytes),
                human(live.margin_bytes)
            ));
            Ok(Plan {
                layers: Vec::new(),
                notes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, start: u64, peak: u64, end: u64) -> PhaseMeasurement {
        PhaseMeasurement {
            name: name.to_string(),
            measured_peak_bytes: peak,
            start_bytes: start,
            end_bytes: end,
            reserved_peak_bytes: None,
        }
    }

    fn run(layers: u64, phases: Vec<PhaseMeasurement>) -> LayerRun {
        LayerRun {
            layers,
            phases,
            runtime_bytes: 0,
        }
    }

    #[test]
    fn extrapolation_is_affine_and_never_below_the_end() {
        // Peak at the cross-entropy for shallow models (slope 10), end grows faster (slope 40).
        let a = run(1, vec![phase("backward", 100, 200, 150)]);
        let b = run(2, vec![phase("backward", 110, 210, 190)]);
        let x = extrapolate(&a, &b, 10);
        assert_eq!((x[0].start_bytes, x[0].end_bytes), (190, 510));
        assert_eq!(x[0].measured_peak_bytes, 510);
        let x = extrapolate(&a, &b, 2);
        assert_eq!(x[0].measured_peak_bytes, 210);
    }

    fn live(free: u64) -> Option<LiveMemory> {
        Some(LiveMemory {
            source: "test".to_string(),
            total_bytes: None,
            free_bytes: free,
            margin_bytes: 100,
        })
    }

    #[test]
    fn plan_runs_the_full_model_when_it_fits_and_extrapolates_otherwise() {
        let bound = |k: u64| 1000 * k;
        assert_eq!(plan(12, None, &live(20_000), &bound).unwrap().layers, [12]);
        // 12 000 > 9 900 free - margin: the largest k that fits is 9; measure 4 and 9.
        let p = plan(12, None, &live(10_000), &bound).unwrap();
        assert_eq!(p.layers, [4, 9]);
        assert!(p.notes[0].contains("extrapolated"));
        // Not even two layers fit: nothing runs, and the note says so.
        let p = plan(12, None, &live(1_500), &bound).unwrap();
        assert!(p.layers.is_empty() && p.notes[0].starts_with("not run"));
        // --layers forces the pair; --layers ≥ n_layer is the full model; 1 cannot extrapolate.
        assert_eq!(plan(12, Some(6), &None, &bound).unwrap().layers, [3, 6]);
        assert_eq!(plan(12, Some(20), &None, &bound).unwrap().layers, [12]);
        assert!(plan(12, Some(1), &None, &bound).is_err());
        assert_eq!(plan(12, None, &None, &bound).unwrap().layers, [12]);
    }
}
