//! What the sharded engines (sim/parallel) model beside full fine-tuning: LoRA and QLoRA
//! adapters over a frozen base, and the CPU offload of ZeRO and FSDP. The combinations they
//! do not model are refused here with the key to change.

use super::blame::Blame;
use super::{OptimizerKind, Parallelism, Quantization, TrainConfig};
use crate::error::Result;

pub(crate) fn validate(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    adapters(cfg, blame)?;
    offload(cfg, blame)
}

/// LoRA runs under every data-parallel engine. QLoRA's 4-bit weights shard only as
/// bitsandbytes' `bnb_4bit_quant_storage` floating-point storage (transformers' fsdp_qlora
/// and DeepSpeed-ZeRO3 guides); LLM.int8()'s `Int8Params` has no such storage.
fn adapters(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    let sharded = !matches!(cfg.parallelism, Parallelism::Ddp);
    if !sharded || cfg.world_size <= 1 {
        return Ok(());
    }
    let adapters = cfg.lora_rank > 0 || cfg.quantization != Quantization::None;
    if adapters && cfg.parallelism == Parallelism::Tp {
        return blame.fail(
            "parallelism",
            "'tp'",
            "'ddp', 'fsdp', 'fsdp_grad_op' or 'zero1'/'zero2'/'zero3' for LoRA/QLoRA runs",
        );
    }
    if matches!(cfg.quantization, Quantization::Int8) {
        return blame.fail(
            "quantization",
            "'int8'",
            format!(
                "'nf4' or 'fp4' with parallelism = '{}' (only bitsandbytes' 4-bit storage can be sharded)",
                cfg.parallelism.as_str()
            ),
        );
    }
    Ok(())
}

/// `offload_optimizer`: DeepSpeed's ZeRO-Offload, stages 2 and 3 (DeepSpeedCPUAdam on the
/// host). `offload_params`: ZeRO-3's offload_param, or FSDP's CPUOffload (which moves the
/// sharded parameters, their gradients and so the optimizer to the host).
fn offload(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    use Parallelism as P;
    if cfg.offload_optimizer && !matches!(cfg.parallelism, P::Zero2 | P::Zero3) {
        return blame.fail(
            "offload_optimizer",
            "True",
            format!(
                "parallelism = 'zero2' or 'zero3' (got '{}'; FSDP offloads with offload_params)",
                cfg.parallelism.as_str()
            ),
        );
    }
    if cfg.offload_params && !matches!(cfg.parallelism, P::Zero3 | P::Fsdp | P::FsdpGradOp) {
        return blame.fail(
            "offload_params",
            "True",
            format!(
                "parallelism = 'zero3', 'fsdp' or 'fsdp_grad_op' (got '{}')",
                cfg.parallelism.as_str()
            ),
        );
    }
    let offloaded = cfg.offload_optimizer || cfg.offload_params;
    if offloaded && cfg.optimizer != OptimizerKind::AdamW {
        let key = if cfg.offload_optimizer {
            "offload_optimizer"
        } else {
            "offload_params"
        };
        return blame.fail(
            "optimizer",
            format!("'{}'", cfg.optimizer.as_str()),
            format!("'adamw' with {key} = True (the optimizer steps on the CPU: DeepSpeedCPUAdam, or torch AdamW on FSDP's CPU shards)"),
        );
    }
    Ok(())
}
