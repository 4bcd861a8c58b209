//! A LitGPT finetune config (config_hub/finetune/*/{lora,qlora,full}.yaml, read by
//! litgpt/finetune/*.py). The batch is global in samples: each device runs
//! `global_batch_size // devices // micro_batch_size` micro-steps (litgpt/args.py,
//! TrainArgs.gradient_accumulation_iters), so vramplan's global accumulation is
//! `global_batch_size // micro_batch_size` for every world size.

use super::doc::{unknown, unsupported, Doc, Mapped};
use super::hf_trainer::int;
use super::optim::class_optim;
use crate::config::value::Value;
use crate::error::Result;
use serde_json::Value as Json;

const IGNORED: &[&str] = &[
    "out_dir",
    "data",
    "logger_name",
    "seed",
    "access_token",
    "num_nodes",
    "resume",
];

pub(crate) fn map(doc: &Doc) -> Result<Mapped> {
    let mut out = Mapped::default();
    let mut lora = false;
    let mut true_half = None;
    let mut targets: Vec<&str> = Vec::new();
    for (key, v) in &doc.map {
        let key = key.as_str();
        if v.is_null() {
            continue;
        }
        match key {
            "checkpoint_dir" => {
                let dir = doc.str(key, v)?;
                let name = dir
                    .trim_start_matches("checkpoints/")
                    .replace("Meta-Llama", "Llama");
                out.model = Some((name, doc.origin(key)));
            }
            "precision" => match doc.str(key, v)? {
                "32-true" => out.set(doc, key, "dtype", Value::Str("float32".into())),
                "bf16-mixed" => out.set(doc, key, "dtype", Value::Str("bfloat16".into())),
                "16-mixed" => out.set(doc, key, "dtype", Value::Str("float16".into())),
                "bf16-true" | "16-true" => true_half = Some(v.clone()),
                _ => {
                    return Err(doc.fail(
                        key,
                        v,
                        "expected 32-true, bf16-mixed, 16-mixed, bf16-true or 16-true",
                    ))
                }
            },
            "quantize" => quantize(doc, key, v, &mut out)?,
            "devices" => out.set(doc, key, "world_size", int(doc.count(key, v)?)),
            "lora_r" => {
                lora = true;
                out.set(doc, key, "lora_rank", int(doc.count(key, v)?));
            }
            "lora_alpha" => out.set(doc, key, "lora_alpha", Value::Float(doc.float(key, v)?)),
            "lora_dropout" => out.set(doc, key, "lora_dropout", Value::Float(doc.float(key, v)?)),
            "lora_query" | "lora_key" | "lora_value" | "lora_projection" | "lora_mlp" => {
                if doc.bool(key, v)? {
                    targets.extend(match key {
                        "lora_query" => &["q_proj"][..],
                        "lora_key" => &["k_proj"],
                        "lora_value" => &["v_proj"],
                        "lora_projection" => &["o_proj"],
                        _ => &["gate_proj", "up_proj", "down_proj"],
                    });
                }
            }
            "lora_head" => {
                if doc.bool(key, v)? {
                    return Err(unsupported(doc, key, v, "LoRA on the lm_head"));
                }
            }
            "train" => train(doc, key, v, &mut out)?,
            "eval" => {
                // LitGPT validates every eval.interval steps (and once at the end), then
                // generates a sample with a KV cache, which is not modelled.
                out.set(doc, key, "eval_interval", int(1));
                out.note(doc, key, "after each validation LitGPT generates a sample with a KV cache; that allocation is not modelled");
            }
            "optimizer" => optimizer(doc, key, v, &mut out)?,
            k if IGNORED.contains(&k) => out.ignore(doc, key),
            _ => return Err(unknown(doc, key, "a LitGPT finetune config")),
        }
    }
    finish(doc, &mut out, lora, &targets, true_half)?;
    Ok(out)
}

/// `quantize`: bitsandbytes' 4-bit (with or without double quantization) or LLM.int8().
fn quantize(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let q = match doc.str(key, v)? {
        "bnb.nf4" => ("nf4", false),
        "bnb.nf4-dq" => ("nf4", true),
        "bnb.fp4" => ("fp4", false),
        "bnb.fp4-dq" => ("fp4", true),
        "bnb.int8" => ("int8", false),
        _ => return Err(unsupported(doc, key, v, "this quantization")),
    };
    out.set(doc, key, "quantization", Value::Str(q.0.into()));
    out.set(doc, key, "double_quant", Value::Bool(q.1));
    Ok(())
}

/// `optimizer`: a name or a `class_path`.
fn optimizer(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let name = match v {
        Json::String(s) => s.as_str(),
        _ => v.get("class_path").and_then(Json::as_str).unwrap_or(""),
    };
    let Some((kind, note)) = class_optim(name) else {
        return Err(unsupported(doc, key, v, "this optimizer"));
    };
    out.set(doc, key, "optimizer", Value::Str(kind.into()));
    if let Some(n) = note {
        out.note(doc, key, n);
    }
    Ok(())
}

/// After every key: the LoRA targets, the "-true" precisions, and the length LitGPT needs.
fn finish(
    doc: &Doc,
    out: &mut Mapped,
    lora: bool,
    targets: &[&str],
    true_half: Option<Json>,
) -> Result<()> {
    if lora {
        out.set(doc, "lora_r", "lora_targets", Value::Str(targets.join(",")));
        out.note(doc, "lora_r", "LitGPT fuses q, k, v into one Linear with one LoRA pair for the enabled parts; simulated as separate adapters of the same rank (the same adapter elements)");
    }
    if let Some(v) = true_half {
        let d = if v.as_str() == Some("bf16-true") {
            "bfloat16"
        } else {
            "float16"
        };
        out.set(doc, "precision", "dtype", Value::Str(d.into()));
        if !lora {
            // Lightning's "-true" precisions cast the whole model: weights, gradients and
            // optimizer state in half precision, no autocast.
            out.set(
                doc,
                "precision",
                "precision_mode",
                Value::Str("pure".into()),
            );
        } else {
            out.note(doc, "precision", "the whole model is in half precision: frozen base weights as simulated; the LoRA adapters too, simulated as fp32 (an over-estimate on the adapters' own bytes)");
        }
    }
    if doc
        .get("train")
        .and_then(|t| t.get("max_seq_length"))
        .is_none_or(Json::is_null)
    {
        let v = doc.map.get("train").cloned().unwrap_or(Json::Null);
        return Err(doc.fail("train", &v, "expected train.max_seq_length: without it LitGPT trains at the data's longest sequence, and vramplan needs a length"));
    }
    Ok(())
}

fn train(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(doc.fail(key, v, "expected a mapping"));
    };
    // LitGPT's TrainArgs defaults in finetune/lora.py: global_batch_size 16, micro_batch_size 1.
    let global = match m.get("global_batch_size").filter(|x| !x.is_null()) {
        Some(x) => doc.count("global_batch_size", x)?,
        None => 16,
    };
    let micro = match m.get("micro_batch_size").filter(|x| !x.is_null()) {
        Some(x) => doc.count("micro_batch_size", x)?,
        None => 1,
    };
    if micro == 0 || global % micro != 0 {
        return Err(doc.fail(
            key,
            v,
            "expected global_batch_size to be a multiple of micro_batch_size",
        ));
    }
    out.set(doc, "micro_batch_size", "batch_size", int(micro));
    out.set(
        doc,
        "global_batch_size",
        "gradient_accumulation_steps",
        int(global / micro),
    );
    for (k, x) in m {
        if x.is_null() {
            continue;
        }
        match k.as_str() {
            "global_batch_size" | "micro_batch_size" => {}
            "max_seq_length" => out.set(doc, k, "block_size", int(doc.count(k, x)?)),
            "max_norm" => out.set(doc, k, "grad_clip", Value::Float(doc.float(k, x)?)),
            "save_interval" | "log_interval" | "lr_warmup_steps" | "lr_warmup_fraction"
            | "epochs" | "max_tokens" | "max_steps" | "min_lr" | "tie_embeddings" => {
                out.ignore(doc, k)
            }
            _ => return Err(unknown(doc, k, "LitGPT's train arguments")),
        }
    }
    Ok(())
}
