//! Framework config files (issue #13): each fixture in fixtures/frameworks/ maps onto the
//! config its keys say, with its framework's defaults; bad input is one line naming the key.

use crate::support::cli::vramplan;
use std::path::Path;
use vramplan::config::{
    load_sources, Framework, LossKind, OptimizerKind, Parallelism, Precision, Quantization,
    Sources, TrainConfig,
};

fn load(path: &str, extra: Sources) -> (TrainConfig, Vec<String>) {
    let l = load_sources(&Sources {
        config: Some(Path::new(path)),
        ..extra
    })
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    (l.config, l.warnings)
}

/// Llama 3.2 1B as its config.json has it (profiles/models/llama-3.2-1b.toml).
fn assert_llama_3_2_1b(c: &TrainConfig) {
    assert_eq!(
        (c.n_layer, c.n_head, c.n_kv_head, c.n_embd),
        (16, 32, Some(8), 2048)
    );
    assert_eq!(c.vocab_size, 128256);
}

#[test]
fn trainer_json_is_what_it_says() {
    let (c, _) = load("fixtures/frameworks/trainer_lora.json", Sources::default());
    assert_llama_3_2_1b(&c);
    assert_eq!(c.framework, Framework::HfTrainer);
    // per_device_train_batch_size 2, gradient_accumulation_steps 4 on one device.
    assert_eq!((c.batch_size, c.gradient_accumulation_steps), (2, 4));
    assert_eq!(c.block_size, 512);
    assert_eq!(c.dtype, Precision::BFloat16);
    assert!(c.activation_checkpointing && !c.compile);
    assert_eq!(c.optimizer, OptimizerKind::AdamW);
    assert_eq!((c.lora_rank, c.lora_targets.as_str()), (8, "q_proj,v_proj"));
    assert_eq!((c.lora_alpha, c.lora_dropout), (16.0, 0.0));
    assert_eq!((c.weight_decay, c.grad_clip), (0.0, 1.0));
    // eval_strategy "no": no estimate_loss() after a step.
    assert!(c.eval_interval > c.max_iters);
}

#[test]
fn axolotl_yaml_is_what_it_says() {
    let (c, w) = load("fixtures/frameworks/axolotl_lora.yml", Sources::default());
    assert_llama_3_2_1b(&c);
    assert_eq!(c.framework, Framework::Axolotl);
    assert_eq!(
        (c.batch_size, c.gradient_accumulation_steps, c.block_size),
        (2, 4, 512)
    );
    assert_eq!(c.dtype, Precision::BFloat16);
    assert!(c.activation_checkpointing && c.flash && !c.compile);
    assert_eq!((c.lora_rank, c.lora_targets.as_str()), (8, "q_proj,v_proj"));
    assert_eq!(c.quantization, Quantization::None);
    assert!(c.eval_interval > c.max_iters, "val_set_size: 0");
    assert!(
        w.iter()
            .any(|w| w.contains("axolotl_lora.yml:28: pad_to_sequence_len")),
        "{w:?}"
    );
}

#[test]
fn torchtune_recipe_is_what_it_says() {
    let (c, w) = load(
        "fixtures/frameworks/torchtune_lora.yaml",
        Sources::default(),
    );
    assert_llama_3_2_1b(&c);
    assert_eq!(c.framework, Framework::Torchtune);
    assert_eq!(
        (c.batch_size, c.gradient_accumulation_steps, c.block_size),
        (2, 4, 512)
    );
    assert_eq!(c.dtype, Precision::BFloat16);
    assert!(c.activation_checkpointing && !c.compile);
    assert_eq!((c.lora_rank, c.lora_targets.as_str()), (8, "q_proj,v_proj"));
    assert_eq!(c.loss, LossKind::Chunked, "CEWithChunkedOutputLoss");
    assert_eq!(c.grad_clip, 0.0, "no clip_grad_norm");
    assert!(w.iter().any(|w| w.contains("LoRA adapters")), "{w:?}");
}

#[test]
fn litgpt_config_is_what_it_says() {
    let (c, _) = load("fixtures/frameworks/litgpt_lora.yaml", Sources::default());
    assert_llama_3_2_1b(&c);
    assert_eq!(c.framework, Framework::Litgpt);
    // micro_batch_size 2, global_batch_size 8 on 1 device: 4 micro-steps.
    assert_eq!(
        (c.batch_size, c.gradient_accumulation_steps, c.block_size),
        (2, 4, 512)
    );
    assert_eq!(c.dtype, Precision::BFloat16);
    assert_eq!((c.lora_rank, c.lora_targets.as_str()), (8, "q_proj,v_proj"));
    assert!(
        c.eval_interval <= c.max_iters,
        "eval: interval 100 validates"
    );
    assert_eq!(c.grad_clip, 0.0);
}

#[test]
fn trainer_yaml_reads_its_deepspeed_config() {
    let (c, w) = load("fixtures/frameworks/trainer_full.yaml", Sources::default());
    assert_eq!(
        (c.n_layer, c.n_embd, c.intermediate_size),
        (32, 4096, Some(14336))
    );
    assert_eq!(c.parallelism, Parallelism::Zero2, "ds_zero2.json: stage 2");
    // "auto" in ds_config.json leaves the Trainer's values.
    assert_eq!(
        (c.batch_size, c.gradient_accumulation_steps, c.block_size),
        (1, 8, 2048)
    );
    assert_eq!(c.optimizer, OptimizerKind::AdamW8bit, "paged_adamw_8bit");
    assert!(w.iter().any(|w| w.contains("paged")), "{w:?}");
    assert_eq!(c.lora_rank, 0);
}

#[test]
fn accelerate_config_sets_ranks_and_counts_accumulation_per_rank() {
    let (c, _) = load(
        "fixtures/frameworks/trainer_lora.json",
        Sources {
            accelerate: Some(Path::new("fixtures/frameworks/accelerate_fsdp.yaml")),
            overrides: &["--lora_rank=0".to_string()],
            ..Sources::default()
        },
    );
    assert_eq!((c.world_size, c.parallelism), (8, Parallelism::Fsdp));
    // The Trainer's 4 micro-steps are per rank: 32 over the 8 ranks, 4 as the Trainer counts.
    assert_eq!(c.gradient_accumulation_steps, 32);
    assert_eq!(c.accumulation_as_counted(), 4);
}

#[test]
fn a_preset_alone_takes_the_trainers_defaults() {
    let l = load_sources(&Sources {
        model: Some(vramplan::config::ModelSource::Preset("llama-3.1-8b")),
        ..Sources::default()
    })
    .unwrap();
    let c = l.config;
    assert_eq!(c.framework, Framework::HfTrainer);
    // TrainingArguments: accumulation 1, no compile, no eval, fp32, batch 8.
    assert_eq!((c.gradient_accumulation_steps, c.compile), (1, false));
    assert_eq!((c.dtype, c.batch_size), (Precision::Float32, 8));
    assert!(c.eval_interval > c.max_iters);
    let (code, out, _) = vramplan(&["check", "--model", "llama-3.2-1b"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Run (Hugging Face Trainer semantics): batch_size 8"),
        "{out}"
    );
    // A nanoGPT run keeps train.py's semantics.
    let (_, out, _) = vramplan(&["check"]);
    assert!(out.contains("Run (nanoGPT train.py semantics): batch_size 12 x block_size 1024 x gradient_accumulation_steps 40"), "{out}");
}

/// A file in the temp dir with `text`, named `name`.
fn temp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("vramplan-fw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// exit 2 and one plain line on stderr.
fn refused(args: &[&str]) -> String {
    let (code, _, err) = vramplan(args);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Error {"),
        "{err}"
    );
    err
}

#[test]
fn bad_framework_files_are_one_line_naming_the_key() {
    let p = temp("unknown.yml", "base_model: meta-llama/Llama-3.2-1B\nmicro_batch_size: 2\nsequence_len: 512\nmicro_batchsize: 4\n");
    let err = refused(&["check", &p]);
    assert!(
        err.contains("unknown.yml:4: unknown key 'micro_batchsize' for an axolotl config"),
        "{err}"
    );

    let p = temp("fsdp2.yml", "base_model: meta-llama/Llama-3.2-1B\nfsdp:\n  - full_shard\nfsdp_config:\n  fsdp_version: 2\n");
    let err = refused(&["check", &p]);
    assert!(
        err.contains(
            "fsdp2.yml:5: fsdp_version = 2: FSDP2 (fully_shard) changes memory and is not modelled"
        ),
        "{err}"
    );

    let p = temp(
        "hub.json",
        "{\"model_name_or_path\": \"someorg/not-a-preset-7b\", \"bf16\": true}",
    );
    let err = refused(&["check", &p]);
    assert!(
        err.contains("hub.json:1: the model 'someorg/not-a-preset-7b' is not a built-in preset"),
        "{err}"
    );
    assert!(err.contains("--hf-config path/to/config.json"), "{err}");

    let p = temp(
        "optim.json",
        "{\"model_name_or_path\": \"meta-llama/Llama-3.2-1B\",\n \"optim\": \"adafactor\"}",
    );
    let err = refused(&["check", &p]);
    assert!(err.contains("optim.json:2: optim = \"adafactor\""), "{err}");

    let err = refused(&["check", "fixtures/hf/gemma-2b.json"]);
    assert!(
        err.contains("pass it as --hf-config fixtures/hf/gemma-2b.json"),
        "{err}"
    );
}

#[test]
fn verbose_lists_the_keys_without_memory_effect() {
    let (code, _, err) = vramplan(&[
        "check",
        "fixtures/frameworks/trainer_lora.json",
        "--verbose",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "ignored (no memory effect): fixtures/frameworks/trainer_lora.json:12: learning_rate"
        ),
        "{err}"
    );
    let (_, _, quiet) = vramplan(&["check", "fixtures/frameworks/trainer_lora.json"]);
    assert!(!quiet.contains("learning_rate"), "{quiet}");
}

/// What transformers 4.57.1 writes: `TrainingArguments(output_dir="out",
/// per_device_train_batch_size=2, gradient_accumulation_steps=4, bf16=True,
/// gradient_checkpointing=True, report_to="none").to_dict()`, all 133 keys, dumped as JSON by
/// the library itself, plus `model_name_or_path`. Every key is known.
#[test]
fn a_real_to_dict_dump_is_read_whole() {
    let (c, w) = load(
        "fixtures/frameworks/trainer_to_dict.json",
        Sources::default(),
    );
    assert_llama_3_2_1b(&c);
    assert_eq!((c.batch_size, c.gradient_accumulation_steps), (2, 4));
    assert_eq!(c.dtype, Precision::BFloat16);
    assert!(c.activation_checkpointing && !c.compile);
    assert_eq!(c.lora_rank, 0);
    // No sequence length in TrainingArguments: SFTConfig's default max_length.
    assert_eq!(c.block_size, 1024);
    // Its optim "adamw_torch" (torch < 2.8 where it was dumped) is noted, not exact.
    assert!(
        w.iter()
            .any(|w| w.contains("'adamw_torch' modelled as fused AdamW")),
        "{w:?}"
    );
}

/// base_model naming a local folder: its config.json builds the model (no preset, no network).
#[test]
fn a_local_model_folder_beside_the_file_is_read() {
    let hf = std::fs::read_to_string("fixtures/hf/qwen2.5-0.5b.json").unwrap();
    let want: serde_json::Value = serde_json::from_str(&hf).unwrap();
    let yml = temp(
        "local.yml",
        "base_model: my-model\nmicro_batch_size: 1\nsequence_len: 256\n",
    );
    let dir = Path::new(&yml).parent().unwrap().join("my-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), &hf).unwrap();
    let (c, _) = load(&yml, Sources::default());
    assert_eq!(c.n_layer, want["num_hidden_layers"].as_u64().unwrap());
    assert_eq!(c.n_embd, want["hidden_size"].as_u64().unwrap());
    assert_eq!(c.vocab_size, want["vocab_size"].as_u64().unwrap());
    assert_eq!((c.framework, c.block_size), (Framework::Axolotl, 256));
}

/// torchtune's full fine-tuning recipes and LitGPT's "bf16-true" train the whole model in
/// bf16 (no fp32 master copy, no autocast): precision_mode 'pure'. Their LoRA recipes keep the
/// mixed path (frozen bf16 base, trained adapters).
#[test]
fn pure_half_precision_full_fine_tuning_is_read_as_pure() {
    let torchtune = temp(
        "full_finetune.yaml",
        "model:\n  _component_: torchtune.models.llama3_2.llama3_2_1b\n\
         tokenizer:\n  _component_: torchtune.models.llama3.llama3_tokenizer\n  path: /tmp/t.model\n  max_seq_len: 2048\n\
         batch_size: 2\noptimizer:\n  _component_: torch.optim.AdamW\n  lr: 2.0e-5\ndtype: bf16\n",
    );
    let (c, _) = load(&torchtune, Sources::default());
    assert_eq!(c.dtype, Precision::BFloat16);
    assert_eq!(c.precision_mode, vramplan::config::PrecisionMode::Pure);
    let (code, out, err) = vramplan(&["check", &torchtune, "--gpu", "a100-80gb"]);
    assert!(code == 0 || code == 1, "{err}");
    assert!(out.contains("bfloat16 pure"), "{out}");
    // The LoRA recipe fixture stays mixed.
    let (lora, _) = load(
        "fixtures/frameworks/torchtune_lora.yaml",
        Sources::default(),
    );
    assert_eq!(lora.precision_mode, vramplan::config::PrecisionMode::Mixed);
}

/// Offload read from the files people write: a ds_config's `offload_optimizer` /
/// `offload_param` with device 'cpu', accelerate's DeepSpeed plugin devices, and accelerate's
/// FSDP `fsdp_offload_params`; NVMe stays refused.
#[test]
fn offload_is_read_from_deepspeed_and_accelerate_files() {
    let ds = temp(
        "ds_zero3_offload.json",
        r#"{"bf16": {"enabled": true}, "zero_optimization": {"stage": 3,
            "offload_optimizer": {"device": "cpu", "pin_memory": true},
            "offload_param": {"device": "cpu", "pin_memory": true}}}"#,
    );
    let (c, _) = load(
        "fixtures/frameworks/trainer_lora.json",
        Sources {
            deepspeed: Some(Path::new(&ds)),
            ..Sources::default()
        },
    );
    assert_eq!(c.parallelism, Parallelism::Zero3);
    assert!(c.offload_optimizer && c.offload_params);

    let acc = temp(
        "acc_ds.yaml",
        "distributed_type: DEEPSPEED\nnum_processes: 2\ndeepspeed_config:\n  zero_stage: 2\n  offload_optimizer_device: cpu\n  offload_param_device: none\n",
    );
    let (c, _) = load(
        "fixtures/frameworks/trainer_lora.json",
        Sources {
            accelerate: Some(Path::new(&acc)),
            ..Sources::default()
        },
    );
    assert_eq!(c.parallelism, Parallelism::Zero2);
    assert!(c.offload_optimizer && !c.offload_params);

    let fsdp = std::fs::read_to_string("fixtures/frameworks/accelerate_fsdp.yaml")
        .unwrap()
        .replace("fsdp_offload_params: false", "fsdp_offload_params: true");
    let fsdp = temp("acc_fsdp_offload.yaml", &fsdp);
    let (c, _) = load(
        "fixtures/frameworks/trainer_lora.json",
        Sources {
            accelerate: Some(Path::new(&fsdp)),
            ..Sources::default()
        },
    );
    // LoRA r=8 from the Trainer file, sharded by FSDP with CPUOffload.
    assert_eq!((c.parallelism, c.lora_rank), (Parallelism::Fsdp, 8));
    assert!(c.offload_params && !c.offload_optimizer);

    let nvme = temp(
        "ds_nvme.json",
        r#"{"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}}"#,
    );
    let err = refused(&[
        "check",
        "fixtures/frameworks/trainer_lora.json",
        "--deepspeed",
        &nvme,
    ]);
    assert!(err.contains("offload_param"), "{err}");
    assert!(err.contains("NVMe"), "{err}");
}
