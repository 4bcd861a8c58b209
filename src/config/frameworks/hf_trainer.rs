//! Hugging Face `TrainingArguments` (transformers 4.57 training_args.py) and TRL's `SFTConfig`
//! and `ModelConfig` (the keys `trl sft --config` reads), as JSON or YAML: the keys
//! `TrainingArguments.to_dict()` writes, plus `model_name_or_path`.

use super::doc::{unknown, unsupported, DeepSpeedRef, Doc, Mapped};
use super::fsdp::{fsdp, fsdp_config};
use super::optim::map_trainer_optim;
use crate::config::value::Value;
use crate::error::Result;
use serde_json::Value as Json;

/// TrainingArguments fields that do not change GPU memory (transformers 4.57).
#[rustfmt::skip]
const IGNORED: &[&str] = &[
    "output_dir", "overwrite_output_dir", "do_train", "do_eval", "do_predict",
    "prediction_loss_only", "eval_accumulation_steps", "eval_delay", "learning_rate",
    "adam_beta1", "adam_beta2", "adam_epsilon", "num_train_epochs", "max_steps",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps", "log_level",
    "log_level_replica", "log_on_each_node", "logging_dir", "logging_strategy",
    "logging_first_step", "logging_steps", "logging_nan_inf_filter", "save_strategy",
    "save_steps", "save_total_limit", "save_safetensors", "save_on_each_node",
    "save_only_model", "restore_callback_states_from_checkpoint", "no_cuda", "use_cpu",
    "use_mps_device", "seed", "data_seed", "jit_mode_eval", "fp16_opt_level",
    "half_precision_backend", "tf32", "local_rank", "ddp_backend", "tpu_num_cores",
    "tpu_metrics_debug", "debug", "dataloader_drop_last", "eval_steps",
    "dataloader_num_workers", "dataloader_prefetch_factor", "past_index", "run_name",
    "disable_tqdm", "remove_unused_columns", "label_names", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "ignore_data_skip", "fsdp_min_num_params",
    "fsdp_transformer_layer_cls_to_wrap", "accelerator_config", "label_smoothing_factor",
    "optim_args", "group_by_length", "length_column_name", "report_to", "project",
    "trackio_space_id", "ddp_find_unused_parameters", "ddp_broadcast_buffers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "skip_memory_metrics",
    "use_legacy_prediction_loop", "push_to_hub", "resume_from_checkpoint", "hub_model_id",
    "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision",
    "include_inputs_for_metrics", "include_for_metrics", "eval_do_concat_batches",
    "fp16_backend", "push_to_hub_model_id", "push_to_hub_organization", "push_to_hub_token",
    "mp_parameters", "full_determinism", "ray_scope", "ddp_timeout",
    "include_tokens_per_second", "include_num_input_tokens_seen", "batch_eval_metrics",
    "eval_on_start", "eval_use_gather_object", "average_tokens_across_devices",
    "liger_kernel_config", "logging_dir", "dataset_text_field",
    "dataset_kwargs", "dataset_num_proc", "dataset_batch_size", "eos_token", "pad_token",
    "completion_only_loss", "assistant_only_loss", "chat_template_path", "eval_packing",
    "shuffle_dataset", "packing_strategy", "pad_to_multiple_of", "loss_type", "dataset_name",
    "dataset_config", "dataset_train_split", "dataset_test_split", "model_revision",
    "trust_remote_code", "lora_task_type", "use_rslora", "use_dora",
   
];

pub(crate) fn map(doc: &Doc) -> Result<Mapped> {
    if doc.map.contains_key("architectures") || doc.map.contains_key("num_hidden_layers") {
        return Err(crate::error::Error::new(format!(
            "{}: this is a model's config.json (architectures, num_hidden_layers), not a training config: pass it as --hf-config {}",
            doc.path, doc.path
        )));
    }
    let mut out = Mapped::default();
    let mut eval_on = false;
    let mut model = ModelKeys::default();
    for (key, v) in &doc.map {
        let key = key.as_str();
        if v.is_null() {
            continue;
        }
        match key {
            "optim" => map_trainer_optim(doc, key, v, &mut out)?,
            "max_grad_norm" => out.set(doc, key, "grad_clip", Value::Float(doc.float(key, v)?)),
            "weight_decay" => out.set(doc, key, "weight_decay", Value::Float(doc.float(key, v)?)),
            "eval_strategy" | "evaluation_strategy" => {
                eval_on = doc.str(key, v)? != "no";
            }
            "fsdp" => fsdp(doc, key, v, &mut out)?,
            "fsdp_config" => fsdp_config(doc, key, v, &mut out)?,
            "deepspeed" => {
                let r = match v {
                    Json::String(s) if s.is_empty() => continue,
                    Json::String(s) => DeepSpeedRef::Path(s.clone()),
                    Json::Object(_) => DeepSpeedRef::Inline(v.to_string()),
                    _ => {
                        return Err(doc.fail(
                            key,
                            v,
                            "expected the path of a ds_config.json or its contents",
                        ))
                    }
                };
                out.deepspeed = Some((r, doc.origin(key)));
            }
            k if step_key(doc, k, v, &mut out)? => {}
            k if compile_key(doc, k, v, &mut out)? => {}
            k if run_key(doc, k, v, &mut out)? => {}
            k if model_key(doc, k, v, &mut out, &mut model)? => {}
            k if IGNORED.contains(&k) => out.ignore(doc, key),
            _ => return Err(unknown(doc, key, "TrainingArguments / TRL SFTConfig")),
        }
    }
    finish(doc, &mut out, model, eval_on)?;
    Ok(out)
}

/// The batch, the sequence length, the precision, checkpointing and Liger. True when `key` was
/// one of them.
fn step_key(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<bool> {
    match key {
        "per_device_train_batch_size" | "per_gpu_train_batch_size" => {
            out.set(doc, key, "batch_size", int(doc.count(key, v)?))
        }
        "per_device_eval_batch_size" | "per_gpu_eval_batch_size" => {
            out.set(doc, key, "eval_batch_size", int(doc.count(key, v)?))
        }
        "gradient_accumulation_steps" => out.set(
            doc,
            key,
            "gradient_accumulation_steps",
            int(doc.count(key, v)?),
        ),
        "bf16" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "dtype", Value::Str("bfloat16".into()))
            }
        }
        "fp16" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "dtype", Value::Str("float16".into()))
            }
        }
        "bf16_full_eval" | "fp16_full_eval" => {
            if doc.bool(key, v)? {
                return Err(unsupported(
                    doc,
                    key,
                    v,
                    "evaluating with the model cast to half precision",
                ));
            }
        }
        "gradient_checkpointing" => out.set(
            doc,
            key,
            "activation_checkpointing",
            Value::Bool(doc.bool(key, v)?),
        ),
        "gradient_checkpointing_kwargs" => checkpointing_kwargs(doc, key, v, out)?,
        "max_seq_length" | "max_length" => out.set(doc, key, "block_size", int(doc.count(key, v)?)),
        "packing" | "padding_free" => {
            if doc.bool(key, v)? {
                out.note(
                    doc,
                    key,
                    "packed sequences fill block_size tokens each, as simulated",
                );
            } else {
                out.ignore(doc, key);
            }
        }
        "use_liger_kernel" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "loss", Value::Str("liger".into()));
                out.note(doc, key, "Liger's fused linear cross-entropy is simulated (loss = 'liger'); Liger's other kernels (RMSNorm, SwiGLU, RoPE) are not modelled: they keep less than eager PyTorch, so the figures are an upper bound");
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// torch.compile's keys: only inductor in its default mode is modelled. True when `key` was
/// one of them.
fn compile_key(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<bool> {
    match key {
        "torch_compile" => out.set(doc, key, "compile", Value::Bool(doc.bool(key, v)?)),
        "torch_compile_backend" | "torchdynamo" => {
            if doc.str(key, v)? != "inductor" {
                return Err(unsupported(
                    doc,
                    key,
                    v,
                    "a torch.compile backend other than inductor",
                ));
            }
            out.set(doc, key, "compile", Value::Bool(true));
        }
        "torch_compile_mode" => {
            if doc.str(key, v)? != "default" {
                return Err(unsupported(
                    doc,
                    key,
                    v,
                    "a torch.compile mode other than \"default\" (CUDA graphs, autotuning)",
                ));
            }
            out.set(doc, key, "compile", Value::Bool(true));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The Trainer's run-time switches that change memory in ways not modelled (refused) or not
/// at all (noted). True when `key` was one of them.
fn run_key(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<bool> {
    match key {
    "torch_empty_cache_steps" => {
        return Err(unsupported(doc, key, v, "torch.cuda.empty_cache() every N steps (it returns the cached segments the simulation keeps)"))
    }
    "auto_find_batch_size" => {
        if doc.bool(key, v)? {
            out.note(doc, key, "the Trainer halves the batch after an OOM; simulated at the batch written");
        } else {
            out.ignore(doc, key);
        }
    }
    // Deprecated: adafactor = True means optim = "adafactor".
    "adafactor" => {
        if doc.bool(key, v)? {
            return Err(unsupported(doc, key, v, "the Adafactor optimizer"));
        }
        out.ignore(doc, key);
    }
    "activation_offloading" => {
        if doc.bool(key, v)? {
            return Err(unsupported(doc, key, v, "activation offloading to the CPU"));
        }
    }
    "neftune_noise_alpha" | "optim_target_modules" | "parallelism_config" => {
        return Err(unsupported(doc, key, v, key));
    }
    "ddp_bucket_cap_mb" => {
        if doc.count(key, v)? != 25 {
            return Err(unsupported(doc, key, v, "a DDP bucket size other than PyTorch's 25 MiB"));
        }
    }
        _ => return Ok(false),
    }
    Ok(true)
}

/// After every key: TRL's PEFT defaults and half-precision weights, and the evaluation batch
/// the Trainer uses.
fn finish(doc: &Doc, out: &mut Mapped, model: ModelKeys, eval_on: bool) -> Result<()> {
    let ModelKeys { peft, half_weights } = model;
    if !peft && doc.get("lora_r").is_some() {
        out.note(
            doc,
            "lora_r",
            "lora_r without use_peft: true; TRL trains the full model",
        );
        out.assignments.retain(|a| a.key != "lora_rank");
    } else if peft && doc.get("lora_r").is_none() {
        // TRL ModelConfig.lora_r = 16.
        out.set(doc, "use_peft", "lora_rank", int(16));
    }
    if let Some((key, v)) = half_weights {
        if peft {
            out.note(doc, &key, "the frozen base weights are loaded in this dtype, as the simulator's LoRA keeps them in dtype");
        } else {
            half_full_fine_tune(doc, out, &key, &v)?;
        }
    }
    if eval_on {
        // The Trainer evaluates at eval_steps with per_device_eval_batch_size (default 8).
        out.set(doc, "eval_strategy", "eval_interval", int(1));
        if doc.get("per_device_eval_batch_size").is_none() {
            out.set(doc, "eval_strategy", "eval_batch_size", int(8));
        }
    } else {
        out.assignments.retain(|a| a.key != "eval_batch_size");
    }
    Ok(())
}

/// A full fine-tune of weights loaded in half precision: without `bf16`/`fp16` the Trainer runs
/// no autocast and AdamW keeps its state in the parameters' dtype (torch/optim/adamw.py
/// `zeros_like(p)`): `precision_mode = 'pure'`. With the flag, autocast runs over half weights,
/// whose fp32-list ops (softmax, the losses) differ from both modes: refused.
fn half_full_fine_tune(doc: &Doc, out: &mut Mapped, key: &str, v: &Json) -> Result<()> {
    let autocast = ["bf16", "fp16"]
        .iter()
        .any(|k| doc.get(k).and_then(Json::as_bool) == Some(true));
    if autocast {
        return Err(unsupported(
            doc,
            key,
            v,
            "autocast (bf16/fp16 = true) over weights loaded in half precision; without the flag it is pure half-precision training",
        ));
    }
    out.set(doc, key, "dtype", Value::Str(doc.str(key, v)?.to_string()));
    out.set(doc, key, "precision_mode", Value::Str("pure".into()));
    Ok(())
}

/// What TRL's ModelConfig keys say beyond single assignments.
#[derive(Default)]
struct ModelKeys {
    peft: bool,
    half_weights: Option<(String, Json)>,
}

/// TRL's ModelConfig (trl/trainer/model_config.py), which `trl sft --config` reads beside
/// SFTConfig: the model, PEFT and quantization. False when `key` is not one of them.
fn model_key(doc: &Doc, key: &str, v: &Json, out: &mut Mapped, st: &mut ModelKeys) -> Result<bool> {
    match key {
        "model_name_or_path" => {
            out.model = Some((doc.str(key, v)?.to_string(), doc.origin(key)));
        }
        "use_peft" => st.peft = doc.bool(key, v)?,
        "lora_r" => out.set(doc, key, "lora_rank", int(doc.count(key, v)?)),
        "lora_alpha" => out.set(doc, key, "lora_alpha", Value::Float(doc.float(key, v)?)),
        "lora_dropout" => out.set(doc, key, "lora_dropout", Value::Float(doc.float(key, v)?)),
        "lora_target_modules" => lora_targets(doc, key, v, out)?,
        "load_in_4bit" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "quantization", Value::Str("nf4".into()));
            }
        }
        "load_in_8bit" => {
            if doc.bool(key, v)? {
                out.set(doc, key, "quantization", Value::Str("int8".into()));
            }
        }
        "bnb_4bit_quant_type" => {
            let q = doc.str(key, v)?;
            if !matches!(q, "nf4" | "fp4") {
                return Err(doc.fail(key, v, "expected 'nf4' or 'fp4'"));
            }
            out.set(doc, key, "quantization", Value::Str(q.into()));
        }
        "use_bnb_nested_quant" => out.set(doc, key, "double_quant", Value::Bool(doc.bool(key, v)?)),
        "attn_implementation" => match doc.str(key, v)? {
            "eager" => out.set(doc, key, "flash", Value::Bool(false)),
            "sdpa" => out.set(doc, key, "flash", Value::Bool(true)),
            "flash_attention_2" => {
                out.set(doc, key, "flash", Value::Bool(true));
                out.note(doc, key, "FlashAttention-2 simulated as SDPA's flash kernel (the same O(T) saved statistics)");
            }
            _ => return Err(unsupported(doc, key, v, "this attention implementation")),
        },
        "torch_dtype" | "dtype" => match doc.str(key, v)? {
            "auto" | "float32" => {}
            "bfloat16" | "float16" => st.half_weights = Some((key.to_string(), v.clone())),
            _ => {
                return Err(doc.fail(
                    key,
                    v,
                    "expected 'auto', 'float32', 'bfloat16' or 'float16'",
                ))
            }
        },
        "model_init_kwargs" => {
            if v.as_object().is_some_and(|m| !m.is_empty()) {
                return Err(unsupported(doc, key, v, "model_init_kwargs (the model's loading dtype and quantization: write torch_dtype / load_in_4bit as TRL's ModelConfig keys)"));
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(super) fn int(v: u64) -> Value {
    Value::Int(v.into())
}

/// `gradient_checkpointing_kwargs`: `use_reentrant` (what a reentrant checkpoint holds through
/// its backward: `TrainConfig::reentrant_checkpoint`); nothing else is read.
pub(super) fn checkpointing_kwargs(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(doc.fail(key, v, "expected a mapping such as {use_reentrant: false}"));
    };
    for (k, x) in m {
        if k != "use_reentrant" {
            return Err(unsupported(
                doc,
                key,
                v,
                &format!("gradient_checkpointing_kwargs.{k}"),
            ));
        }
        let reentrant = doc.bool(key, x)?;
        out.set(doc, key, "use_reentrant", Value::Bool(reentrant));
    }
    Ok(())
}

/// PEFT `target_modules`: a list of Linear names or "all-linear".
pub(super) fn lora_targets(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let names = doc.strings(key, v)?;
    out.set(doc, key, "lora_targets", Value::Str(names.join(",")));
    Ok(())
}
