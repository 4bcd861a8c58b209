//! Rewrites fixtures/probe/measured-cpu.json: the CPU probe measured on 4 shapes in f32 and
//! bf16 (step 2 of 2, counting global allocator). tests/probe_cpu.rs checks the candle runtime
//! against it.
//!
//!   cargo run --release --example probe_write_fixture

use candle_core::Device;
use vramplan::config::Precision;
use vramplan::probe::meter::{CountingAlloc, CpuMeter};
use vramplan::probe::run::{measure, Progress};
use vramplan::probe::shapes::{config, SHAPES};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let meter = CpuMeter::new()?;
    let mut runs = Vec::new();
    for shape in &SHAPES {
        let (name, b, t, c, h, v, l, bias) = *shape;
        for dtype in [Precision::Float32, Precision::BFloat16] {
            let cfg = config(shape, dtype);
            let run = measure(&cfg, l, 2, &Device::Cpu, &meter, &Progress::silent())
                .map_err(|e| format!("{name}: {e:?}"))?;
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
                "name": name,
                "config": {
                    "batch_size": b, "block_size": t, "n_embd": c, "n_head": h,
                    "vocab_size": v, "n_layer": l, "bias": bias, "dropout": 0.0,
                },
                "dtype": dtype.as_str(),
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
    std::fs::create_dir_all("fixtures/probe")?;
    std::fs::write(
        "fixtures/probe/measured-cpu.json",
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    println!("wrote fixtures/probe/measured-cpu.json");
    Ok(())
}
