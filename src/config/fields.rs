//! Reading and writing a `TrainConfig` field by its key's name: what `registry`'s table
//! declares, done. The per-family keys (model, attention, MoE, inference) have their own
//! modules; the nanoGPT and training keys are here.

use super::kinds::{parse_name, quoted_names};
use super::registry::{Const, Effect, KeySpec};
use super::value::{count, float, opt_count, Value};
use super::{
    CheckpointPolicy, Framework, LossKind, OptimizerKind, Parallelism, Precision, PrecisionMode,
    TrainConfig,
};

/// The current value of a key: the field's value, or train.py's default for an ignored key.
pub(crate) fn get(cfg: &TrainConfig, spec: &KeySpec) -> Value {
    if let Effect::Ignored(c) = spec.effect {
        return match c {
            Const::Int(i) => Value::Int(i.into()),
            Const::Float(x) => Value::Float(x),
            Const::Bool(b) => Value::Bool(b),
            Const::Str(s) => Value::Str(s.to_string()),
        };
    }
    if let Some(v) = super::model_keys::get(cfg, spec.name) {
        return v;
    }
    if let Some(v) = super::attn_keys::get(cfg, spec.name) {
        return v;
    }
    if let Some(v) = super::moe_keys::get(cfg, spec.name) {
        return v;
    }
    if let Some(v) = super::infer_keys::get(cfg, spec.name) {
        return v;
    }
    let int = |v: u64| Value::Int(v.into());
    let s = |v: &str| Value::Str(v.to_string());
    match spec.name {
        "n_layer" => int(cfg.n_layer),
        "n_head" => int(cfg.n_head),
        "n_embd" => int(cfg.n_embd),
        "block_size" => int(cfg.block_size),
        "vocab_size" => int(cfg.vocab_size),
        "dropout" => Value::Float(cfg.dropout),
        "bias" => Value::Bool(cfg.bias),
        "batch_size" => int(cfg.batch_size),
        "gradient_accumulation_steps" => int(cfg.gradient_accumulation_steps),
        "dtype" => s(cfg.dtype.as_str()),
        "precision_mode" => s(cfg.precision_mode.as_str()),
        "compile" => Value::Bool(cfg.compile),
        "eval_iters" => int(cfg.eval_iters),
        "eval_interval" => int(cfg.eval_interval),
        "eval_only" => Value::Bool(cfg.eval_only),
        "max_iters" => int(cfg.max_iters),
        "init_from" => s(&cfg.init_from),
        "dataset" => s(&cfg.dataset),
        "weight_decay" => Value::Float(cfg.weight_decay),
        "grad_clip" => Value::Float(cfg.grad_clip),
        "flash" => Value::Bool(cfg.flash),
        "activation_checkpointing" => Value::Bool(cfg.activation_checkpointing),
        "checkpoint_every" => int(cfg.checkpoint_every),
        "checkpoint_policy" => s(cfg.checkpoint_policy.as_str()),
        "use_reentrant" => cfg.use_reentrant.map_or(Value::None, Value::Bool),
        "ddp_bucket_view" => Value::Bool(cfg.ddp_bucket_view),
        "offload_optimizer" => Value::Bool(cfg.offload_optimizer),
        "offload_params" => Value::Bool(cfg.offload_params),
        "optimizer" => s(cfg.optimizer.as_str()),
        "eval_batch_size" => cfg.eval_batch_size.map_or(Value::None, int),
        "loss" => s(cfg.loss.as_str()),
        "alloc_conf" => cfg.alloc_conf.as_deref().map_or(Value::None, s),
        "world_size" => int(cfg.world_size),
        "parallelism" => s(cfg.parallelism.as_str()),
        "framework" => s(cfg.framework.as_str()),
        "transformers_version" => match cfg.transformers_version.0 {
            Some((a, b)) => s(&format!("{a}.{b}")),
            None => Value::None,
        },
        // Every Field key is listed above; a registry entry without a getter is a bug that
        // the `every_field_key_round_trips` test catches. Never panic on user input.
        _ => Value::None,
    }
}

/// Set a field key. The value's type has been checked against `spec.ty`; this converts it
/// and checks what a type cannot say (an enum's spelling, a negative count). The error is the
/// "expected ..." half of a message; the caller adds where and which key.
pub(crate) fn set(cfg: &mut TrainConfig, spec: &KeySpec, v: &Value) -> Result<(), String> {
    if spec.name == "transformers_version" && matches!(v, Value::Float(_) | Value::Int(_)) {
        return Err("expected a release in quotes, e.g. '4.44' (as a number 4.40 would read as 4.4), or None".to_string());
    }
    if !spec.ty.accepts(v) {
        return Err(format!(
            "expected {}, got a {}",
            spec.ty.expected(),
            v.type_name()
        ));
    }
    let name = spec.name;
    if let Some(r) = super::model_keys::set(cfg, name, v) {
        return r;
    }
    if let Some(r) = super::attn_keys::set(cfg, name, v) {
        return r;
    }
    if let Some(r) = super::moe_keys::set(cfg, name, v) {
        return r;
    }
    if let Some(r) = super::infer_keys::set(cfg, name, v) {
        return r;
    }
    if let Some(r) = set_choice(cfg, name, v) {
        return r;
    }
    match name {
        "dropout" => cfg.dropout = float(v),
        "weight_decay" => cfg.weight_decay = float(v),
        "grad_clip" => cfg.grad_clip = float(v),
        "bias" => cfg.bias = boolean(v),
        "compile" => cfg.compile = boolean(v),
        "eval_only" => cfg.eval_only = boolean(v),
        "flash" => cfg.flash = boolean(v),
        "activation_checkpointing" => cfg.activation_checkpointing = boolean(v),
        "ddp_bucket_view" => cfg.ddp_bucket_view = boolean(v),
        "offload_optimizer" => cfg.offload_optimizer = boolean(v),
        "offload_params" => cfg.offload_params = boolean(v),
        "init_from" => cfg.init_from = string(v),
        "dataset" => cfg.dataset = string(v),
        "eval_batch_size" => {
            cfg.eval_batch_size = opt_count(v, false)?;
        }
        "use_reentrant" => cfg.use_reentrant = (*v != Value::None).then(|| boolean(v)),
        "alloc_conf" => {
            cfg.alloc_conf = match v {
                Value::None => None,
                v => Some(string(v)),
            }
        }
        _ => set_count(cfg, name, v)?,
    }
    Ok(())
}

/// The keys that take one of a list of names, and the transformers release. None: `name` is
/// not one of them.
fn set_choice(cfg: &mut TrainConfig, name: &str, v: &Value) -> Option<Result<(), String>> {
    let set = |r: Result<(), String>| Some(r);
    match name {
        "dtype" => set(choice(
            v,
            &[Precision::Float32, Precision::BFloat16, Precision::Float16],
            |p| p.as_str(),
        )
        .map(|d| {
            cfg.dtype = d;
            cfg.dtype_written = super::Written(true);
        })),
        "precision_mode" => {
            set(choice(v, &PrecisionMode::ALL, |m| m.as_str()).map(|m| cfg.precision_mode = m))
        }
        "optimizer" => {
            set(choice(v, &OptimizerKind::ALL, |o| o.as_str()).map(|o| cfg.optimizer = o))
        }
        "loss" => {
            let all = [LossKind::Standard, LossKind::Chunked, LossKind::Liger];
            set(choice(v, &all, |l| l.as_str()).map(|l| cfg.loss = l))
        }
        "framework" => set(choice(v, &Framework::ALL, |f| f.as_str()).map(|f| cfg.framework = f)),
        "parallelism" => {
            let all = [
                Parallelism::Ddp,
                Parallelism::Fsdp,
                Parallelism::FsdpGradOp,
                Parallelism::Zero1,
                Parallelism::Zero2,
                Parallelism::Zero3,
                Parallelism::Tp,
            ];
            set(choice(v, &all, |p| p.as_str()).map(|p| cfg.parallelism = p))
        }
        "checkpoint_policy" => {
            set(choice(v, &CheckpointPolicy::ALL, |m| m.as_str())
                .map(|m| cfg.checkpoint_policy = m))
        }
        "transformers_version" => set(match v {
            Value::None => Ok(super::transformers::TransformersVersion(None)),
            v => super::transformers::TransformersVersion::parse(&string(v)).ok_or_else(|| {
                "expected a release such as '4.44' or '4.46.3', or None (4.49 or later)".to_string()
            }),
        }
        .map(|t| cfg.transformers_version = t)),
        _ => None,
    }
}

/// The counts (positive integers are checked by validation, not here).
fn set_count(cfg: &mut TrainConfig, name: &str, v: &Value) -> Result<(), String> {
    let n = count(v)?;
    match name {
        "n_layer" => cfg.n_layer = n,
        "n_head" => cfg.n_head = n,
        "n_embd" => cfg.n_embd = n,
        "block_size" => cfg.block_size = n,
        "vocab_size" => cfg.vocab_size = n,
        "batch_size" => cfg.batch_size = n,
        "gradient_accumulation_steps" => cfg.gradient_accumulation_steps = n,
        "eval_iters" => cfg.eval_iters = n,
        "eval_interval" => cfg.eval_interval = n,
        "max_iters" => cfg.max_iters = n,
        "world_size" => cfg.world_size = n,
        "checkpoint_every" => cfg.checkpoint_every = n,
        _ => return Err("is not a TrainConfig field (registry bug)".to_string()),
    }
    Ok(())
}

fn boolean(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

fn string(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        _ => String::new(),
    }
}

fn choice<T: Copy>(v: &Value, all: &[T], name: impl Fn(T) -> &'static str) -> Result<T, String> {
    parse_name(all, &name, &string(v))
        .ok_or_else(|| format!("expected one of {}", quoted_names(all, &name)))
}
