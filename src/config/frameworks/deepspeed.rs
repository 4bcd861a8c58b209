//! A DeepSpeed `ds_config.json` (deepspeed/runtime/config.py, zero/config.py). Batch keys are
//! per GPU and per rank, as the Trainer's; `"auto"` leaves the Trainer's value (the Trainer's
//! HfTrainerDeepSpeedConfig fills it from TrainingArguments).

use super::doc::{unknown, unsupported, Doc, Mapped};
use super::hf_trainer::int;
use super::optim::class_optim;
use crate::config::value::Value;
use crate::error::Result;
use serde_json::Value as Json;

/// zero_optimization keys whose DeepSpeed default the simulator models, with that default
/// (src/sim/parallel/zero.rs, zero3.rs): any other value changes memory and is refused.
const ZERO_DEFAULTS: &[(&str, f64)] = &[
    ("reduce_bucket_size", 5e8),
    ("allgather_bucket_size", 5e8),
    ("stage3_prefetch_bucket_size", 5e7),
    ("stage3_param_persistence_threshold", 1e5),
    ("stage3_max_live_parameters", 1e9),
    ("stage3_max_reuse_distance", 1e9),
];

const IGNORED: &[&str] = &[
    "train_batch_size",
    "steps_per_print",
    "wall_clock_breakdown",
    "scheduler",
    "zero_allow_untested_optimizer",
    "gradient_predivide_factor",
    "prescale_gradients",
    "comms_logger",
    "flops_profiler",
    "tensorboard",
    "wandb",
    "csv_monitor",
    "dump_state",
    "memory_breakdown",
];

pub(crate) fn map(doc: &Doc) -> Result<Mapped> {
    let mut out = Mapped::default();
    let auto = |v: &Json| v.as_str() == Some("auto");
    for (key, v) in &doc.map {
        let key = key.as_str();
        if v.is_null() || auto(v) {
            continue;
        }
        match key {
            "train_micro_batch_size_per_gpu" => {
                out.set(doc, key, "batch_size", int(doc.count(key, v)?))
            }
            "gradient_accumulation_steps" => out.set(
                doc,
                key,
                "gradient_accumulation_steps",
                int(doc.count(key, v)?),
            ),
            "gradient_clipping" => out.set(doc, key, "grad_clip", Value::Float(doc.float(key, v)?)),
            "bf16" | "fp16" => {
                let enabled = v.get("enabled").filter(|e| !auto(e));
                if let Some(e) = enabled {
                    if doc.bool(key, e)? {
                        let d = if key == "bf16" { "bfloat16" } else { "float16" };
                        out.set(doc, key, "dtype", Value::Str(d.into()));
                    }
                }
            }
            "zero_optimization" => zero(doc, key, v, &mut out)?,
            "optimizer" => {
                let ty = v.get("type").and_then(Json::as_str).unwrap_or("");
                match class_optim(ty) {
                    Some(("adamw", _)) => {
                        out.set(doc, key, "optimizer", Value::Str("adamw".into()))
                    }
                    _ => {
                        return Err(unsupported(
                            doc,
                            key,
                            v,
                            "a DeepSpeed optimizer other than Adam/AdamW",
                        ))
                    }
                }
            }
            "activation_checkpointing" => {
                let cpu = v
                    .get("cpu_checkpointing")
                    .and_then(Json::as_bool)
                    .unwrap_or(false);
                if cpu {
                    return Err(unsupported(
                        doc,
                        key,
                        v,
                        "DeepSpeed's CPU activation checkpointing",
                    ));
                }
                out.ignore(doc, key);
            }
            k if IGNORED.contains(&k) => out.ignore(doc, key),
            _ => return Err(unknown(doc, key, "a DeepSpeed config")),
        }
    }
    Ok(out)
}

fn zero(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(doc.fail(key, v, "expected a mapping with a stage"));
    };
    for (k, x) in m {
        if x.is_null() || x.as_str() == Some("auto") {
            continue;
        }
        match k.as_str() {
            "stage" => {
                let p = match doc.count(k, x)? {
                    0 => "ddp",
                    1 => "zero1",
                    2 => "zero2",
                    3 => "zero3",
                    _ => return Err(doc.fail(k, x, "expected a ZeRO stage 0, 1, 2 or 3")),
                };
                out.set(doc, k, "parallelism", Value::Str(p.into()));
            }
            "offload_optimizer" | "offload_param" => {
                let device = x.get("device").and_then(Json::as_str).unwrap_or("none");
                let key = match k.as_str() {
                    "offload_optimizer" => "offload_optimizer",
                    _ => "offload_params",
                };
                match device {
                    "none" => {}
                    "cpu" => out.set(doc, k, key, Value::Bool(true)),
                    _ => return Err(unsupported(doc, k, x, "ZeRO offload to NVMe")),
                }
            }
            name => {
                if let Some((_, d)) = ZERO_DEFAULTS.iter().find(|(n, _)| *n == name) {
                    if x.as_f64() != Some(*d) {
                        return Err(unsupported(
                            doc,
                            k,
                            x,
                            &format!("a {name} other than DeepSpeed's default {d:e}"),
                        ));
                    }
                } else if matches!(
                    name,
                    "overlap_comm"
                        | "contiguous_gradients"
                        | "round_robin_gradients"
                        | "reduce_scatter"
                        | "allgather_partitions"
                        | "sub_group_size"
                        | "stage3_gather_16bit_weights_on_model_save"
                        | "gather_16bit_weights_on_model_save"
                ) {
                    out.note(doc, k, "not modelled: the simulation follows DeepSpeed's behaviour for the stage with its default");
                } else {
                    return Err(unsupported(doc, k, x, &format!("zero_optimization.{name}")));
                }
            }
        }
    }
    Ok(())
}
