//! The probe's report: measured (and, once the simulator's `candle` runtime provides them,
//! predicted) peaks per phase, with the JSON names of issue 5, and its text rendering.

use super::{LayerRun, PhaseMeasurement};
use crate::config::TrainConfig;
use crate::units::human;
use serde::Serialize;

/// Memory the device had free before the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveMemory {
    pub source: String,
    pub total_bytes: Option<u64>,
    pub free_bytes: u64,
    pub margin_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub measured_peak_bytes: u64,
    pub predicted_peak_bytes: Option<u64>,
    pub start_bytes: u64,
    pub reserved_peak_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeakReport {
    pub measured_bytes: u64,
    pub predicted_bytes: Option<u64>,
    /// (predicted − measured) / measured.
    pub relative_error: Option<f64>,
}

/// What `vramplan probe` prints (`--json` keeps these names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    pub device: String,
    pub config: TrainConfig,
    pub layers_run: u64,
    pub extrapolated: bool,
    pub phases: Vec<PhaseReport>,
    pub peak: PeakReport,
    pub context_bytes: Option<u64>,
    pub live: Option<LiveMemory>,
    /// The device ran out of memory during a run (see notes).
    pub out_of_memory: bool,
    /// Each layer count measured (one for a full run, two when extrapolated).
    pub runs: Vec<LayerRun>,
    pub notes: Vec<String>,
    /// What `check` predicts for the same config under PyTorch on CUDA, for comparison; null
    /// where the front-end did not ask for it.
    pub pytorch: Option<PytorchPrediction>,
}

/// `vramplan check`'s figures for the probe's config: PyTorch's, not candle's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PytorchPrediction {
    /// "pytorch" or "pytorch-compile" (eager figures, an upper bound).
    pub runtime: &'static str,
    pub dtype: &'static str,
    pub attention: &'static str,
    /// torch.cuda.max_memory_allocated() at the run's peak.
    pub peak_allocated_bytes: u64,
    /// Why the two runtimes differ, in one line.
    pub why_they_differ: String,
}

impl ProbeReport {
    pub fn new(device: &str, config: &TrainConfig, live: Option<LiveMemory>) -> Self {
        ProbeReport {
            device: device.to_string(),
            config: config.clone(),
            layers_run: 0,
            extrapolated: false,
            phases: Vec::new(),
            peak: PeakReport {
                measured_bytes: 0,
                predicted_bytes: None,
                relative_error: None,
            },
            context_bytes: None,
            live,
            out_of_memory: false,
            runs: Vec::new(),
            notes: Vec::new(),
            pytorch: None,
        }
    }

    /// The full model's phases (measured or extrapolated).
    pub fn set_measured(&mut self, phases: Vec<PhaseMeasurement>, extrapolated: bool) {
        self.extrapolated = extrapolated;
        self.phases = phases
            .into_iter()
            .map(|p| PhaseReport {
                name: p.name,
                measured_peak_bytes: p.measured_peak_bytes,
                predicted_peak_bytes: None,
                start_bytes: p.start_bytes,
                reserved_peak_bytes: p.reserved_peak_bytes,
            })
            .collect();
        self.peak.measured_bytes = self
            .phases
            .iter()
            .map(|p| p.measured_peak_bytes)
            .max()
            .unwrap_or(0);
        self.update_error();
    }

    /// Fill the predicted peaks (by phase name) and the peak's relative error.
    pub fn set_predictions(&mut self, predicted: &[(String, u64)]) {
        for p in &mut self.phases {
            p.predicted_peak_bytes = predicted.iter().find(|q| q.0 == p.name).map(|q| q.1);
        }
        self.peak.predicted_bytes = predicted.iter().map(|q| q.1).max();
        self.update_error();
    }

    fn update_error(&mut self) {
        self.peak.relative_error = match (self.peak.predicted_bytes, self.peak.measured_bytes) {
            (Some(p), m) if m > 0 => Some((p as f64 - m as f64) / m as f64),
            _ => None,
        };
    }
}

/// The report as text: per phase start, measured peak, predicted peak and error.
pub fn render_text(r: &ProbeReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let how = match (r.extrapolated, r.runs.as_slice()) {
        (true, [a, b]) => format!(
            "extrapolated to {} layers from {} and {}",
            r.config.n_layer, a.layers, b.layers
        ),
        _ => format!("{} layers", r.layers_run),
    };
    let _ = writeln!(
        s,
        "probe on {} ({how}), dtype {}",
        r.device,
        r.config.dtype.as_str()
    );
    if let Some(l) = &r.live {
        let _ = writeln!(
            s,
            "free before: {} ({}), margin {}",
            human(l.free_bytes),
            l.source,
            human(l.margin_bytes)
        );
    }
    if !r.phases.is_empty() {
        let _ = writeln!(
            s,
            "{:<10} {:>12} {:>12} {:>12} {:>8}",
            "phase", "start", "peak", "predicted", "error"
        );
        for p in &r.phases {
            let (pred, err) = match p.predicted_peak_bytes {
                Some(x) if p.measured_peak_bytes > 0 => {
                    let e =
                        (x as f64 - p.measured_peak_bytes as f64) / p.measured_peak_bytes as f64;
                    (human(x), format!("{:+.2}%", 100.0 * e))
                }
                _ => ("-".to_string(), "-".to_string()),
            };
            let _ = writeln!(
                s,
                "{:<10} {:>12} {:>12} {:>12} {:>8}",
                p.name,
                human(p.start_bytes),
                human(p.measured_peak_bytes),
                pred,
                err
            );
        }
        let _ = write!(s, "peak: {} measured", human(r.peak.measured_bytes));
        if let (Some(p), Some(e)) = (r.peak.predicted_bytes, r.peak.relative_error) {
            let _ = write!(s, ", {} predicted ({:+.2}%)", human(p), 100.0 * e);
        }
        s.push('\n');
    }
    if let Some(c) = r.context_bytes {
        let _ = writeln!(
            s,
            "CUDA context, kernels, cuBLAS and curand outside the pool: {}",
            human(c)
        );
    }
    if let Some(p) = &r.pytorch {
        let _ = writeln!(
            s,
            "PyTorch on CUDA (`vramplan check`: {}, {}, {} attention): peak {} allocated, against candle's {} measured here",
            p.runtime,
            p.dtype,
            p.attention,
            human(p.peak_allocated_bytes),
            human(r.peak.measured_bytes)
        );
        let _ = writeln!(s, "why they differ: {}", p.why_they_differ);
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
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

    #[test]
    fn json_keeps_the_issue_names() {
        let mut r = ProbeReport::new("cpu", &TrainConfig::default(), None);
        r.set_measured(
            vec![phase("forward", 1, 100, 90), phase("backward", 90, 200, 95)],
            false,
        );
        r.set_predictions(&[("forward".to_string(), 110), ("backward".to_string(), 190)]);
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "device",
            "config",
            "layers_run",
            "extrapolated",
            "phases",
            "peak",
            "context_bytes",
            "live",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["phases"][1]["name"], "backward");
        assert_eq!(v["phases"][1]["measured_peak_bytes"], 200);
        assert_eq!(v["phases"][1]["predicted_peak_bytes"], 190);
        assert_eq!(v["peak"]["measured_bytes"], 200);
        assert_eq!(v["peak"]["predicted_bytes"], 190);
        assert!((v["peak"]["relative_error"].as_f64().unwrap() + 0.05).abs() < 1e-12);
        assert!(v["context_bytes"].is_null() && v["live"].is_null());
        let text = render_text(&r);
        assert!(
            text.contains("backward") && text.contains("-5.00%"),
            "{text}"
        );
    }
}
