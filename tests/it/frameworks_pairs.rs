//! One run (Llama 3.2 1B, LoRA r=8 on q_proj and v_proj, batch 2 x 512 tokens, 4 micro-steps,
//! bf16, gradient checkpointing) written four ways: nanoGPT overrides, TrainingArguments JSON,
//! axolotl YAML and a torchtune recipe. Where the frameworks agree the configs are equal and
//! simulate to the same bytes; where they do not, they differ by exactly the documented
//! differences, and applying those differences gives the same bytes. Then `suggest --gpus 8`
//! in the Trainer's convention.

use crate::support::cli::{device_peak, suggest_json};
use serde_json::{json, Map, Value};
use std::path::Path;
use vramplan::config::{load_sources, load_with_model, ModelSource, Sources, TrainConfig};

fn nanogpt() -> TrainConfig {
    let o: Vec<String> = [
        "--batch_size=2",
        "--block_size=512",
        "--gradient_accumulation_steps=4",
        "--dtype=bfloat16",
        "--activation_checkpointing=True",
        "--lora_rank=8",
        "--lora_alpha=16",
        "--lora_dropout=0.0",
        "--lora_targets=q_proj,v_proj",
    ]
    .map(String::from)
    .to_vec();
    load_with_model(None, Some(ModelSource::Preset("llama-3.2-1b")), &o)
        .unwrap()
        .config
}

fn file(path: &str) -> TrainConfig {
    load_sources(&Sources {
        config: Some(Path::new(path)),
        ..Sources::default()
    })
    .unwrap()
    .config
}

fn trainer() -> TrainConfig {
    file("fixtures/frameworks/trainer_lora.json")
}
fn axolotl() -> TrainConfig {
    file("fixtures/frameworks/axolotl_lora.yml")
}
fn torchtune() -> TrainConfig {
    file("fixtures/frameworks/torchtune_lora.yaml")
}

/// The keys whose values differ, as (key, a's, b's).
fn diff(a: &TrainConfig, b: &TrainConfig) -> Vec<(String, Value, Value)> {
    let (Value::Object(a), Value::Object(b)) = (json!(a), json!(b)) else {
        unreachable!()
    };
    let mut out: Vec<_> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone(), b[k].clone()))
        .collect();
    out.sort_by(|x, y| x.0.cmp(&y.0));
    out
}

/// `a` with `changes` applied (key -> value as the JSON of TrainConfig writes it).
fn with(a: &TrainConfig, changes: &[(&str, Value)]) -> TrainConfig {
    let Value::Object(mut m) = json!(a) else {
        unreachable!()
    };
    let extra: Map<String, Value> = changes
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    m.extend(extra);
    serde_json::from_value(Value::Object(m)).unwrap()
}

/// `a` and `b` differ by exactly `documented` (key, a's value, b's value); with those applied,
/// `a` is `b` and simulates to the same device bytes on an RTX 3060.
fn check_pair(a: &TrainConfig, b: &TrainConfig, documented: &[(&str, Value, Value)]) {
    let want: Vec<(String, Value, Value)> = documented
        .iter()
        .map(|(k, x, y)| (k.to_string(), x.clone(), y.clone()))
        .collect();
    let mut want = want;
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(diff(a, b), want);
    let applied: Vec<(&str, Value)> = documented.iter().map(|(k, _, y)| (*k, y.clone())).collect();
    let a2 = with(a, &applied);
    assert_eq!(a2, *b);
    assert_eq!(device_peak(&a2, "rtx3060").0, device_peak(b, "rtx3060").0);
}

fn fw(name: &str) -> Value {
    json!(name)
}

/// nanoGPT's train.py compiles, evaluates every 2000 iterations (after the step that
/// simulates) and decays weights by 0.1; TrainingArguments: torch_compile False,
/// eval_strategy "no", weight_decay 0.0. The Trainer's file writes use_reentrant false, which
/// nanoGPT's printed change runs by default. The rest of this run is written in both.
fn nanogpt_vs_trainer_differences() -> Vec<(&'static str, Value, Value)> {
    vec![
        ("framework", fw("nanogpt"), fw("hf-trainer")),
        ("compile", json!(true), json!(false)),
        ("eval_interval", json!(2000), json!(600_001)),
        ("weight_decay", json!(0.1), json!(0.0)),
        ("use_reentrant", Value::Null, json!(false)),
    ]
}

#[test]
fn nanogpt_and_trainer_differ_by_the_trainers_defaults() {
    check_pair(&nanogpt(), &trainer(), &nanogpt_vs_trainer_differences());
}

#[test]
fn trainer_and_axolotl_agree() {
    // axolotl builds a Trainer: only the name of the semantics differs.
    check_pair(
        &trainer(),
        &axolotl(),
        &[("framework", fw("hf-trainer"), fw("axolotl"))],
    );
}

/// torchtune's recipe does not clip unless clip_grad_norm is set (the Trainer's
/// max_grad_norm is 1.0), and its recipes compute the loss with CEWithChunkedOutputLoss; its
/// checkpoint wrapper is non-reentrant without being told (the Trainer's file says so).
fn trainer_vs_torchtune_differences() -> Vec<(&'static str, Value, Value)> {
    vec![
        ("framework", fw("hf-trainer"), fw("torchtune")),
        ("grad_clip", json!(1.0), json!(0.0)),
        ("loss", json!("standard"), json!("chunked")),
        ("use_reentrant", json!(false), Value::Null),
    ]
}

#[test]
fn trainer_and_torchtune_differ_by_clipping_and_the_chunked_loss() {
    let (t, tt) = (trainer(), torchtune());
    check_pair(&t, &tt, &trainer_vs_torchtune_differences());
    assert_ne!(device_peak(&t, "rtx3060").0, device_peak(&tt, "rtx3060").0);
}

#[test]
fn nanogpt_and_axolotl_differ_as_nanogpt_and_the_trainer() {
    let mut d = nanogpt_vs_trainer_differences();
    d[0].2 = fw("axolotl");
    check_pair(&nanogpt(), &axolotl(), &d);
}

#[test]
fn nanogpt_and_torchtune_differ_by_both_sets() {
    let mut d = nanogpt_vs_trainer_differences();
    d[0].2 = fw("torchtune");
    // Both leave use_reentrant to their (non-reentrant) default.
    d.retain(|(k, _, _)| *k != "use_reentrant");
    d.extend(
        trainer_vs_torchtune_differences()
            .into_iter()
            .skip(1)
            .filter(|(k, _, _)| *k != "use_reentrant"),
    );
    check_pair(&nanogpt(), &torchtune(), &d);
}

#[test]
fn axolotl_and_torchtune_differ_as_the_trainer_and_torchtune() {
    let mut d = trainer_vs_torchtune_differences();
    d[0].1 = fw("axolotl");
    check_pair(&axolotl(), &torchtune(), &d);
}

/// "gradient_accumulation_steps=K" in a TrainingArguments(...) line.
fn trainer_accumulation(line: &str) -> u64 {
    let at = line.find("gradient_accumulation_steps=").expect(line)
        + "gradient_accumulation_steps=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The example, in bf16 with gradient checkpointing so that it fits: a Trainer run
/// planned for exactly 8 ranks, the per-rank accumulation the same in every printed line and
/// ds_config.json, and the tokens of the Trainer's global batch (per device x 8 x accumulation)
/// kept.
#[test]
fn suggest_gpus_8_plans_8_ranks_in_the_trainers_convention() {
    let (_, v) = suggest_json(&[
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "h100-80gb",
        "--gpus",
        "8",
        "--batch_size=4",
        "--block_size=4096",
        "--dtype=bfloat16",
        "--activation_checkpointing=True",
    ]);
    let m = &v["multi_gpu"];
    assert_eq!(m["planned_world_size"], 8);
    // 8B parameters' weights, gradients and AdamW state (16 bytes each) exceed one 80 GB card.
    assert!(m["smallest_world_size"].as_u64().unwrap() > 1);
    let fitting = m["fitting"].as_array().unwrap();
    assert!(!fitting.is_empty());
    let tokens = 4 * 4096 * 8;
    for c in fitting {
        assert_eq!(c["world_size"], 8);
        let cfg = &c["config"];
        let b = cfg["batch_size"].as_u64().unwrap();
        let per_rank = cfg["gradient_accumulation_steps"].as_u64().unwrap() / 8;
        assert_eq!(
            c["tokens_per_step"].as_u64().unwrap(),
            b * 4096 * per_rank * 8
        );
        assert_eq!(c["tokens_per_step"].as_u64().unwrap(), tokens);
        let args = c["code_changes"][0].as_str().unwrap();
        assert_eq!(trainer_accumulation(args), per_rank, "{args}");
        assert!(
            args.contains(&format!("per_device_train_batch_size={b}")),
            "{args}"
        );
        if let Some(ds) = c["ds_config"].as_object() {
            assert_eq!(ds["gradient_accumulation_steps"].as_u64(), Some(per_rank));
            assert_eq!(ds["train_micro_batch_size_per_gpu"].as_u64(), Some(b));
        }
        let launch = c["launch"].as_str().unwrap();
        assert!(
            launch.contains("--num_processes 8") || launch.contains("--num_gpus 8"),
            "{launch}"
        );
    }
}

/// A framework file gets its answer as the keys to change in that file, in its own format.
#[test]
fn suggest_answers_in_the_files_own_keys() {
    for (file, line) in [
        (
            "fixtures/frameworks/axolotl_lora.yml",
            "micro_batch_size: {b}, gradient_accumulation_steps: {a}",
        ),
        (
            "fixtures/frameworks/trainer_lora.json",
            "\"per_device_train_batch_size\": {b}, \"gradient_accumulation_steps\": {a}",
        ),
        (
            "fixtures/frameworks/torchtune_lora.yaml",
            "batch_size: {b}, gradient_accumulation_steps: {a}",
        ),
    ] {
        let (_, v) = suggest_json(&[file, "--gpu", "rtx3060"]);
        let best = &v["best"];
        let b = best["config"]["batch_size"].as_u64().unwrap();
        // One rank: the per-rank count is the count.
        let a = best["config"]["gradient_accumulation_steps"]
            .as_u64()
            .unwrap();
        let cmd = best["command"].as_str().unwrap();
        let want = line
            .replace("{b}", &b.to_string())
            .replace("{a}", &a.to_string());
        assert!(cmd.contains(&format!("{file}: {want}")), "{cmd}");
        // The user's 2 x 512 x 4 = 4096 tokens per step, kept.
        assert_eq!(best["tokens_per_step"].as_u64(), Some(b * 512 * a));
        assert!(b * 512 * a >= 4096);
    }
}

/// A Trainer YAML that names its own ZeRO-2 ds_config, planned for 8 GPUs: every candidate
/// changes the file's keys with the per-rank accumulation its ds_config.json also says, and a
/// candidate that leaves DeepSpeed drops the file's deepspeed key.
#[test]
fn a_trainer_file_over_8_gpus_is_answered_in_its_keys() {
    let path = "fixtures/frameworks/trainer_full.yaml";
    let (_, v) = suggest_json(&[path, "--gpu", "h100-80gb", "--gpus", "8"]);
    let m = &v["multi_gpu"];
    assert_eq!(m["planned_world_size"], 8);
    // The file: per device 1 x 2048 tokens x 8 micro-steps, on 8 devices.
    let tokens = 2048 * 8 * 8;
    for c in m["fitting"].as_array().unwrap() {
        let cfg = &c["config"];
        let b = cfg["batch_size"].as_u64().unwrap();
        let per_rank = cfg["gradient_accumulation_steps"].as_u64().unwrap() / 8;
        assert_eq!(c["tokens_per_step"].as_u64(), Some(tokens));
        assert_eq!(b * per_rank * 8 * 2048, tokens);
        let launch = c["launch"].as_str().unwrap();
        assert_eq!(
            launch,
            format!("accelerate launch --num_processes 8 train.py {path}")
        );
        let change = c["code_changes"][0].as_str().unwrap();
        let keys = format!(
            "{path}: per_device_train_batch_size: {b}, gradient_accumulation_steps: {per_rank}"
        );
        assert!(change.starts_with(&keys), "{change}");
        if let Some(ds) = c["ds_config"].as_object() {
            assert_eq!(ds["gradient_accumulation_steps"].as_u64(), Some(per_rank));
        }
        let mode = c["parallelism"].as_str().unwrap();
        assert_eq!(
            change.contains("deepspeed: null"),
            mode.starts_with("fsdp") || mode == "ddp",
            "{change}"
        );
    }
    // The human-readable answer says the plan's world size and, apart, the smallest one.
    let (_, text, _) =
        crate::support::cli::vramplan(&["suggest", path, "--gpu", "h100-80gb", "--gpus", "8"]);
    assert!(text.contains("Planned for 8 GPUs"), "{text}");
    let smallest = m["smallest_world_size"].as_u64().unwrap();
    assert!(
        text.contains(&format!(
            "The smallest world size that fits is {smallest} GPUs."
        )),
        "{text}"
    );
}
