//! An `accelerate config` YAML (accelerate/commands/config/config_args.py): the number of
//! processes, the mixed precision, and the FSDP or DeepSpeed plugin settings.

use super::doc::{unknown, unsupported, DeepSpeedRef, Doc, Mapped};
use super::fsdp::fsdp_config;
use super::hf_trainer::int;
use crate::config::value::Value;
use crate::error::Result;
use serde_json::Value as Json;

const IGNORED: &[&str] = &[
    "compute_environment",
    "debug",
    "downcast_bf16",
    "enable_cpu_affinity",
    "machine_rank",
    "main_process_ip",
    "main_process_port",
    "main_training_function",
    "num_machines",
    "rdzv_backend",
    "same_network",
    "tpu_env",
    "tpu_use_cluster",
    "tpu_use_sudo",
    "use_cpu",
    "gpu_ids",
    "dynamo_config",
];

pub(crate) fn map(doc: &Doc) -> Result<Mapped> {
    let mut out = Mapped::default();
    for (key, v) in &doc.map {
        let key = key.as_str();
        if v.is_null() {
            continue;
        }
        match key {
            "num_processes" => out.set(doc, key, "world_size", int(doc.count(key, v)?)),
            "distributed_type" => match doc.str(key, v)? {
                "NO" | "MULTI_GPU" => out.ignore(doc, key),
                "FSDP" => {
                    if doc.get("fsdp_config").is_none() {
                        // FullyShardedDataParallelPlugin's default strategy is FULL_SHARD.
                        out.set(doc, key, "parallelism", Value::Str("fsdp".into()));
                    }
                }
                "DEEPSPEED" => {}
                _ => return Err(unsupported(doc, key, v, "this distributed type")),
            },
            "mixed_precision" => match doc.str(key, v)? {
                "no" => out.set(doc, key, "dtype", Value::Str("float32".into())),
                "bf16" => out.set(doc, key, "dtype", Value::Str("bfloat16".into())),
                "fp16" => out.set(doc, key, "dtype", Value::Str("float16".into())),
                _ => return Err(unsupported(doc, key, v, "this mixed precision (fp8)")),
            },
            "fsdp_config" => fsdp_config(doc, key, v, &mut out)?,
            "deepspeed_config" => deepspeed_plugin(doc, key, v, &mut out)?,
            k if IGNORED.contains(&k) => out.ignore(doc, key),
            _ => return Err(unknown(doc, key, "an accelerate config")),
        }
    }
    Ok(out)
}

/// accelerate's DeepSpeed plugin: a ds_config file, or zero_stage and offload devices.
fn deepspeed_plugin(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(doc.fail(key, v, "expected a mapping"));
    };
    for (k, x) in m {
        if x.is_null() {
            continue;
        }
        match k.as_str() {
            "deepspeed_config_file" => {
                out.deepspeed = Some((
                    DeepSpeedRef::Path(doc.str(k, x)?.to_string()),
                    doc.origin(k),
                ))
            }
            "zero_stage" => {
                let p = match doc.count(k, x)? {
                    0 => "ddp",
                    1 => "zero1",
                    2 => "zero2",
                    3 => "zero3",
                    _ => return Err(doc.fail(k, x, "expected a ZeRO stage 0, 1, 2 or 3")),
                };
                out.set(doc, k, "parallelism", Value::Str(p.into()));
            }
            "offload_optimizer_device" | "offload_param_device" => {
                let key = match k.as_str() {
                    "offload_optimizer_device" => "offload_optimizer",
                    _ => "offload_params",
                };
                match doc.str(k, x)? {
                    "none" => {}
                    "cpu" => out.set(doc, k, key, Value::Bool(true)),
                    _ => return Err(unsupported(doc, k, x, "ZeRO offload to NVMe")),
                }
            }
            "gradient_accumulation_steps" => {
                out.set(doc, k, "gradient_accumulation_steps", int(doc.count(k, x)?))
            }
            "gradient_clipping" => out.set(doc, k, "grad_clip", Value::Float(doc.float(k, x)?)),
            "zero3_init_flag" | "zero3_save_16bit_model" => out.ignore(doc, k),
            _ => return Err(unsupported(doc, k, x, &format!("deepspeed_config.{k}"))),
        }
    }
    Ok(())
}
