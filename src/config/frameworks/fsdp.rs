//! FSDP settings as the Trainer, axolotl and accelerate write them (`fsdp`, `fsdp_config`,
//! transformers training_args.py and accelerate's FullyShardedDataParallelPlugin). The
//! simulator models FULL_SHARD and SHARD_GRAD_OP with the next block prefetched in the
//! backward (src/sim/parallel/fsdp.rs); prefetch settings are read and ignored.

use super::doc::{unsupported, Doc, Mapped};
use crate::config::value::Value;
use crate::error::Result;
use serde_json::Value as Json;

/// `fsdp`: "full_shard auto_wrap" (or a list, "offload" for CPUOffload); hybrid sharding is not
/// modelled.
pub(super) fn fsdp(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let opts = doc.strings(key, v)?;
    if opts.is_empty() {
        return Ok(());
    }
    for o in &opts {
        match o.as_str() {
            "full_shard" => out.set(doc, key, "parallelism", Value::Str("fsdp".into())),
            "shard_grad_op" => out.set(doc, key, "parallelism", Value::Str("fsdp_grad_op".into())),
            "auto_wrap" => {}
            "offload" => out.set(doc, key, "offload_params", Value::Bool(true)),
            "no_shard" => out.set(doc, key, "parallelism", Value::Str("ddp".into())),
            _ => return Err(unsupported(doc, key, v, &format!("FSDP option '{o}'"))),
        }
    }
    Ok(())
}

/// `fsdp_config` (Trainer and axolotl; keys with or without the `fsdp_` prefix).
pub(super) fn fsdp_config(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(doc.fail(key, v, "expected a mapping"));
    };
    for (k, x) in m {
        let name = k.strip_prefix("fsdp_").unwrap_or(k);
        match name {
            // CPUOffload(offload_params=True) (accelerate's FullyShardedDataParallelPlugin).
            "offload_params" | "cpu_offload" => {
                out.set(doc, k, "offload_params", Value::Bool(doc.bool(k, x)?))
            }
            "activation_checkpointing" => out.set(
                doc,
                k,
                "activation_checkpointing",
                Value::Bool(doc.bool(k, x)?),
            ),
            "sharding_strategy" => {
                let s = match x {
                    Json::Number(n) => match n.as_u64() {
                        Some(1) => "FULL_SHARD",
                        Some(2) => "SHARD_GRAD_OP",
                        Some(3) => "NO_SHARD",
                        _ => "?",
                    },
                    _ => doc.str(k, x)?,
                };
                let p = match s {
                    "FULL_SHARD" => "fsdp",
                    "SHARD_GRAD_OP" => "fsdp_grad_op",
                    "NO_SHARD" => "ddp",
                    _ => return Err(unsupported(doc, k, x, "this FSDP sharding strategy")),
                };
                out.set(doc, k, "parallelism", Value::Str(p.into()));
            }
            "version" => {
                if doc.count(k, x)? != 1 {
                    return Err(unsupported(doc, k, x, "FSDP2 (fully_shard)"));
                }
            }
            "auto_wrap_policy"
            | "transformer_layer_cls_to_wrap"
            | "backward_prefetch"
            | "forward_prefetch"
            | "limit_all_gathers"
            | "use_orig_params"
            | "sync_module_states"
            | "cpu_ram_efficient_loading"
            | "state_dict_type"
            | "min_num_params"
            | "xla"
            | "xla_fsdp_grad_ckpt"
            | "xla_fsdp_v2"
            | "reshard_after_forward" => out.ignore(doc, k),
            _ => return Err(unsupported(doc, k, x, &format!("fsdp_config.{k}"))),
        }
    }
    Ok(())
}
