//! The CPU probe against the simulator's candle runtime (`vramplan::sim::candle`, rules in
//! docs/candle-runtime.md): gradients reach every parameter, measurements are deterministic and
//! match the prediction within 1% per phase (start, peak and end; f32 and bf16; several
//! shapes), and extrapolating from two layer counts matches the full run.
//!
//! A counting global allocator sees every thread of this binary, so the tests take one lock and
//! run one at a time, and all candle work runs on one long-lived worker thread: gemm keeps
//! per-thread buffers that a finishing test thread would otherwise free in the middle of the
//! next test's measurement.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use std::sync::{mpsc, Mutex, OnceLock};
use vramplan::config::{Precision, TrainConfig};
use vramplan::probe::meter::{CountingAlloc, CpuMeter};
use vramplan::probe::model::{gpt, named_params, Shape};
use vramplan::probe::run::{measure, run_with, tokens, ProbeOptions, Progress};
use vramplan::probe::LayerRun;
use vramplan::sim::{phase_bytes, simulate_candle, PhaseBytes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

static SERIAL: Mutex<()> = Mutex::new(());

type Job = Box<dyn FnOnce() + Send>;

/// Run `f` on the worker thread, one test at a time; panics are passed on.
fn on_worker<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    static WORKER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tx = WORKER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::spawn(move || rx.into_iter().for_each(|job| job()));
            Mutex::new(tx)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (done, result) = mpsc::channel();
    let job: Job = Box::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = done.send(r);
    });
    tx.send(job).expect("worker alive");
    match result.recv().expect("worker answered") {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

use vramplan::probe::shapes::SHAPES as SPECS;

fn config(spec: &vramplan::probe::shapes::Shape, bf16: bool) -> TrainConfig {
    let dtype = if bf16 {
        Precision::BFloat16
    } else {
        Precision::Float32
    };
    vramplan::probe::shapes::config(spec, dtype)
}

/// The candle runtime's phases for `c`.
fn predicted(c: &TrainConfig) -> Vec<PhaseBytes> {
    phase_bytes(&simulate_candle(c).expect("the candle runtime simulates the config"))
}

fn probe(c: &TrainConfig) -> LayerRun {
    let meter = CpuMeter::new().expect("the counting allocator is installed");
    match measure(c, c.n_layer, 2, &Device::Cpu, &meter, &Progress::silent()) {
        Ok(r) => r,
        Err(e) => panic!("probe failed: {e:?}"),
    }
}

fn rel(measured: u64, counted: u64) -> f64 {
    (counted as f64 - measured as f64).abs() / measured as f64
}

fn assert_close(what: &str, run: &LayerRun, count: &[PhaseBytes], tol: f64) {
    assert_eq!(run.phases.len(), count.len());
    for (m, h) in run.phases.iter().zip(count) {
        assert_eq!(m.name, h.name);
        for (field, a, b) in [
            ("start", m.start_bytes, h.start),
            ("peak", m.measured_peak_bytes, h.peak),
            ("end", m.end_bytes, h.end),
        ] {
            let e = rel(a, b);
            assert!(
                e <= tol,
                "{what} {} {field}: measured {a}, predicted {b} ({:.3}%)",
                m.name,
                100.0 * e
            );
        }
    }
}

#[test]
fn every_parameter_gets_a_gradient() {
    on_worker(|| {
        for (bias, dtype) in [(true, DType::F32), (false, DType::BF16)] {
            let c = TrainConfig {
                bias,
                ..config(&SPECS[0], false)
            };
            let shape = Shape::of(&c, 2).unwrap();
            let varmap = VarMap::new();
            let model = gpt(shape, 0.0, dtype, &Device::Cpu, &varmap).unwrap();
            let x = tokens(&shape, 1, &Device::Cpu).unwrap();
            let y = tokens(&shape, 2, &Device::Cpu).unwrap();
            let grads = model.loss(&x, &y).unwrap().backward().unwrap();
            let params = named_params(&varmap);
            // wte, wpe, ln_f (+ bias), per layer 2 LayerNorms and 4 Linears (+ their biases).
            let expected = if bias { 2 + 2 + 2 * 12 } else { 2 + 1 + 2 * 6 };
            assert_eq!(params.len(), expected, "{dtype:?} bias={bias}");
            for (name, var) in params {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient"));
                let norm = g
                    .to_dtype(DType::F32)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap();
                let norm = norm.to_scalar::<f32>().unwrap();
                assert!(
                    norm.is_finite() && norm > 0.0,
                    "{name}: gradient norm² {norm}"
                );
            }
        }
    })
}

#[test]
fn measured_phases_match_the_candle_runtime_within_one_percent() {
    on_worker(|| {
        for spec in [&SPECS[0], &SPECS[2], &SPECS[3]] {
            for bf16 in [false, true] {
                let c = config(spec, bf16);
                let what = format!("{} {}", spec.0, c.dtype.as_str());
                assert_close(&what, &probe(&c), &predicted(&c), 0.01);
            }
        }
    })
}

#[test]
fn dropout_is_predicted_by_the_candle_runtime() {
    on_worker(|| {
        let c = TrainConfig {
            dropout: 0.1,
            ..config(&SPECS[0], false)
        };
        assert_close("tiny-gpt dropout", &probe(&c), &predicted(&c), 0.01);
    })
}

/// What `vramplan probe` prints: the predicted column filled in by the candle runtime.
#[test]
fn the_report_compares_measurement_with_prediction() {
    on_worker(|| {
        let c = config(&SPECS[2], true);
        let args = ProbeOptions::default();
        let predict = |c: &TrainConfig| vramplan::sim::candle_phase_peaks(c).ok();
        let report = run_with(&args, &c, Some(&predict), &Progress::silent()).unwrap();
        let text = vramplan::probe::render_text(&report);
        assert!(text.contains("predicted"), "{text}");
        let e = report.peak.relative_error.expect("a predicted peak");
        assert!(e.abs() <= 0.01, "peak error {e}\n{text}");
    })
}

#[test]
fn measurements_are_deterministic() {
    on_worker(|| {
        let c = config(&SPECS[3], true);
        let (a, b) = (probe(&c), probe(&c));
        for (p, q) in a.phases.iter().zip(&b.phases) {
            let e = rel(p.measured_peak_bytes, q.measured_peak_bytes);
            assert!(
                e <= 0.001,
                "{}: {} then {}",
                p.name,
                p.measured_peak_bytes,
                q.measured_peak_bytes
            );
        }
    })
}

#[test]
fn extrapolation_from_two_layer_counts_matches_the_full_run() {
    on_worker(|| {
        let c = TrainConfig {
            n_layer: 6,
            ..config(&SPECS[2], false)
        };
        let args = |layers| ProbeOptions {
            layers,
            ..ProbeOptions::default()
        };
        let full = run_with(&args(None), &c, None, &Progress::silent()).unwrap();
        let extra = run_with(&args(Some(3)), &c, None, &Progress::silent()).unwrap();
        assert!(!full.extrapolated && extra.extrapolated);
        assert_eq!((full.layers_run, extra.layers_run), (6, 3));
        assert_eq!(
            extra.runs.iter().map(|r| r.layers).collect::<Vec<_>>(),
            [1, 3]
        );
        for (f, x) in full.phases.iter().zip(&extra.phases) {
            let e = rel(f.measured_peak_bytes, x.measured_peak_bytes);
            assert!(
                e <= 0.01,
                "{}: full {} extrapolated {}",
                f.name,
                f.measured_peak_bytes,
                x.measured_peak_bytes
            );
        }
        let e = rel(full.peak.measured_bytes, extra.peak.measured_bytes);
        assert!(
            e <= 0.01,
            "peak: full {} extrapolated {}",
            full.peak.measured_bytes,
            extra.peak.measured_bytes
        );
    })
}

/// `--device cuda` where there is no GPU (or no CUDA in this build) is a plain error.
#[test]
fn cuda_without_a_gpu_is_a_plain_error() {
    on_worker(|| {
        let c = config(&SPECS[0], false);
        let args = ProbeOptions {
            device: "cuda:0".to_string(),
            ..ProbeOptions::default()
        };
        match run_with(&args, &c, None, &Progress::silent()) {
            Err(e) => assert!(e.message().starts_with("probe:"), "{e}"),
            Ok(r) => assert_eq!(r.device, "cuda:0"),
        }
        let bad = ProbeOptions {
            device: "tpu".to_string(),
            ..args
        };
        assert!(run_with(&bad, &c, None, &Progress::silent()).is_err());
    })
}

/// The committed fixture (4 shapes × f32 and bf16, examples/probe_write_fixture.rs) is
/// predicted by the candle runtime within 1% per phase, and the safety check's coarse bound
/// stays above it. `--nocapture` prints the table of docs/candle-runtime.md.
#[test]
fn fixture_matches_the_candle_runtime() {
    // On the worker too: the simulator's tables are allocations the counting allocator would
    // add to another test's measurement running beside it.
    on_worker(|| {
        let text = std::fs::read_to_string("fixtures/probe/measured-cpu.json").unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let runs = json["runs"].as_array().unwrap();
        assert!(runs.len() >= 8, "at least 4 shapes in f32 and bf16");
        println!(
            "| shape | dtype | phase | start (measured) | peak (measured) | peak (predicted) | error |"
        );
        println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
        for r in runs {
            let cfg = &r["config"];
            let g = |k: &str| cfg[k].as_u64().unwrap();
            let c = TrainConfig {
                batch_size: g("batch_size"),
                block_size: g("block_size"),
                n_embd: g("n_embd"),
                n_head: g("n_head"),
                vocab_size: g("vocab_size"),
                n_layer: g("n_layer"),
                bias: cfg["bias"].as_bool().unwrap(),
                dropout: 0.0,
                dtype: if r["dtype"] == "bfloat16" {
                    Precision::BFloat16
                } else {
                    Precision::Float32
                },
                ..TrainConfig::default()
            };
            let pred = predicted(&c);
            for (p, h) in r["phases"].as_array().unwrap().iter().zip(&pred) {
                let (start, peak, end) = (
                    p["start_bytes"].as_u64().unwrap(),
                    p["measured_peak_bytes"].as_u64().unwrap(),
                    p["end_bytes"].as_u64().unwrap(),
                );
                println!(
                    "| {} | {} | {} | {start} | {peak} | {} | {:+.3}% |",
                    r["name"].as_str().unwrap(),
                    r["dtype"].as_str().unwrap(),
                    h.name,
                    h.peak,
                    100.0 * (h.peak as f64 - peak as f64) / peak as f64
                );
                assert_eq!(p["phase"], h.name);
                assert!(
                    rel(start, h.start) <= 0.01
                        && rel(peak, h.peak) <= 0.01
                        && rel(end, h.end) <= 0.01,
                    "{r}: {p} vs {h:?}"
                );
            }
        }
    })
}
