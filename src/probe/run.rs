//! Running the probe: forward + backward + AdamW steps on random tokens, each phase metered,
//! with the safety rules for a shared card (never start what the free memory cannot hold; fewer
//! layers and an affine extrapolation instead) and CUDA out-of-memory turned into a finding.

use super::meter::{cpu_available_bytes, CpuMeter, PeakMeter};
use super::model::{dtype_of, gpt, Shape};
use super::{extrapolate, LayerRun, LiveMemory, PhaseMeasurement, ProbeReport};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// The phases of one training step, in order.
pub const PHASES: [&str; 3] = ["forward", "backward", "optimizer"];

/// Why a measurement stopped.
#[derive(Debug)]
pub enum Failure {
    /// The device ran out of memory: a finding, not a crash.
    OutOfMemory {
        phase: String,
        message: String,
    },
    Error(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

fn classify(phase: &str, e: candle_core::Error) -> Failure {
    let message = e.to_string();
    let m = message.to_ascii_lowercase();
    if m.contains("out_of_memory") || m.contains("out of memory") {
        Failure::OutOfMemory {
            phase: phase.to_string(),
            message,
        }
    } else {
        Failure::Error(Error::new(format!("probe: {phase}: {message}")))
    }
}

/// Deterministic token ids (B, T) u32 in [0, V): generated on the host, so the device sees
/// only the batch itself.
pub fn tokens(shape: &Shape, seed: u64, device: &Device) -> candle_core::Result<Tensor> {
    let (b, t, v) = (shape.batch_size, shape.block_size, shape.vocab_size as u64);
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let ids: Vec<u32> = (0..b * t)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % v) as u32
        })
        .collect();
    Tensor::from_vec(ids, (b, t), device)
}

/// An indicatif spinner on stderr with the phase as its message, drawn only when stderr is a
/// terminal (never for --json or in tests). It redraws on each phase change, from the calling
/// thread: a steady tick would run a drawing thread whose allocations the CPU meter would count.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Not a terminal: one plain line per phase on stderr instead of a spinner, so a log or a
    /// CI job shows the probe is alive.
    lines: bool,
}

impl Progress {
    pub fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                lines: true,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} probe: {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        Progress {
            bar: Some(bar),
            lines: false,
        }
    }
    pub fn silent() -> Self {
        Progress {
            bar: None,
            lines: false,
        }
    }
    fn phase(&self, layers: u64, step: u32, steps: u32, phase: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{layers} layers, step {step}/{steps}: {phase}"));
            bar.tick();
        } else if self.lines {
            // Written straight to stderr from the format arguments: no String allocated
            // between phases, where the CPU meter would count it.
            eprintln!("probe: {layers} layers, step {step}/{steps}: {phase}");
        }
    }
    /// Clear the spinner (before the report is printed).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// Build the config's model with `layers` layers on `device`, run `steps` training steps and
/// return the phases of the steps from the second on (the largest peak of each phase), in bytes
/// above what the process held before the model existed, minus what the first step left behind
/// for good (gemm's per-thread packing buffers on CPU; reported as `runtime_bytes`).
pub fn measure(
    config: &TrainConfig,
    layers: u64,
    steps: u32,
    device: &Device,
    meter: &dyn PeakMeter,
    progress: &Progress,
) -> std::result::Result<LayerRun, Failure> {
    let shape = Shape::of(config, layers)?;
    let base = meter.current()?;
    let varmap = VarMap::new();
    let model = gpt(
        shape,
        config.dropout as f32,
        dtype_of(config.dtype),
        device,
        &varmap,
    )
    .map_err(|e| classify("building the model", e))?;
    let params = ParamsAdamW {
        lr: 6e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: config.weight_decay,
    };
    let mut opt =
        AdamW::new(varmap.all_vars(), params).map_err(|e| classify("creating AdamW", e))?;
    let mut first_start = None;
    let mut result: Option<LayerRun> = None;
    for step in 1..=steps.max(1) {
        let seed = u64::from(step);
        let x = tokens(&shape, 2 * seed, device).map_err(|e| classify("batch", e))?;
        let y = tokens(&shape, 2 * seed + 1, device).map_err(|e| classify("batch", e))?;
        let start = meter.current()?;
        let first = *first_start.get_or_insert(start);
        let offset = base + start.saturating_sub(first);
        let rel = |v: u64| v.saturating_sub(offset);
        let mut phases = Vec::with_capacity(3);
        let mut sample = |name: &str, start: u64| -> Result<u64> {
            let end = meter.current()?;
            phases.push(PhaseMeasurement {
                name: name.to_string(),
                measured_peak_bytes: rel(meter.peak()?),
                start_bytes: rel(start),
                end_bytes: rel(end),
                reserved_peak_bytes: meter.reserved_peak()?.map(rel),
            });
            meter.reset_peak()?;
            Ok(end)
        };
        meter.reset_peak()?;
        progress.phase(layers, step, steps, PHASES[0]);
        let loss = model.loss(&x, &y).map_err(|e| classify(PHASES[0], e))?;
        let end = sample(PHASES[0], start)?;
        progress.phase(layers, step, steps, PHASES[1]);
        let grads = loss.backward().map_err(|e| classify(PHASES[1], e))?;
        let end = sample(PHASES[1], end)?;
        progress.phase(layers, step, steps, PHASES[2]);
        // candle's Optimizer::backward_step order: the loss, and with it the whole graph,
        // stays alive until the optimizer step is done.
        opt.step(&grads).map_err(|e| classify(PHASES[2], e))?;
        sample(PHASES[2], end)?;
        drop(grads);
        drop(loss);
        if step >= 2 || steps <= 1 {
            let run = LayerRun {
                layers,
                runtime_bytes: start.saturating_sub(first),
                phases,
            };
            result = Some(match result {
                None => run,
                Some(prev) => prev.max_with(run),
            });
        }
    }
    result.ok_or_else(|| Failure::Error(Error::new("probe: no step was measured")))
}

/// An opened device: candle's handle, its meter and what it had free before the probe.
pub struct Session {
    pub name: String,
    pub device: Device,
    pub meter: Box<dyn PeakMeter>,
    pub live: Option<LiveMemory>,
}

impl Session {
    /// `cpu`, `cuda` or `cuda:N`.
    pub fn open(device: &str, margin: u64) -> Result<Session> {
        let d = device.trim().to_ascii_lowercase();
        if d == "cpu" {
            let live = cpu_available_bytes().map(|free| LiveMemory {
                source: "/proc/meminfo MemAvailable".to_string(),
                total_bytes: None,
                free_bytes: free,
                margin_bytes: margin,
            });
            return Ok(Session {
                name: "cpu".to_string(),
                device: Device::Cpu,
                meter: Box::new(CpuMeter::new()?),
                live,
            });
        }
        let ordinal = match d.strip_prefix("cuda") {
            Some("") => 0,
            Some(n) => match n.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
                Some(i) => i,
                None => crate::bail!(
                    "--device {}: expected cpu, cuda or cuda:N",
                    crate::plain::quote(device)
                ),
            },
            None => crate::bail!(
                "--device {}: expected cpu, cuda or cuda:N",
                crate::plain::quote(device)
            ),
        };
        Self::open_cuda(ordinal, margin)
    }

    #[cfg(feature = "cuda")]
    fn open_cuda(ordinal: usize, margin: u64) -> Result<Session> {
        let (device, meter, live) = super::cuda::open(ordinal, margin)?;
        Ok(Session {
            name: format!("cuda:{ordinal}"),
            device,
            meter: Box::new(meter),
            live: Some(live),
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn open_cuda(_ordinal: usize, _margin: u64) -> Result<Session> {
        crate::bail!(
            "probe: this vramplan was built without CUDA; build it with scripts/build-cuda.sh \
             (cargo feature `cuda`) or use --device cpu"
        )
    }

    /// CUDA context, kernels, cuBLAS and curand: device memory outside candle's pool.
    pub fn context_bytes(&self) -> Option<u64> {
        self.meter.overhead_bytes().ok().flatten()
    }
}

/// How the probe runs: the flags of `vramplan probe` that reach it (the command line's own
/// type stays in `cli`, so the probe does not depend on the front-end that calls it).
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// cpu, cuda or cuda:N.
    pub device: String,
    /// Training steps to run (the peak is measured from the second).
    pub steps: u32,
    /// Run with this many layers and extrapolate (None: the probe's plan decides).
    pub layers: Option<u64>,
    /// Memory kept free on a shared card, as written (`--margin`'s units).
    pub margin: String,
}

impl Default for ProbeOptions {
    /// `vramplan probe`'s defaults: cpu, 2 steps, 256 MiB kept free.
    fn default() -> Self {
        ProbeOptions {
            device: "cpu".to_string(),
            steps: 2,
            layers: None,
            margin: "256MiB".to_string(),
        }
    }
}

/// Run the probe as `vramplan probe` does, predicted by the simulator's `candle` runtime.
pub fn run(args: &ProbeOptions, config: &TrainConfig) -> Result<ProbeReport> {
    let predict = |c: &TrainConfig| crate::sim::candle_phase_peaks(c).ok();
    run_with(args, config, Some(&predict), &Progress::new())
}

/// Predicted peak bytes of each phase, by name, for a config.
pub type Predictor<'a> = &'a dyn Fn(&TrainConfig) -> Option<Vec<(String, u64)>>;

/// The probe with an explicit predictor. `predict`, where given (the simulator's `candle`
/// runtime), gives the predicted peak of each phase for a config; it decides whether the full
/// model may run and fills the report's predicted fields. Without it the safety plan still asks
/// the simulator's candle runtime (there is no second estimate); a config the simulator cannot
/// run counts as not fitting, so only fewer layers are tried.
pub fn run_with(
    args: &ProbeOptions,
    config: &TrainConfig,
    predict: Option<Predictor>,
    progress: &Progress,
) -> Result<ProbeReport> {
    // The same parser as check's --margin: one set of units and errors for every command.
    let margin = crate::budget::parse_bytes(&args.margin)?;
    let session = Session::open(&args.device, margin)?;
    let bound = |layers: u64| -> u64 {
        let mut c = config.clone();
        c.n_layer = layers;
        predict
            .and_then(|p| p(&c))
            .or_else(|| crate::sim::candle_phase_peaks(&c).ok())
            .and_then(|v| v.iter().map(|p| p.1).max())
            .unwrap_or(u64::MAX)
    };
    let plan = super::plan(config.n_layer, args.layers, &session.live, &bound)?;
    let mut report = ProbeReport::new(&session.name, config, session.live.clone());
    report.notes.extend(plan.notes.iter().cloned());
    if args.steps < 2 {
        report.notes.push(
            "measured on the first step: includes what it leaves for good (gemm buffers on CPU)"
                .to_string(),
        );
    }
    let mut runs = Vec::new();
    let mut layer_counts = plan.layers.clone();
    let mut i = 0;
    while let Some(&layers) = layer_counts.get(i) {
        i += 1;
        let device = &session.device;
        match measure(
            config,
            layers,
            args.steps,
            device,
            &*session.meter,
            progress,
        ) {
            Ok(r) => runs.push(r),
            Err(Failure::OutOfMemory { phase, message }) => {
                report.notes.push(format!(
                    "out of memory in the {phase} with {layers} layers: {message}"
                ));
                report.out_of_memory = true;
                runs.clear();
                // The full model did not fit after all: fall back to half the layers, once.
                let k = config.n_layer / 2;
                if layer_counts.len() == 1 && k >= 2 {
                    let half = (k / 2).max(1);
                    report.notes.push(format!(
                        "retrying with {half} and {k} layers to extrapolate"
                    ));
                    layer_counts = vec![half, k];
                    i = 0;
                    continue;
                }
                break;
            }
            Err(Failure::Error(e)) => return Err(e),
        }
    }
    report.context_bytes = session.context_bytes();
    match runs.as_slice() {
        [full] if full.layers == config.n_layer => report.set_measured(full.phases.clone(), false),
        [a, b] => report.set_measured(extrapolate(a, b, config.n_layer), true),
        _ => {}
    }
    report.layers_run = runs.iter().map(|r| r.layers).max().unwrap_or(0);
    report.runs = runs;
    if let Some(p) = predict.and_then(|p| p(config)) {
        report.set_predictions(&p);
    }
    Ok(report)
}
