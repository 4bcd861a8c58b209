//! Serving a model, in the order it touches GPU memory: the weights loaded frozen in `dtype`
//! and the KV cache allocated for `batch_size` sequences of `block_size` tokens (init), the
//! prefill of `prompt_len` tokens (logits of the last position unless `logits_all`), then the
//! worst decode step: one new token per sequence attending over a full cache. Everything runs
//! under no_grad in the weights' dtype (no autocast: a model loaded in bf16 runs in bf16).
//!
//! vLLM's start-up profile run (`profile_run`) is the same machinery without a cache:
//! `max_num_seqs` dummy sequences sharing `max_num_batched_tokens` tokens, then its sampler.

use super::dtype::DType;
use super::engine::{Engine, T, V};
use super::ops;
use super::runtime::Runtime;
use super::timeline::{Category, Name, Phase, Shape, Timeline};
use crate::config::{KvCacheDtype, Precision, TrainConfig};
use crate::error::Result;
use crate::model::Model;

/// The dtype of the weights (and the activations) of a model served in `cfg.dtype`.
pub fn weight_dtype(cfg: &TrainConfig) -> DType {
    match cfg.dtype {
        Precision::Float32 => DType::F32,
        Precision::BFloat16 => DType::BF16,
        Precision::Float16 => DType::F16,
    }
}

/// The KV cache's element type: `kv_cache_dtype`, or the weights'.
pub fn kv_dtype(cfg: &TrainConfig) -> DType {
    match cfg.kv_cache_dtype {
        None => weight_dtype(cfg),
        Some(KvCacheDtype::Float32) => DType::F32,
        Some(KvCacheDtype::BFloat16) => DType::BF16,
        Some(KvCacheDtype::Float16) => DType::F16,
        Some(KvCacheDtype::Fp8) => DType::F8,
    }
}

/// Bytes of keys and values one token of one sequence keeps in the cache:
/// 2 × n_layer × kv_heads × head_dim × element size. None on overflow.
pub fn kv_bytes_per_token(cfg: &TrainConfig) -> Option<u64> {
    2u64.checked_mul(cfg.n_layer)?
        .checked_mul(cfg.kv_heads())?
        .checked_mul(cfg.head_size())?
        .checked_mul(kv_dtype(cfg).size())
}

/// Run the inference simulation and return the Timeline.
pub fn simulate_inference(cfg: &TrainConfig, rt: Runtime) -> Result<Timeline> {
    cfg.validate()?;
    let mut e = Engine::new(rt);
    let model = Model::build(&mut e, cfg);
    let (b, ctx) = (cfg.batch_size, cfg.block_size);
    let dims = (b, cfg.kv_heads(), ctx, cfg.head_size());
    e.kv = Some(ops::alloc_kv_cache(
        &mut e,
        cfg.n_layer,
        dims,
        kv_dtype(cfg),
    ));
    e.grad_mode = false;
    e.training = false;
    if cfg.cuda_graphs {
        // vLLM captures its decode graphs after allocating the cache; the pool stays.
        let pool = graph_pool_bytes(cfg, rt)?;
        e.alloc_bytes(
            Name::top("cuda_graphs", "pool"),
            Shape::new(&[pool]),
            DType::U8,
            pool,
            Category::Workspace,
        );
    }

    e.phase = Phase::Prefill;
    let prompt = cfg.prompt_tokens();
    let next = step(&mut e, &model, b, prompt, cfg.logits_all);

    // The worst decode step: the cache holds block_size - 1 tokens and the new one makes it full.
    e.phase = Phase::Decode;
    if let Some(kv) = e.kv.as_mut() {
        kv.past = ctx.saturating_sub(1);
    }
    e.release(next);
    let last = step(&mut e, &model, b, 1, false);
    e.release(last);
    Ok(e.tl)
}

/// The private memory pool of vLLM's decode CUDA graphs (modelled). V0 captures the largest
/// batch first and every smaller graph shares its pool ("reverse order to share the memory
/// pool", `capture_model`), so the pool is what the largest captured decode forward allocates:
/// simulated here as one decode step of `graph_capture_batch()` sequences (one token each, a
/// full cache), counting the activations and logits alive at its peak. A lower bound: the
/// pool's own segment rounding and each graph's kernel state are not modelled.
pub fn graph_pool_bytes(cfg: &TrainConfig, rt: Runtime) -> Result<u64> {
    let mut e = Engine::new(rt);
    let model = Model::build(&mut e, cfg);
    e.kv = Some(ops::KvCache {
        layers: Vec::new(),
        past: cfg.block_size.saturating_sub(1),
    });
    e.phase = Phase::Decode;
    let b = cfg.graph_capture_batch();
    let idx = e.alloc(
        Name::top("batch", "input_ids"),
        Shape::new(&[b, 1]),
        DType::I64,
        Category::Other,
    );
    let logits = model.logits(&mut e, idx, false);
    e.drop_value(logits);
    e.release(idx);
    let profile = super::replay(&e.tl, false);
    Ok(
        super::replay::live_blocks_at(&e.tl, &profile, profile.peak_event)
            .into_iter()
            .filter(|&(t, _)| {
                matches!(
                    e.tl.tensors[t as usize].category,
                    Category::Activations | Category::Logits
                )
            })
            .map(|(_, block)| block)
            .sum(),
    )
}

/// One forward of `b` sequences of `t` new tokens, then greedy sampling of the next token:
/// returns the (B, 1) token ids; the input ids and the logits are gone.
fn step(e: &mut Engine, model: &Model, b: u64, t: u64, all: bool) -> T {
    let idx = e.alloc(
        Name::top("batch", "input_ids"),
        Shape::new(&[b, t]),
        DType::I64,
        Category::Other,
    );
    let logits = model.logits(e, idx, all);
    let next = sample(e, logits, b);
    e.drop_value(logits);
    e.release(idx);
    next
}

/// Greedy sampling as generate() and vLLM's sampler do it: the last position's logits copied
/// to fp32 (B, V), their argmax (B, 1) int64.
fn sample(e: &mut Engine, logits: V, b: u64) -> T {
    let v = *e.shape(logits.t).dims().last().unwrap_or(&1);
    let f32 = e.alloc(
        Name::top("sampler", "logits_fp32"),
        Shape::new(&[b, v]),
        DType::F32,
        Category::Logits,
    );
    let next = e.alloc(
        Name::top("sampler", "next_tokens"),
        Shape::new(&[b, 1]),
        DType::I64,
        Category::Other,
    );
    e.release(f32);
    next
}

/// vLLM V0's `profile_run`: the weights, then a forward of `max_num_seqs` dummy sequences
/// sharing `max_num_batched_tokens` tokens (the remainder dropped) with no KV cache, the
/// logits of each sequence's last token, and its sampler's fp32 copies: `logits.float()`,
/// `softmax` (probs) and `log_softmax` (logprobs), each (seqs, V), alive together.
pub fn simulate_vllm_profile(cfg: &TrainConfig, rt: Runtime) -> Result<Timeline> {
    cfg.validate()?;
    let mut e = Engine::new(rt);
    let model = Model::build(&mut e, cfg);
    e.grad_mode = false;
    e.training = false;
    e.phase = Phase::Prefill;
    let tokens = cfg.batched_tokens();
    let seqs = cfg.max_num_seqs.min(tokens).max(1);
    let idx = e.alloc(
        Name::top("batch", "input_ids"),
        Shape::new(&[seqs, tokens / seqs]),
        DType::I64,
        Category::Other,
    );
    let logits = model.logits(&mut e, idx, false);
    let v = *e.shape(logits.t).dims().last().unwrap_or(&1);
    let rows = Shape::new(&[seqs, v]);
    let sampler: Vec<T> = ["logits_fp32", "probs", "logprobs"]
        .into_iter()
        .map(|what| {
            e.alloc(
                Name::top("sampler", what),
                rows,
                DType::F32,
                Category::Logits,
            )
        })
        .collect();
    for t in sampler.into_iter().rev() {
        e.release(t);
    }
    e.drop_value(logits);
    e.release(idx);
    Ok(e.tl)
}
