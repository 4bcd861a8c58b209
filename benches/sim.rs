//! Speed of the simulator: `check` on GPT-2 XL must take under 5 ms of compute.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use vramplan::config::TrainConfig;
use vramplan::report::check;

fn gpt2_xl() -> TrainConfig {
    TrainConfig {
        n_layer: 48,
        n_head: 25,
        n_embd: 1600,
        vocab_size: 50257,
        bias: true,
        batch_size: 8,
        gradient_accumulation_steps: 8,
        compile: false,
        ..TrainConfig::default()
    }
}

fn bench_check(c: &mut Criterion) {
    let xl = gpt2_xl();
    c.bench_function("check gpt2-xl (simulate + replay + report)", |b| {
        b.iter(|| check::build(black_box(&xl), None).unwrap())
    });
    let rt = vramplan::sim::Runtime::pytorch(&xl, None);
    c.bench_function("simulate gpt2-xl (timeline only)", |b| {
        b.iter(|| vramplan::run::simulate(black_box(&xl), rt).unwrap())
    });
    let tl = vramplan::run::simulate(&xl, rt).unwrap();
    c.bench_function("replay gpt2-xl (allocator only)", |b| {
        b.iter(|| vramplan::sim::replay(black_box(&tl), false))
    });
    let small = TrainConfig::default();
    c.bench_function("check gpt2-124m", |b| {
        b.iter(|| check::build(black_box(&small), None).unwrap())
    });
}

fn bench_suggest(c: &mut Criterion) {
    // The seed case: GPT-2 124M at batch 64 on an RTX 3060 (target: under 50 ms).
    let seed = TrainConfig {
        batch_size: 64,
        gradient_accumulation_steps: 1,
        ..TrainConfig::default()
    };
    let gpu = vramplan::budget::find("rtx3060").unwrap();
    let budget = vramplan::budget::Budget::from_profile(gpu, 256 << 20).unwrap();
    c.bench_function("suggest gpt2-124m on rtx3060 (whole search)", |b| {
        b.iter(|| {
            vramplan::plan::suggest(
                black_box(&seed),
                &budget,
                &[],
                &vramplan::plan::knobs::Script::defaults(),
            )
            .unwrap()
        })
    });
}

/// Llama-3.1-8B (32 layers, 128k vocabulary): QLoRA training and bf16 inference.
fn bench_llama(c: &mut Criterion) {
    let load = |o: &[&str]| {
        let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        vramplan::config::load_with_model(
            None,
            Some(vramplan::config::ModelSource::Preset("llama-3.1-8b")),
            &o,
        )
        .unwrap()
        .config
    };
    let qlora = load(&[
        "--lora_rank=16",
        "--quantization=nf4",
        "--batch_size=1",
        "--block_size=2048",
        "--activation_checkpointing=True",
        "--compile=False",
    ]);
    c.bench_function("check llama-3.1-8b qlora", |b| {
        b.iter(|| check::build(black_box(&qlora), None).unwrap())
    });
    let serve = load(&["--mode=inference", "--batch_size=8", "--block_size=8192"]);
    c.bench_function("check llama-3.1-8b inference", |b| {
        b.iter(|| check::build(black_box(&serve), None).unwrap())
    });
}

/// The issue-15 cases: suggest on GPT-2 XL (batch 4) on an A100-80GB, and check at 100 and
/// 1,000 layers (GPT-2 124M's width; the config limit is 1,024 layers, `config::limits`),
/// whose ratio shows whether the simulation and the allocator replay grow linearly.
fn bench_scaling(c: &mut Criterion) {
    let xl = TrainConfig {
        batch_size: 4,
        ..gpt2_xl()
    };
    let gpu = vramplan::budget::find("a100-80gb").unwrap();
    let budget = vramplan::budget::Budget::from_profile(gpu, 256 << 20).unwrap();
    let mut g = c.benchmark_group("scaling");
    g.sample_size(10);
    g.bench_function("suggest gpt2-xl batch 4 on a100-80gb", |b| {
        b.iter(|| {
            vramplan::plan::suggest(
                black_box(&xl),
                &budget,
                &[],
                &vramplan::plan::knobs::Script::defaults(),
            )
            .unwrap()
        })
    });
    for n_layer in [100u64, 1_000] {
        let deep = TrainConfig {
            n_layer,
            ..TrainConfig::default()
        };
        g.bench_function(format!("check {n_layer} layers"), |b| {
            b.iter(|| check::build(black_box(&deep), None).unwrap())
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_check,
    bench_suggest,
    bench_llama,
    bench_scaling
);
criterion_main!(benches);
