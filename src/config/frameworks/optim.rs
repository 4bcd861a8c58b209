//! Optimizer names of the frameworks onto the optimizers the simulator has: fused AdamW (two
//! fp32 states per trained element), bitsandbytes' 8-bit AdamW, SGD with momentum.

use super::doc::{unsupported, Doc, Mapped};
use crate::error::Result;
use serde_json::Value as Json;

/// The simulator's name for a Trainer `optim` (transformers training_args.py, OptimizerNames),
/// which axolotl's `optimizer` takes too, and the note when it is not modelled exactly.
pub(crate) fn trainer_optim(name: &str) -> Option<(&'static str, Option<&'static str>)> {
    const FOREACH: &str = "modelled as fused AdamW (the same two fp32 states); the foreach implementation's per-step temporaries are not modelled";
    const PAGED: &str = "bitsandbytes' paged optimizer state lives in CUDA unified memory and is evicted to the host only under memory pressure; modelled as resident on the GPU (the upper bound)";
    Some(match name {
        "adamw_torch_fused" => ("adamw", None),
        "adamw_torch" | "adamw_hf" | "adamw_apex_fused" => ("adamw", Some(FOREACH)),
        "adamw_bnb_8bit" | "adamw_8bit" => ("adamw8bit", None),
        "paged_adamw_8bit" => ("adamw8bit", Some(PAGED)),
        "paged_adamw_32bit" => ("adamw", Some(PAGED)),
        "sgd" => ("sgd", None),
        _ => return None,
    })
}

/// Read a Trainer-style optimizer name into `out`.
pub(crate) fn map_trainer_optim(doc: &Doc, key: &str, v: &Json, out: &mut Mapped) -> Result<()> {
    let name = doc.str(key, v)?;
    match trainer_optim(name) {
        Some((kind, note)) => {
            out.set(doc, key, "optimizer", crate::config::value::Value::Str(kind.into()));
            if let Some(n) = note {
                out.note(doc, key, format!("'{name}' {n}"));
            }
            Ok(())
        }
        None => Err(unsupported(
            doc,
            key,
            v,
            "this optimizer (supported: adamw_torch, adamw_torch_fused, adamw_hf, adamw_apex_fused, adamw_bnb_8bit, adamw_8bit, paged_adamw_8bit, paged_adamw_32bit, sgd)",
        )),
    }
}

/// A Python class path (torchtune `_component_`, LitGPT `class_path` or name) onto the
/// simulator's optimizer.
pub(crate) fn class_optim(path: &str) -> Option<(&'static str, Option<&'static str>)> {
    let last = path.rsplit('.').next().unwrap_or(path);
    Some(match last {
        "AdamW" | "Adam" => ("adamw", None),
        "AdamW8bit" | "Adam8bit" => ("adamw8bit", None),
        "PagedAdamW8bit" => (
            "adamw8bit",
            Some("paged state modelled as resident on the GPU (the upper bound)"),
        ),
        "PagedAdamW" | "PagedAdamW32bit" => (
            "adamw",
            Some("paged state modelled as resident on the GPU (the upper bound)"),
        ),
        "SGD" => ("sgd", None),
        _ => return None,
    })
}
