//! An axolotl YAML (axolotl's config reference, docs/config-reference.qmd). axolotl builds a
//! Hugging Face Trainer, so its accumulation is per rank and its optimizer names are the
//! Trainer's.

use super::doc::{unknown, unsupported, DeepSpeedRef, Doc, Mapped};
use super::fsdp::{fsdp, fsdp_config};
use super::hf_trainer::{checkpointing_kwargs, int, lora_targets};
use super::optim::map_trainer_optim;
use crate::config::value::Value;
use crate::error::Result;
use serde_json::Value as Json;

/// Keys that do not change GPU memory.
const IGNORED: &[&str] = &[
    "model_type",
    "tokenizer_type",
    "tokenizer_config",
    "tokenizer_use_fast",
    "strict",
    "datasets",
    "test_datasets",
    "dataset_prepared_path",
    "output_dir",
    "chat_template",
    "train_on_inputs",
    "group_by_length",
    "num_epochs",
    "max_steps",
    "lr_scheduler",
    "learning_rate",
    "warmup_steps",
    "warmup_ratio",
    "logging_steps",
    "save_steps",
    "saves_per_epoch",
    "save_total_limit",
    "save_safetensors",
    "evals_per_epoch",
    "eval_steps",
    "eval_table_size",
    "eval_max_new_tokens",
    "eval_sample_packing",
    "special_tokens",
    "tokens",
    "early_stopping_patience",
    "resume_from_checkpoint",
    "auto_resume_from_checkpoints",
    "local_rank",
    "hub_model_id",
    "hub_strategy",
    "hub_repo",
    "hub_token",
    "hf_use_auth_token",
    "trust_remote_code",
    "lora_model_dir",
    "lora_fan_in_fan_out",
    "debug",
    "seed",
    "is_llama_derived_model",
    "is_mistral_derived_model",
    "is_qwen_derived_model",
    "wandb_project",
    "wandb_entity",
    "wandb_watch",
    "wandb_name",
    "wandb_run_id",
    "wandb_log_model",
    "wandb_mode",
    "wandb_runid",
    "wandb_run",
    "mlflow_experiment_name",
    "dataset_processes",
    "data_processes",
    "tf32",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "optim_args",
    "lr_scheduler_kwargs",
    "cosine_min_lr_ratio",
    "shuffle_merged_datasets",
    "default_system_message",
    "device_map",
    "max_memory",
    "plugins",
    "strict_mode",
    "do_eval",
    "lora_on_cpu",
    "pretraining_dataset",
];

pub(crate) fn map(doc: &Doc) -> Result<Mapped> {
    let mut out = Mapped::default();
    let mut adapter = None;
    for (key, v) in &doc.map {
        let key = key.as_str();
        if v.is_null() {
            continue;
        }
        match key {
            "base_model" | "base_model_config" => {
                out.model = Some((doc.str(key, v)?.to_string(), doc.origin(key)))
            }
            "adapter" => adapter = Some(doc.str(key, v)?.to_string()),
            "optimizer" => map_trainer_optim(doc, key, v, &mut out)?,
            "max_grad_norm" => out.set(doc, key, "grad_clip", Value::Float(doc.float(key, v)?)),
            "weight_decay" => out.set(doc, key, "weight_decay", Value::Float(doc.float(key, v)?)),
            "torch_compile" => out.set(doc, key, "compile", Value::Bool(doc.bool(key, v)?)),
            "val_set_size" => {
                if doc.float(key, v)? > 0.0 {
                    out.set(doc, key, "eval_interval", int(1));
                }
            }
            "deepspeed" => {
                out.deepspeed = Some((
                    DeepSpeedRef::Path(doc.str(key, v)?.to_string()),
                    doc.origin(key),
                ))
            }
            "overrides_of_model_config" | "model_config" => model_config(doc, key, v, &mut out)?,
            "fsdp" => fsdp(doc, key, v, &mut out)?,
            "fsdp_config" => fsdp_config(doc, key, v, &mut out)?,
            "neftune_noise_alpha" => {
                return Err(unsupported(doc, key, v, "NEFTune embedding noise"))
            }
            "resize_token_embeddings_to_32x" => {
                if doc.bool(key, v)? {
                    out.note(doc, key, "the vocabulary padded to a multiple of 32 is not modelled (at most 31 rows more)");
                }
            }
            k if batch_key(doc, k, v, &mut out)? => {}
            k if lora_key(doc, k, v, &mut out)? => {}
            k if memory_key(doc, k, v, &mut out)? => {}
            k if IGNORED.contains(&k) => out.ignore(doc, key),
            _ => return Err(unknown(doc, key, "an axolotl config")),
        }
    }
    adapter_keys(doc, &mut out, adapter.as_deref())?;
    Ok(out)
}

/// The batch, the sequence length and the precision. True when `key` was one of them.
fn batch_key(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<bool> {
    match key {
        "micro_batch_size" => out.set(doc, key, "batch_size", int(doc.count(key, v)?)),
        "eval_batch_size" => out.set(doc, key, "eval_batch_size", int(doc.count(key, v)?)),
        "gradient_accumulation_steps" => out.set(
            doc,
            key,
            "gradient_accumulation_steps",
            int(doc.count(key, v)?),
        ),
        "batch_size" => {
            return Err(doc.fail(key, v, "axolotl's deprecated global batch_size: write gradient_accumulation_steps (per GPU) instead"));
        }
        "sequence_len" => out.set(doc, key, "block_size", int(doc.count(key, v)?)),
        "bf16" => match v {
            Json::String(s) if s == "auto" => {
                out.set(doc, key, "dtype", Value::Str("bfloat16".into()));
                out.note(doc, key, "'auto' is bf16 on a card that has it; on one that does not, axolotl trains in fp32, which this run does not show");
            }
            _ => {
                if doc.bool(key, v)? {
                    out.set(doc, key, "dtype", Value::Str("bfloat16".into()))
                }
            }
        },
        "fp16" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "dtype", Value::Str("float16".into()))
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// LoRA's settings and the base weights' quantization. True when `key` was one of them.
fn lora_key(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<bool> {
    match key {
        "lora_r" => out.set(doc, key, "lora_rank", int(doc.count(key, v)?)),
        "lora_alpha" => out.set(doc, key, "lora_alpha", Value::Float(doc.float(key, v)?)),
        "lora_dropout" => out.set(doc, key, "lora_dropout", Value::Float(doc.float(key, v)?)),
        "lora_target_modules" => lora_targets(doc, key, v, out)?,
        "lora_target_linear" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "lora_targets", Value::Str("all-linear".into()))
            }
        }
        "lora_modules_to_save" => {
            if v.as_array().is_some_and(|a| !a.is_empty()) {
                return Err(unsupported(
                    doc,
                    key,
                    v,
                    "training full copies of modules beside LoRA (lora_modules_to_save)",
                ));
            }
        }
        "load_in_4bit" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "quantization", Value::Str("nf4".into()))
            }
        }
        "load_in_8bit" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "quantization", Value::Str("int8".into()))
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Checkpointing, attention kernels, packing and the fused losses. True when `key` was one of them.
fn memory_key(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<bool> {
    match key {
        "gradient_checkpointing" => match v {
            // axolotl/utils/gradient_checkpointing: 'offload' wraps each layer in
            // CPU_Offloaded_Gradient_Checkpointer (offload_cpu.py); 'offload_disk' writes the
            // inputs to disk (offload_disk.py), which is not modelled.
            Json::String(s) if s == "offload" => {
                out.set(doc, key, "activation_checkpointing", Value::Bool(true));
                out.set(doc, key, "checkpoint_policy", Value::Str("offload".into()));
            }
            Json::String(s) if s == "offload_disk" => {
                return Err(unsupported(doc, key, v, "checkpoints offloaded to disk"))
            }
            _ => out.set(
                doc,
                key,
                "activation_checkpointing",
                Value::Bool(doc.bool(key, v)?),
            ),
        },
        "gradient_checkpointing_kwargs" => checkpointing_kwargs(doc, key, v, out)?,
        "flash_attention" | "sdp_attention" | "xformers_attention" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "flash", Value::Bool(true));
                if key != "sdp_attention" {
                    out.note(
                        doc,
                        key,
                        "simulated as SDPA's flash kernel (the same O(T) saved statistics)",
                    );
                }
            }
        }
        "s2_attention" => {
            if doc.bool(key, v)? {
                return Err(unsupported(doc, key, v, "shifted-sparse attention"));
            }
        }
        "sample_packing" | "pad_to_sequence_len" => {
            if doc.bool(key, v)? {
                out.note(
                    doc,
                    key,
                    "every micro-batch is sequence_len tokens long, as simulated",
                );
            } else {
                out.ignore(doc, key);
            }
        }
        "liger_fused_linear_cross_entropy" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "loss", Value::Str("liger".into()));
            }
        }
        "cut_cross_entropy" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "loss", Value::Str("chunked".into()));
                out.note(
                    doc,
                    key,
                    "simulated as vramplan's chunked cross-entropy (no full logits; each chunk's logits recomputed in the backward)",
                );
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `adapter`: none (any lora_* key is dropped), lora, or qlora (4-bit unless written), and the
/// rank it needs.
fn adapter_keys(doc: &Doc, out: &mut Mapped, adapter: Option<&str>) -> Result<()> {
    match adapter {
        None => {
            out.assignments.retain(|a| !a.key.starts_with("lora_"));
        }
        Some("lora") => {}
        Some("qlora") => {
            if !out.assignments.iter().any(|a| a.key == "quantization") {
                out.set(doc, "adapter", "quantization", Value::Str("nf4".into()));
            }
        }
        Some(_) => {
            let v = doc.map.get("adapter").cloned().unwrap_or(Json::Null);
            return Err(unsupported(
                doc,
                "adapter",
                &v,
                "an adapter other than lora or qlora",
            ));
        }
    }
    if adapter.is_some() && doc.get("lora_r").is_none() {
        let v = doc.map.get("adapter").cloned().unwrap_or(Json::Null);
        return Err(doc.fail(
            "adapter",
            &v,
            "expected lora_r beside it (the adapters' rank)",
        ));
    }
    Ok(())
}

/// `overrides_of_model_config` (alias `model_config`, axolotl's RemappedParameters): the loader
/// (`load_model_config`) does `setattr(model_config, key, val)` for each entry. Only
/// `output_router_logits` (axolotl's Mixtral examples set it) is read; any other entry would
/// change the model in ways this mapping does not follow: refused by name.
fn model_config(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(doc.fail(key, v, "expected a mapping of config.json keys"));
    };
    for (k, x) in m {
        match k.as_str() {
            "output_router_logits" => {
                let on = Value::Bool(doc.bool(key, x)?);
                out.set(doc, key, "output_router_logits", on)
            }
            _ => {
                let why = format!("{key}.{k}: only output_router_logits is read from {key}");
                return Err(doc.fail(key, v, why));
            }
        }
    }
    Ok(())
}
