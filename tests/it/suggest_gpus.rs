//! `suggest --gpus N` and suggest when nothing fits one card: the smallest world size that
//! fits, each candidate fitting per rank and maximal, and launch lines that parse back.

use crate::support::cli::{device_peak, suggest_json, vramplan};
use vramplan::config::{apply_overrides, Parallelism, TrainConfig};
use vramplan::plan::knobs::Script;
use vramplan::plan::multi::{launch, launch_code_changes, per_rank, ORDER};

#[test]
fn gpt2_xl_on_rtx3060s_needs_the_smallest_world_size_that_fits() {
    // Nothing fits one 12 GB card: the multi-GPU plan comes without --gpus, and exit is 0.
    let args = ["--gpu", "rtx3060", "--init_from=gpt2-xl", "--compile=False"];
    let (code, v) = suggest_json(&args);
    assert_eq!(code, 0, "{v}");
    assert!(v["best"].is_null());
    let fitting = v["multi_gpu"]["fitting"].as_array().unwrap();
    assert!(!fitting.is_empty());
    let base: TrainConfig = serde_json::from_value(v["baseline"]["config"].clone()).unwrap();
    let world = fitting[0]["world_size"].as_u64().unwrap();
    for c in fitting {
        let cfg: TrainConfig = serde_json::from_value(c["config"].clone()).unwrap();
        assert_eq!(cfg.world_size, world);
        // It fits per rank, the next batch does not, and the tokens per step are kept.
        let (peak, usable) = device_peak(&cfg, "rtx3060");
        assert!(peak <= usable, "{c}");
        let tokens = base.tokens_per_step().unwrap();
        let next = per_rank(&base, world, cfg.parallelism, cfg.batch_size + 1, tokens);
        assert!(
            device_peak(&next, "rtx3060").0 > usable,
            "{c}: batch + 1 fits"
        );
        assert!(cfg.tokens_per_step().unwrap() >= tokens);
        assert_eq!(cfg.gradient_accumulation_steps % world, 0);
    }
    // Smallest: at half the world size no parallelism fits even batch 1.
    for mode in ORDER {
        let smaller = per_rank(&base, world / 2, mode, 1, base.tokens_per_step().unwrap());
        let (peak, usable) = device_peak(&smaller, "rtx3060");
        assert!(
            peak > usable,
            "{} fits at world size {}",
            mode.as_str(),
            world / 2
        );
    }
}

#[test]
fn launch_lines_parse_back_to_the_planned_run() {
    let base = TrainConfig {
        compile: false,
        ..TrainConfig::default()
    };
    let tokens = base.tokens_per_step().unwrap();
    // nanoGPT's train.py runs under torchrun whatever the parallelism (it has only DDP; the
    // sharded ones are a train.py change, named beside the line).
    for mode in ORDER {
        let cfg = per_rank(&base, 4, mode, 6, tokens);
        let line = launch(&cfg, &base, &Script::defaults());
        assert!(
            line.starts_with("torchrun --standalone --nproc_per_node=4 train.py "),
            "{line}"
        );
        // The flags after train.py are nanoGPT's configurator overrides.
        let flags: Vec<String> = line
            .split(" train.py ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut parsed = base.clone();
        apply_overrides(&mut parsed, &flags).unwrap();
        assert_eq!(parsed.batch_size, cfg.batch_size, "{line}");
        assert_eq!(
            parsed.gradient_accumulation_steps, cfg.gradient_accumulation_steps,
            "{line}"
        );
    }
    // DeepSpeed: per-GPU micro-batch × per-rank accumulation × GPUs × block = tokens/step.
    for (mode, stage) in [
        (Parallelism::Zero1, 1),
        (Parallelism::Zero2, 2),
        (Parallelism::Zero3, 3),
    ] {
        let cfg = per_rank(&base, 4, mode, 6, tokens);
        let changes = launch_code_changes(&cfg, &base, &Script::defaults());
        assert!(changes[0].contains("deepspeed.initialize("), "{changes:?}");
        let ds = vramplan::plan::multi::ds_config(&cfg).unwrap();
        assert_eq!(ds["zero_optimization"]["stage"], stage);
        let micro = ds["train_micro_batch_size_per_gpu"].as_u64().unwrap();
        let ga = ds["gradient_accumulation_steps"].as_u64().unwrap();
        assert_eq!(
            micro * ga * 4 * base.block_size,
            cfg.tokens_per_step().unwrap()
        );
    }
}

#[test]
fn gpus_zero_is_a_usage_error() {
    let (code, _, err) = vramplan(&["suggest", "--gpu", "rtx3060", "--gpus", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--gpus 0"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
