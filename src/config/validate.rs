//! Checks on a resolved `TrainConfig`: what nanoGPT or PyTorch would refuse at run time, and
//! sizes so absurd that their bytes do not fit in u64. Each error is one line that starts with
//! where the offending value came from (file:line, override, init_from) and says what was
//! expected.

use super::blame::Blame;
use super::presets::INIT_FROM;
use super::value::Origin;
use super::TrainConfig;
use crate::error::{Error, Result};
use std::collections::HashMap;

/// PYTORCH_CUDA_ALLOC_CONF options PyTorch's caching allocator recognises (c10/cuda/CUDAAllocatorConfig.cpp).
const ALLOC_OPTIONS: &[&str] = &[
    "max_split_size_mb",
    "roundup_power2_divisions",
    "garbage_collection_threshold",
    "expandable_segments",
    "release_lock_on_cudamalloc",
    "pinned_use_cuda_host_register",
    "pinned_num_register_threads",
    "pinned_use_background_threads",
    "backend",
];

pub(crate) fn validate(cfg: &TrainConfig, origins: &HashMap<&'static str, Origin>) -> Result<()> {
    let blame = &Blame(origins);
    super::limits::check(cfg, blame)?;

    sizes(cfg, origins, blame)?;
    combinations(cfg, blame)?;
    if cfg.parallelism == super::Parallelism::Tp {
        tensor_parallel(cfg, blame)?;
    } else if cfg.world_size > 1
        && !cfg
            .gradient_accumulation_steps
            .is_multiple_of(cfg.world_size)
    {
        return Err(Error::bad_value("gradient_accumulation_steps", format!(
            "{}gradient_accumulation_steps = {} is not a multiple of world_size = {}: expected a multiple (nanoGPT asserts it, then gives each rank gradient_accumulation_steps / world_size micro-steps)",
            blame.at("gradient_accumulation_steps"),
            cfg.gradient_accumulation_steps,
            cfg.world_size
        )));
    }
    scalars(cfg, blame)?;
    super::model_keys::validate(cfg, origins)?;
    super::attn_keys::validate(cfg, origins)?;
    super::moe_keys::validate(cfg, origins)?;
    super::infer_keys::validate(cfg, origins)?;
    super::overflow::check_bytes(cfg, blame)
}

/// The counts that must be positive, and the heads that must divide the width.
fn sizes(cfg: &TrainConfig, origins: &HashMap<&'static str, Origin>, blame: &Blame) -> Result<()> {
    let sizes: [(&str, u64, &str); 9] = [
        ("n_layer", cfg.n_layer, "layers"),
        ("n_head", cfg.n_head, "attention heads"),
        ("n_embd", cfg.n_embd, "model width"),
        ("block_size", cfg.block_size, "sequence length"),
        ("vocab_size", cfg.vocab_size, "vocabulary"),
        ("batch_size", cfg.batch_size, "micro-batch"),
        (
            "gradient_accumulation_steps",
            cfg.gradient_accumulation_steps,
            "micro-steps per optimizer step",
        ),
        ("world_size", cfg.world_size, "GPUs"),
        (
            "eval_batch_size",
            cfg.eval_batch_size.unwrap_or(1),
            "eval batch",
        ),
    ];
    for (key, v, what) in sizes {
        if v == 0 {
            return blame.fail(key, "0", format!("a positive integer ({what}, at least 1)"));
        }
    }
    if cfg.eval_interval == 0 {
        return blame.fail(
            "eval_interval",
            "0",
            "a positive integer (train.py computes iter_num % eval_interval)",
        );
    }
    if cfg.head_dim.is_none() && !cfg.n_embd.is_multiple_of(cfg.n_head) {
        let key = if origins.contains_key("n_head") || !origins.contains_key("n_embd") {
            "n_head"
        } else {
            "n_embd"
        };
        return Err(Error::bad_value(key, format!(
            "{}n_embd = {} is not divisible by n_head = {}: expected n_embd % n_head == 0 (each head gets n_embd / n_head channels)",
            blame.at(key),
            cfg.n_embd,
            cfg.n_head
        )));
    }
    Ok(())
}

/// Rates, init_from and the allocator's configuration string.
fn scalars(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    let floats = [
        ("dropout", cfg.dropout),
        ("weight_decay", cfg.weight_decay),
        ("grad_clip", cfg.grad_clip),
    ];
    for (key, x) in floats {
        if !x.is_finite() || x < 0.0 {
            return blame.fail(key, super::value::float_repr(x), "a finite number >= 0");
        }
    }
    if cfg.dropout >= 1.0 {
        return blame.fail(
            "dropout",
            super::value::float_repr(cfg.dropout),
            "a probability in [0, 1), e.g. 0.0 or 0.1",
        );
    }
    if !INIT_FROM.contains(&cfg.init_from.as_str()) {
        let names: Vec<String> = INIT_FROM.iter().map(|n| format!("'{n}'")).collect();
        return blame.fail(
            "init_from",
            format!("'{}'", short(&cfg.init_from)),
            format!("one of {}", names.join(", ")),
        );
    }
    if let Some(conf) = &cfg.alloc_conf {
        check_alloc_conf(conf).map_err(|e| {
            Error::bad_value(
                "alloc_conf",
                format!(
                    "{}alloc_conf = '{}': {e}",
                    blame.at("alloc_conf"),
                    short(conf)
                ),
            )
        })?;
    }
    Ok(())
}

/// Modes the simulator has no policy for together: a clear error rather than a figure that
/// mixes two models.
fn combinations(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if cfg.world_size > 1 && cfg.mode == super::Mode::Inference {
        return Err(Error::bad_value("world_size", format!(
            "{}world_size = {}: expected 1 with mode = 'inference' (tensor-parallel serving, vLLM's --tensor-parallel-size, is not modelled)",
            blame.at("world_size"),
            cfg.world_size
        )));
    }
    super::sharded::validate(cfg, blame)?;
    pure_precision(cfg, blame)?;
    sharded_optimizer(cfg, blame)?;
    if let Some(expected) = cfg.transformers_version.refusal(cfg.model_type) {
        let v = cfg.transformers_version.display();
        return blame.fail("transformers_version", format!("'{v}'"), expected);
    }
    if cfg.checkpoint_every == 0 {
        return blame.fail(
            "checkpoint_every",
            0,
            "a positive integer (1 = every block, k = every k-th block)",
        );
    }
    op_checkpoint_policy(cfg, blame)?;
    liger_loss(cfg, blame)
}

/// `loss = 'liger'` where it cannot run ([`TrainConfig::liger_runs`]), said in the user's words.
fn liger_loss(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if cfg.loss != super::LossKind::Liger || cfg.liger_runs() {
        return Ok(());
    }
    if cfg.parallelism == super::Parallelism::Tp {
        return blame.fail("loss", "'liger'", "'standard' with parallelism = 'tp'");
    }
    let why = format!(
        "'standard' or 'chunked' with model_type '{}' (Liger-Kernel patches no such model)",
        cfg.model_type.as_str()
    );
    blame.fail("loss", "'liger'", why)
}

/// torchtitan's per-op policy (`sim::sac`) is derived for dense decoders whose matmuls are
/// aten.mm/addmm: bitsandbytes' 4-/8-bit matmuls and the MoE experts' grouped_mm/topk are other
/// ops whose policy is not derived here, and torch.utils.checkpoint takes a `context_fn` only
/// non-reentrant (it raises "Passing `context_fn` or `debug` is only supported when
/// use_reentrant=False").
fn op_checkpoint_policy(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if cfg.checkpoint_policy != super::CheckpointPolicy::Op || !cfg.activation_checkpointing {
        return Ok(());
    }
    let refuse = |why: &str| blame.fail("checkpoint_policy", "'op'", format!("'full' {why}"));
    if cfg.use_reentrant == Some(true) {
        return refuse("with use_reentrant = True (a selective policy runs non-reentrant only)");
    }
    if cfg.quantization != super::Quantization::None {
        return refuse(
            "with quantized weights (the policy over bitsandbytes' matmuls is not modelled)",
        );
    }
    if cfg.num_experts.is_some() {
        return refuse(
            "with mixture-of-experts models (the policy over grouped_mm and topk is not modelled)",
        );
    }
    Ok(())
}

/// ZeRO and FSDP run the optimizer on their own flat fp32 partitions (sim/parallel); the
/// state and step of the optimizers added for issue #12 are derived for torch's per-parameter
/// loop only, so they are refused there rather than guessed.
fn sharded_optimizer(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    use super::{OptimizerKind as O, Parallelism as P};
    let sharded = !matches!(cfg.parallelism, P::Ddp | P::Tp);
    if sharded && !matches!(cfg.optimizer, O::AdamW | O::AdamW8bit | O::Sgd) {
        return Err(Error::bad_value("optimizer", format!(
            "{}optimizer = '{}': expected 'adamw', 'adamw8bit' or 'sgd' with parallelism = '{}' (other optimizers on ZeRO/FSDP partitions are not modelled)",
            blame.at("optimizer"),
            cfg.optimizer.as_str(),
            cfg.parallelism.as_str()
        )));
    }
    Ok(())
}

/// `precision_mode = 'pure'` is modelled where every trainable weight is the model's own
/// tensor in `dtype`: not under LoRA/QLoRA (PEFT upcasts adapters to fp32,
/// `autocast_adapter_dtype=True`, so their forward mixes dtypes not derived here) and not
/// under ZeRO/FSDP/TP (their flat buffers and master copies are built for mixed precision).
fn pure_precision(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if cfg.precision_mode != super::PrecisionMode::Pure || cfg.mode == super::Mode::Inference {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(Error::bad_value(
            "precision_mode",
            format!(
                "{}precision_mode = 'pure': expected 'mixed' {why}",
                blame.at("precision_mode")
            ),
        ))
    };
    if cfg.lora_rank > 0 || cfg.quantization != super::Quantization::None {
        return refuse("with LoRA/QLoRA (pure half-precision adapters are not modelled)");
    }
    if cfg.parallelism != super::Parallelism::Ddp {
        return refuse(&format!(
            "with parallelism = '{}' (pure half precision is modelled for one GPU and DDP)",
            cfg.parallelism.as_str()
        ));
    }
    Ok(())
}

/// Tensor parallelism splits the heads and the vocabulary over world_size ranks; it is modelled
/// for nanoGPT's GPT with the standard loss (Megatron's vocab-parallel cross-entropy).
fn tensor_parallel(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    let w = cfg.world_size;
    if cfg.model_type != super::ModelType::Gpt2 {
        return Err(Error::bad_value("parallelism", format!(
            "{}parallelism = 'tp': expected model_type 'gpt2' (tensor parallelism is modelled for nanoGPT's GPT only), got '{}'",
            blame.at("parallelism"),
            cfg.model_type.as_str()
        )));
    }
    if cfg.loss != super::LossKind::Standard {
        return Err(Error::bad_value("parallelism", format!(
            "{}parallelism = 'tp': expected loss = 'standard' (the vocab-parallel cross-entropy replaces it)",
            blame.at("parallelism")
        )));
    }
    if !cfg.n_head.is_multiple_of(w) {
        return Err(Error::bad_value("n_head", format!(
            "{}n_head = {} is not divisible by world_size = {w}: expected n_head % world_size == 0 under parallelism = 'tp' (each rank computes n_head / world_size heads)",
            blame.at("n_head"),
            cfg.n_head
        )));
    }
    Ok(())
}

/// PYTORCH_CUDA_ALLOC_CONF: comma-separated `option:value`; PyTorch refuses unknown options.
fn check_alloc_conf(conf: &str) -> std::result::Result<(), String> {
    for part in conf.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once(':') else {
            return Err(format!("expected option:value pairs separated by commas, e.g. 'expandable_segments:True' (got '{}')", short(part)));
        };
        let key = key.trim();
        if !ALLOC_OPTIONS.contains(&key) {
            return Err(format!(
                "expected PyTorch allocator options ({}), got '{}'",
                ALLOC_OPTIONS.join(", "),
                short(key)
            ));
        }
        let value = value.trim();
        if key == "expandable_segments" && value != "True" && value != "False" {
            return Err(format!(
                "expected expandable_segments:True or expandable_segments:False, got '{}'",
                short(value)
            ));
        }
    }
    Ok(())
}

/// Long user strings are cut in messages so an error stays one readable line.
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cfg: TrainConfig) -> String {
        validate(&cfg, &HashMap::new()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        validate(&TrainConfig::default(), &HashMap::new()).unwrap();
    }

    #[test]
    fn each_bad_class_names_its_key() {
        let d = TrainConfig::default;
        assert!(check(TrainConfig {
            batch_size: 0,
            ..d()
        })
        .starts_with("batch_size = 0: expected a positive integer"));
        assert!(check(TrainConfig { n_head: 7, ..d() }).contains("n_embd % n_head == 0"));
        assert!(check(TrainConfig {
            dropout: 1.0,
            ..d()
        })
        .starts_with("dropout = 1.0: expected a probability in [0, 1)"));
        assert!(check(TrainConfig {
            eval_batch_size: Some(0),
            ..d()
        })
        .starts_with("eval_batch_size = 0"));
        assert!(check(TrainConfig {
            world_size: 0,
            ..d()
        })
        .starts_with("world_size = 0"));
        assert!(check(TrainConfig {
            world_size: 3,
            ..d()
        })
        .contains("not a multiple of world_size = 3"));
        assert!(check(TrainConfig {
            n_layer: 1025,
            ..d()
        })
        .starts_with("n_layer = 1025: expected at most 1024 layers"));
        // Every factor within its limit, their product past u64: the deepest, widest, longest.
        assert!(check(TrainConfig {
            batch_size: 8,
            block_size: 1 << 24,
            n_head: 1024,
            n_embd: 1 << 17,
            n_layer: 1024,
            flash: false,
            ..d()
        })
        .contains("overflow 64 bits"));
        assert!(check(TrainConfig {
            init_from: "gpt3".into(),
            ..d()
        })
        .starts_with("init_from = 'gpt3': expected one of"));
        assert!(check(TrainConfig {
            alloc_conf: Some("expandable:True".into()),
            ..d()
        })
        .contains("allocator options"));
        validate(
            &TrainConfig {
                alloc_conf: Some("expandable_segments:True".into()),
                ..d()
            },
            &HashMap::new(),
        )
        .unwrap();
    }
}
