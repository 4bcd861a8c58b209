//! A torchtune recipe config (recipes/configs/*/*.yaml, read by recipes/*_finetune_*.py).
//! torchtune builds the model in `dtype` without autocast and keeps LoRA adapters in it too.

use super::doc::{unknown, unsupported, Doc, Mapped};
use super::hf_trainer::int;
use super::optim::class_optim;
use crate::config::value::Value;
use crate::error::Result;
use serde_json::{Map, Value as Json};

const IGNORED: &[&str] = &[
    "output_dir",
    "checkpointer",
    "resume_from_checkpoint",
    "save_adapter_weights_only",
    "dataset",
    "seed",
    "shuffle",
    "epochs",
    "max_steps_per_epoch",
    "lr_scheduler",
    "metric_logger",
    "log_every_n_steps",
    "log_peak_memory_stats",
    "log_level",
    "profiler",
    "device",
    "recipe",
    "dataset_val",
    "batch_size_val",
    "run_val_every_n_steps",
    "save_last_epoch_only",
    "custom_sharded_layers",
];

/// torchtune model builders (torchtune/models/*/_model_builders.py) → vramplan presets.
const MODELS: &[(&str, &str)] = &[
    ("llama3_1_8b", "llama-3.1-8b"),
    ("llama3_2_1b", "llama-3.2-1b"),
    ("llama3_2_3b", "llama-3.2-3b"),
    ("mistral_7b", "mistral-7b"),
    ("qwen2_5_0_5b", "qwen2.5-0.5b"),
    ("qwen2_5_1_5b_base", "qwen2.5-1.5b"),
    ("qwen2_5_1_5b_instruct", "qwen2.5-1.5b"),
    ("qwen2_5_7b_base", "qwen2.5-7b"),
    ("qwen2_5_7b_instruct", "qwen2.5-7b"),
    ("gemma_2b", "gemma-2b"),
];

pub(crate) fn map(doc: &Doc) -> Result<Mapped> {
    let mut out = Mapped::default();
    let mut lora = false;
    let mut half = None;
    for (key, v) in &doc.map {
        let key = key.as_str();
        if v.is_null() {
            continue;
        }
        match key {
            "model" => lora = model(doc, key, v, &mut out)?,
            "tokenizer" => {
                match v.get("max_seq_len").filter(|x| !x.is_null()) {
                    Some(n) => out.set(doc, "max_seq_len", "block_size", int(doc.count("max_seq_len", n)?)),
                    None => return Err(doc.fail(key, v, "expected tokenizer.max_seq_len: without it torchtune's sequences are as long as the data's, and vramplan needs a length")),
                }
            }
            "batch_size" => out.set(doc, key, "batch_size", int(doc.count(key, v)?)),
            "gradient_accumulation_steps" => {
                out.set(doc, key, "gradient_accumulation_steps", int(doc.count(key, v)?))
            }
            "dtype" => match doc.str(key, v)? {
                "fp32" => out.set(doc, key, "dtype", Value::Str("float32".into())),
                "bf16" => half = Some(v.clone()),
                _ => return Err(doc.fail(key, v, "expected bf16 or fp32 (torchtune refuses fp16 for training)")),
            },
            "enable_activation_checkpointing" => {
                out.set(doc, key, "activation_checkpointing", Value::Bool(doc.bool(key, v)?))
            }
            "enable_activation_offloading" | "optimizer_in_bwd" | "fsdp_cpu_offload" => {
                if doc.bool(key, v)? {
                    return Err(unsupported(doc, key, v, key));
                }
            }
            "compile" => out.set(doc, key, "compile", Value::Bool(doc.bool(key, v)?)),
            "clip_grad_norm" => out.set(doc, key, "grad_clip", Value::Float(doc.float(key, v)?)),
            "optimizer" => {
                let c = component(doc, key, v)?;
                let Some((kind, note)) = class_optim(c) else {
                    return Err(unsupported(doc, key, v, "this optimizer"));
                };
                if kind == "adamw" && !c.starts_with("torch.optim") {
                    return Err(unsupported(doc, key, v, "this optimizer"));
                }
                out.set(doc, key, "optimizer", Value::Str(kind.into()));
                if let Some(n) = note {
                    out.note(doc, key, n);
                }
                if let Some(wd) = v.get("weight_decay").and_then(Json::as_f64) {
                    out.set(doc, key, "weight_decay", Value::Float(wd));
                }
            }
            "loss" => match component(doc, key, v)?.rsplit('.').next().unwrap_or("") {
                "CEWithChunkedOutputLoss" => {
                    out.set(doc, key, "loss", Value::Str("chunked".into()));
                    out.note(doc, key, "torchtune's chunked cross-entropy (8 chunks, each upcast to fp32) is simulated as vramplan's chunked cross-entropy");
                }
                "CrossEntropyLoss" => out.set(doc, key, "loss", Value::Str("standard".into())),
                _ => return Err(unsupported(doc, key, v, "this loss")),
            },
            k if IGNORED.contains(&k) => out.ignore(doc, key),
            _ => return Err(unknown(doc, key, "a torchtune recipe config")),
        }
    }
    if half.is_some() {
        out.set(doc, "dtype", "dtype", Value::Str("bfloat16".into()));
        if !lora {
            // torchtune's full fine-tuning recipes build the model in bf16 and train it so:
            // bf16 weights, gradients and optimizer state, no fp32 master copy, no autocast.
            out.set(doc, "dtype", "precision_mode", Value::Str("pure".into()));
            return Ok(out);
        }
        out.note(doc, "dtype", "torchtune builds the model in bf16 without autocast: the frozen base weights are bf16 as simulated; its LoRA adapters (and their gradients and AdamW state) are bf16 too, simulated as PEFT's fp32 (an over-estimate of 2x on the adapters' own bytes)");
    }
    Ok(out)
}

fn component<'v>(doc: &Doc, key: &str, v: &'v Json) -> Result<&'v str> {
    v.get("_component_")
        .and_then(Json::as_str)
        .ok_or_else(|| doc.fail(key, v, "expected a mapping with _component_"))
}

/// `model:`: the builder names the architecture and whether it is LoRA / QLoRA.
/// `lora_attn_modules` in the decoders' names (torchtune's `output_proj` is `o_proj`).
fn attn_targets(doc: &Doc, k: &str, x: &Json) -> Result<Vec<&'static str>> {
    doc.strings(k, x)?
        .iter()
        .map(|t| match t.as_str() {
            "q_proj" => Ok("q_proj"),
            "k_proj" => Ok("k_proj"),
            "v_proj" => Ok("v_proj"),
            "output_proj" => Ok("o_proj"),
            _ => Err(doc.fail(k, x, "expected q_proj, k_proj, v_proj or output_proj")),
        })
        .collect()
}

fn model(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<bool> {
    let c = component(doc, key, v)?;
    let builder = c.rsplit('.').next().unwrap_or(c);
    let (quant, base) = if let Some(b) = builder.strip_prefix("qlora_") {
        (true, b)
    } else if let Some(b) = builder.strip_prefix("lora_") {
        (false, b)
    } else {
        (false, builder)
    };
    let lora = base != builder;
    let Some((_, preset)) = MODELS.iter().find(|(n, _)| *n == base) else {
        let known: Vec<&str> = MODELS.iter().map(|m| m.0).collect();
        return Err(doc.fail(key, v, format!("expected a torchtune builder vramplan has a preset for ({}, with lora_ or qlora_ before it)", known.join(", "))));
    };
    out.model = Some((preset.to_string(), doc.origin("_component_")));
    if quant {
        out.set(doc, "_component_", "quantization", Value::Str("nf4".into()));
        out.note(doc, "_component_", "torchtune's NF4 (torchao NF4Tensor) is simulated as bitsandbytes' NF4 with double quantization");
    }
    let empty = Map::new();
    let m = v.as_object().unwrap_or(&empty);
    let mut targets: Vec<&str> = Vec::new();
    for (k, x) in m {
        match k.as_str() {
            "_component_" => {}
            "lora_attn_modules" => targets.extend(attn_targets(doc, k, x)?),
            // torchtune's FeedForward w1 (gate), w2 (down), w3 (up).
            "apply_lora_to_mlp" => {
                if doc.bool(k, x)? {
                    targets.extend(["gate_proj", "down_proj", "up_proj"]);
                }
            }
            "apply_lora_to_output" => {
                if doc.bool(k, x)? {
                    return Err(unsupported(
                        doc,
                        k,
                        x,
                        "LoRA on the output projection (lm_head)",
                    ));
                }
            }
            "lora_rank" => out.set(doc, k, "lora_rank", int(doc.count(k, x)?)),
            "lora_alpha" => out.set(doc, k, "lora_alpha", Value::Float(doc.float(k, x)?)),
            "lora_dropout" => out.set(doc, k, "lora_dropout", Value::Float(doc.float(k, x)?)),
            "use_dora" | "quantize_base" => {
                if doc.bool(k, x)? {
                    return Err(unsupported(doc, k, x, k));
                }
            }
            _ => return Err(unknown(doc, k, "a torchtune model builder")),
        }
    }
    if lora {
        if !m.contains_key("lora_rank") {
            return Err(doc.fail(key, v, "expected model.lora_rank for a LoRA builder"));
        }
        out.set(
            doc,
            "lora_attn_modules",
            "lora_targets",
            Value::Str(targets.join(",")),
        );
    }
    Ok(lora)
}
