//! The CPU probe against the hand count (docs/candle-runtime.md): gradients reach every
//! parameter, measurements are deterministic and match the count within 1% per phase, and
//! extrapolating from two layer counts matches the full run.
//!
//! A counting global allocator sees every thread of this binary, so the tests take one lock and
//! run one at a time, and all candle work runs on one long-lived worker thread: gemm keeps
//! per-thread buffers that a finishing test thread would otherwise free in the middle of the
//! next test's measurement.

mod probe_handcount;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use probe_handcount::formula::formula;
use probe_handcount::gpt::{replay, Dims, Phase};
use std::sync::{mpsc, Mutex, OnceLock};
use vramplan::cli::ProbeArgs;
use vramplan::config::{Precision, TrainConfig};
use vramplan::probe::meter::{CountingAlloc, CpuMeter};
use vramplan::probe::model::{named_params, Gpt, Shape};
use vramplan::probe::run::{measure, run_with, tokens, Progress};
use vramplan::probe::LayerRun;

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

/// (name, B, T, C, H, V, L, bias)
type Spec = (&'static str, u64, u64, u64, u64, u64, u64, bool);

/// The shapes of fixtures/probe/measured-cpu.json: the backward peak sits in the cross-entropy
/// (tiny-gpt, wide-vocab), the GELU backward (char-level) and the attention softmax
/// (long-context).
const SPECS: [Spec; 4] = [
    ("tiny-gpt", 4, 64, 128, 4, 2048, 2, true),
    ("wide-vocab", 8, 128, 256, 8, 8192, 4, false),
    ("char-level", 16, 128, 192, 6, 65, 3, false),
    ("long-context", 2, 256, 128, 8, 512, 2, true),
];

fn config(spec: &Spec, bf16: bool) -> TrainConfig {
    let &(_, b, t, c, h, v, l, bias) = spec;
    TrainConfig {
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
    }
}

fn dims(c: &TrainConfig) -> Dims {
    Dims {
        b: c.batch_size as usize,
        t: c.block_size as usize,
        c: c.n_embd as usize,
        h: c.n_head as usize,
        v: c.vocab_size as usize,
        l: c.n_layer as usize,
        bias: c.bias,
        bf16: c.dtype == Precision::BFloat16,
        dropout: c.dropout > 0.0,
    }
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

fn assert_close(what: &str, run: &LayerRun, count: &[Phase; 3], tol: f64) {
    for (m, h) in run.phases.iter().zip(count) {
        for (field, a, b) in [
            ("start", m.start_bytes, h.start),
            ("peak", m.measured_peak_bytes, h.peak),
            ("end", m.end_bytes, h.end),
        ] {
            let e = rel(a, b);
            assert!(
                e <= tol,
                "{what} {} {field}: measured {a}, counted {b} ({:.3}%)",
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
            let model = Gpt::new(shape, 0.0, dtype, &Device::Cpu, &varmap).unwrap();
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
fn measured_phases_match_the_hand_count_within_one_percent() {
    on_worker(|| {
        for spec in [&SPECS[0], &SPECS[2]] {
            for bf16 in [false, true] {
                let c = config(spec, bf16);
                let run = probe(&c);
                let what = format!("{} {}", spec.0, c.dtype.as_str());
                assert_close(&format!("{what} formula"), &run, &formula(dims(&c)), 0.01);
                assert_close(&format!("{what} replay"), &run, &replay(dims(&c)), 0.01);
            }
        }
    })
}

#[test]
fn dropout_is_counted_by_the_replay() {
    on_worker(|| {
        let c = TrainConfig {
            dropout: 0.1,
            ..config(&SPECS[0], false)
        };
        assert_close(
            "tiny-gpt dropout replay",
            &probe(&c),
            &replay(dims(&c)),
            0.01,
        );
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
        let args = |layers| ProbeArgs {
            config: None,
            device: "cpu".to_string(),
            steps: 2,
            layers,
            margin: "256MiB".to_string(),
            json: false,
            overrides: Vec::new(),
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
        let args = ProbeArgs {
            config: None,
            device: "cuda:0".to_string(),
            steps: 2,
            layers: None,
            margin: "256MiB".to_string(),
            json: false,
            overrides: Vec::new(),
        };
        match run_with(&args, &c, None, &Progress::silent()) {
            Err(e) => assert!(e.message().starts_with("probe:"), "{e}"),
            Ok(r) => assert_eq!(r.device, "cuda:0"),
        }
        let bad = ProbeArgs {
            device: "tpu".to_string(),
            ..args
        };
        assert!(run_with(&bad, &c, None, &Progress::silent()).is_err());
    })
}

/// The committed fixture is reproduced by the documented formula within 1% per phase.
#[test]
fn fixture_matches_the_documented_formula() {
    on_worker(|| {
        let text = std::fs::read_to_string("fixtures/probe/measured-cpu.json").unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let runs = json["runs"].as_array().unwrap();
        assert!(runs.len() >= 8, "at least 4 shapes in f32 and bf16");
        for r in runs {
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
            let f = formula(d);
            // The safety check's bound stays above the real peak.
            let c = TrainConfig {
                batch_size: d.b as u64,
                block_size: d.t as u64,
                n_embd: d.c as u64,
                n_head: d.h as u64,
                vocab_size: d.v as u64,
                n_layer: d.l as u64,
                bias: d.bias,
                dtype: if d.bf16 {
                    Precision::BFloat16
                } else {
                    Precision::Float32
                },
                ..TrainConfig::default()
            };
            let highest = f.iter().map(|p| p.peak).max().unwrap();
            assert!(
                vramplan::probe::coarse_bound(&c) >= highest,
                "{r}: bound below the peak"
            );
            for (p, h) in r["phases"].as_array().unwrap().iter().zip(&f) {
                let (start, peak) = (
                    p["start_bytes"].as_u64().unwrap(),
                    p["measured_peak_bytes"].as_u64().unwrap(),
                );
                assert!(
                    rel(start, h.start) <= 0.01 && rel(peak, h.peak) <= 0.01,
                    "{r}: {p} vs {h:?}"
                );
            }
        }
    })
}

/// `cargo test --test probe_cpu write_fixture -- --ignored` rewrites the fixture.
#[test]
#[ignore]
fn write_fixture() {
    on_worker(|| {
        let mut runs = Vec::new();
        for spec in &SPECS {
            for bf16 in [false, true] {
                let c = config(spec, bf16);
                let run = probe(&c);
                let phases: Vec<_> = run
                    .phases
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "phase": p.name,
                            "start_bytes": p.start_bytes,
                            "measured_peak_bytes": p.measured_peak_bytes,
                            "end_bytes": p.end_bytes,
                        })
                    })
                    .collect();
                runs.push(serde_json::json!({
                    "name": spec.0,
                    "config": {
                        "batch_size": c.batch_size, "block_size": c.block_size, "n_embd": c.n_embd,
                        "n_head": c.n_head, "vocab_size": c.vocab_size, "n_layer": c.n_layer,
                        "bias": c.bias, "dropout": c.dropout,
                    },
                    "dtype": c.dtype.as_str(),
                    "runtime_bytes": run.runtime_bytes,
                    "phases": phases,
                }));
            }
        }
        let doc = serde_json::json!({
            "what": "vramplan probe on CPU: candle 0.11.1 GPT (src/probe/model.rs), forward + backward + AdamW, step 2 of 2, counting global allocator",
            "bytes": "heap bytes above what the process held before the model was built, minus what the first step left for good (runtime_bytes: gemm's per-thread buffers); the loss stays alive through the optimizer step (candle's backward_step order)",
            "machine": format!("{} {}, {} threads", std::env::consts::ARCH, std::env::consts::OS, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
            "runs": runs,
        });
        std::fs::create_dir_all("fixtures/probe").unwrap();
        std::fs::write(
            "fixtures/probe/measured-cpu.json",
            serde_json::to_string_pretty(&doc).unwrap() + "\n",
        )
        .unwrap();
    })
}
