//! FSDP's wrapping on rank 0 (FullyShardedDataParallel's constructor, use_orig_params either
//! way): which parameters form each unit's flat parameters, their padding and rank 0's
//! shards.
//!
//! Full fine-tuning: one unit per transformer block (transformer_auto_wrap_policy) and the
//! root for the rest; each unit is one FlatParameter padded to a multiple of world_size, and
//! rank 0 keeps its fp32 shard.
//!
//! LoRA / QLoRA: transformers' Trainer replaces the wrap policy with PEFT's
//! (trainer.py `_fsdp_qlora_plugin_updates` → peft/utils/other.py `fsdp_auto_wrap_policy`):
//! every leaf module whose weight requires grad — each `lora_A` / `lora_B` Linear — is a unit
//! of its own, beside the transformer blocks. So a block's FlatParameter holds only its
//! frozen base weights (in their storage dtype: bf16, or QLoRA's packed weights typed as
//! `bnb_4bit_quant_storage`), and each adapter is a trainable FlatParameter padded on its own
//! (fp32 as PEFT upcasts LoRA's adapters; bf16 for sharded QLoRA, see `Wrap::shard_dtype`).
//! FSDP's docs warn that a FlatParameter mixing frozen and trainable tensors
//! (use_orig_params=True) allocates gradient memory for the frozen ones too; PEFT's policy is
//! what keeps them apart, and FSDP requires one dtype per FlatParameter
//! (`_flat_param.py`, `_validate_tensors_to_flatten`), which bf16 bases and fp32 adapters are
//! not. The adapters of a block are gathered with the block here (their own units gather
//! around each adapter's forward: an upper bound of the adapters' bf16 bytes, a few MiB).
//!
//! CPU offload (`CPUOffload(offload_params=True)`): the shards live in host memory
//! (`FlatParamHandle.shard` keeps `_local_shard` on the CPU); nothing of them is on the GPU
//! between gathers.

use super::zero::FLAT_MODULE;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone)]
pub(super) struct Unit {
    /// Trainable parameters in it.
    pub params: Vec<usize>,
    /// Trainable elements all-gathered for it: FSDP's padded flat parameters; ZeRO-3's
    /// parameters (frozen ones too) that are not persistent.
    pub padded: u64,
    /// Rank 0's shard of the trainable flat parameters, in elements.
    pub shard: u64,
    /// The shard of each trainable flat parameter (the optimizer keeps state per flat
    /// parameter): one for a block, one per adapter under PEFT's policy.
    pub flat_shards: Vec<u64>,
    /// FSDP: the frozen FlatParameter's padded elements and rank 0's shard, in `frozen_dtype`.
    pub frozen_padded: u64,
    pub frozen_shard: u64,
    pub frozen_dtype: DType,
    /// Gradients arrived (ZeRO-3 copies them out at once).
    pub arrivals: usize,
    /// The gathered flat parameters, and (offload) the shards copied to the device for them.
    pub gathered: Vec<T>,
    pub arrived: Vec<T>,
    pub grad_shard: Option<T>,
    pub state: Vec<T>,
}

impl Unit {
    pub(super) fn new(params: Vec<usize>, padded: u64, flat_shards: Vec<u64>) -> Unit {
        Unit {
            params,
            padded,
            shard: flat_shards.iter().sum(),
            flat_shards,
            frozen_padded: 0,
            frozen_shard: 0,
            frozen_dtype: DType::BF16,
            arrivals: 0,
            gathered: Vec::new(),
            arrived: Vec::new(),
            grad_shard: None,
            state: Vec::new(),
        }
    }
}

/// (trainable, frozen) parameters per unit: blocks 0..n_layer (by their layer), then the root.
pub(super) fn members(e: &Engine) -> Vec<(Vec<usize>, Vec<usize>)> {
    let layers = e
        .params
        .iter()
        .filter_map(|p| p.name.layer)
        .max()
        .map_or(0, |l| l as usize + 1);
    let mut members = vec![(Vec::new(), Vec::new()); layers + 1];
    for (p, param) in e.params.iter().enumerate() {
        let unit = &mut members[param.name.layer.map_or(layers, |l| l as usize)];
        if param.requires_grad {
            unit.0.push(p);
        } else {
            unit.1.push(p);
        }
    }
    members
}

fn numel(e: &Engine, p: usize) -> u64 {
    e.params[p].shape.numel().unwrap_or(0)
}

/// `numel` padded to a multiple of world_size, over world_size: a FlatParameter's shard.
fn shard_of(numel: u64, world: u64) -> u64 {
    numel.div_ceil(world)
}

/// How the run wraps its model.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wrap {
    /// PEFT's policy: each adapter its own flat parameter.
    pub per_leaf: bool,
    /// CPUOffload(offload_params=True).
    pub offload: bool,
    /// The trainable parameters' own dtype (their shards', gradients' and optimizer
    /// state's): fp32 master weights and PEFT's upcast adapters; the half dtype for sharded
    /// QLoRA's adapters, which TRL creates with `get_peft_model(...,
    /// autocast_adapter_dtype=False)` (trl/trainer/sft_trainer.py, `_prepare_peft_model`).
    pub shard_dtype: DType,
}

/// Wrapping: each unit's flat parameters, and rank 0's shards of them — the trainable ones
/// in `shard_dtype`, frozen ones in their storage dtype — on the device unless offloaded.
pub(super) fn build(e: &mut Engine, wrap: Wrap) -> Vec<Unit> {
    let Wrap {
        per_leaf,
        offload,
        shard_dtype,
    } = wrap;
    let world = e.dist.world;
    members(e)
        .into_iter()
        .map(|(params, frozen)| {
            let flat_shards: Vec<u64> = if per_leaf {
                params
                    .iter()
                    .map(|&p| shard_of(numel(e, p), world))
                    .collect()
            } else {
                let total = params.iter().map(|&p| numel(e, p)).sum();
                vec![shard_of(total, world)]
                    .into_iter()
                    .filter(|&s| s > 0)
                    .collect()
            };
            let padded = flat_shards.iter().sum::<u64>() * world;
            let mut unit = Unit::new(params, padded, flat_shards);
            if let Some(&first) = frozen.first() {
                unit.frozen_dtype = e.dtype(e.params[first].t);
                let total = frozen.iter().map(|&p| numel(e, p)).sum();
                unit.frozen_shard = shard_of(total, world);
                unit.frozen_padded = unit.frozen_shard * world;
            }
            if offload {
                // On the host: the shards, the pinned `_cpu_grad` of each trainable one, and
                // torch AdamW's state there (a 4-byte step and two moments per flat parameter).
                e.host(unit.shard.saturating_mul(4), shard_dtype);
                e.host(4 * unit.flat_shards.len() as u64, DType::U8);
                e.host(unit.frozen_shard, unit.frozen_dtype);
            } else {
                keep_shard(e, "fsdp_shard", unit.shard, shard_dtype);
                keep_shard(e, "fsdp_frozen_shard", unit.frozen_shard, unit.frozen_dtype);
            }
            unit
        })
        .collect()
}

fn keep_shard(e: &mut Engine, what: &'static str, elements: u64, dtype: DType) {
    if elements > 0 {
        e.alloc(
            Name::top(FLAT_MODULE, what),
            Shape::new(&[elements]),
            dtype,
            Category::Parameters,
        );
    }
}
