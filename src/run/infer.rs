//! Serving a model, in the order it touches GPU memory: the weights loaded frozen in `dtype`
//! and the KV cache allocated for `batch_size` sequences of `block_size` tokens (init), the
//! prefill of `prompt_len` tokens (logits of the last position unless `logits_all`), then the
//! worst decode step: one new token per sequence attending over a full cache. Everything runs
//! under no_grad in the weights' dtype (no autocast: a model loaded in bf16 runs in bf16).
//!
//! vLLM's start-up profile run (`profile_run`, V0 and V1) is the same machinery without a
//! cache: `max_num_seqs` dummy sequences sharing `max_num_batched_tokens` tokens, then the
//! sampler of that version.

use crate::config::{KvCacheDtype, TrainConfig};
use crate::error::Result;
use crate::model::{Model, Output, Stage, StageInput, StageOutput};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops;
use crate::sim::runtime::Runtime;
use crate::sim::timeline::{Category, Name, Phase, Shape, Timeline};

/// The dtype of the weights (and the activations) of a model served in `cfg.dtype`.
pub fn weight_dtype(cfg: &TrainConfig) -> DType {
    DType::of_precision(cfg.dtype)
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

/// Bytes of keys and values one token of one sequence keeps in the cache, every layer's.
pub fn kv_bytes_per_token(cfg: &TrainConfig) -> Option<u64> {
    cfg.n_layer.checked_mul(kv_bytes_per_token_layer(cfg)?)
}

/// Bytes of keys and values one token of one sequence keeps in one layer's cache:
/// 2 × kv_heads × head_dim × element size. None on overflow.
pub fn kv_bytes_per_token_layer(cfg: &TrainConfig) -> Option<u64> {
    2u64.checked_mul(cfg.kv_heads())?
        .checked_mul(cfg.head_size())?
        .checked_mul(kv_dtype(cfg).size())
}

/// Run the inference simulation and return the Timeline.
pub fn simulate_inference(cfg: &TrainConfig, rt: Runtime) -> Result<Timeline> {
    cfg.validate()?;
    let mut e = Engine::new(rt);
    let model = Model::build(&mut e, cfg);
    let (b, ctx) = (cfg.batch_size, cfg.block_size);
    let dims = (b, cfg.kv_heads(), cfg.head_size());
    let tokens: Vec<u64> = (0..cfg.n_layer as u32)
        .map(|l| cfg.cached_tokens(l, ctx))
        .collect();
    e.kv = Some(ops::alloc_kv_cache_per_layer(
        &mut e,
        &tokens,
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
    let profile = crate::sim::replay(&e.tl, false);
    Ok(
        crate::sim::replay::live_blocks_at(&e.tl, &profile, profile.peak_event)
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

/// The dummy batch of vLLM's start-up profile run, as `plan::vllm` resolves it per version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileBatch {
    /// `max_num_batched_tokens`.
    pub tokens: u64,
    /// Dummy requests: `min(max_num_seqs, tokens)`.
    pub reqs: u64,
    /// The model's vocabulary before vLLM pads it (what the sampler sees).
    pub vocab: u64,
    /// Tensor parallelism gathers every rank's logits slice into (reqs, padded vocab) first.
    pub gathered_vocab: Option<u64>,
}

/// vLLM V0's `profile_run` (vllm/worker/model_runner.py, vLLM 0.6): the weights, then a forward
/// of `reqs` dummy sequences sharing `tokens` tokens (the remainder dropped) with no KV cache,
/// the logits of each sequence's last token, and its sampler's fp32 copies: `logits.float()`,
/// `softmax` (probs) and `log_softmax` (logprobs), each (seqs, V), alive together.
pub fn simulate_vllm_profile(
    cfg: &TrainConfig,
    rt: Runtime,
    batch: ProfileBatch,
) -> Result<Timeline> {
    simulate_vllm_profile_stage(cfg, rt, batch, Stage::whole(cfg))
}

/// [`simulate_vllm_profile`] on one pipeline-parallel rank (`stage`): V0's `profile_run`
/// (vLLM 0.6.6 vllm/worker/model_runner.py) makes `intermediate_tensors` a local of the run on
/// a rank after the first (`make_empty_intermediate_tensors(batch_size=batch_size)`, the
/// run's tokens), freed with it; `execute_model` returns a non-last rank's hidden states
/// before `compute_logits`, so only the last rank samples.
pub fn simulate_vllm_profile_stage(
    cfg: &TrainConfig,
    rt: Runtime,
    batch: ProfileBatch,
    stage: Stage,
) -> Result<Timeline> {
    let (mut e, model) = profile_engine(cfg, rt, stage)?;
    let seqs = batch.reqs.max(1);
    let idx = e.alloc(
        Name::top("batch", "input_ids"),
        Shape::new(&[seqs, batch.tokens / seqs]),
        DType::I64,
        Category::Other,
    );
    let (logits, received) = stage_forward(&mut e, &model, cfg, stage, idx, batch.tokens);
    let finish = |e: &mut Engine| {
        e.release(idx);
        for t in received.iter().rev() {
            e.release(*t);
        }
    };
    let Some(logits) = logits else {
        finish(&mut e);
        return Ok(e.tl);
    };
    let rows = Shape::new(&[seqs, batch.vocab]);
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
    finish(&mut e);
    Ok(e.tl)
}

/// vLLM V1's `profile_run` (vLLM 0.10, vllm/v1/worker/gpu_model_runner.py): `_dummy_run(
/// max_num_tokens, is_profile=True)` spreads `tokens` over `reqs = min(max_num_seqs, tokens)`
/// requests (`num_tokens // num_reqs` each, the remainder on the last; simulated as `reqs`
/// rows of `ceil(tokens / reqs)`, the same tokens when they divide, as every default does),
/// attention skipped (no metadata in a profile run), then `_dummy_sampler_run` on each
/// request's last hidden state: `compute_logits` (reqs, V) in the weights' dtype, which the
/// caller keeps while `Sampler.forward` makes `logits.to(torch.float32)` and the PyTorch
/// top-k/top-p path (vllm/v1/sample/ops/topk_topp_sampler.py `apply_top_k_top_p`, the dummy
/// metadata sets both) sorts it: `logits_sort` fp32 and `logits_idx` int64, the top-k mask
/// (bool, a local alive to the end), `probs_sort = logits_sort.softmax()` (fp32, cumsum in
/// place) and the top-p mask; `scatter_` writes back in place and the sort's tensors go;
/// `random_sample` then holds `probs` and `q = empty_like(probs)` (fp32). FlashInfer's sampler,
/// where installed and chosen, needs none of the sort's tensors: this is the larger path.
pub fn simulate_vllm_v1_profile(
    cfg: &TrainConfig,
    rt: Runtime,
    batch: ProfileBatch,
) -> Result<Timeline> {
    simulate_vllm_v1_profile_stage(cfg, rt, batch, Stage::whole(cfg))
}

/// [`simulate_vllm_v1_profile`] on one pipeline-parallel rank (`stage`): a rank after the
/// first allocates the runner's `self.intermediate_tensors` in its first `_dummy_run` (vLLM
/// 0.10.1 gpu_model_runner.py: `make_empty_intermediate_tensors(batch_size=
/// self.max_num_tokens, ...)`) and keeps it; only the last rank runs `_dummy_sampler_run`
/// (`profile_run`: `if get_pp_group().is_last_rank`).
pub fn simulate_vllm_v1_profile_stage(
    cfg: &TrainConfig,
    rt: Runtime,
    batch: ProfileBatch,
    stage: Stage,
) -> Result<Timeline> {
    let (mut e, model) = profile_engine(cfg, rt, stage)?;
    let reqs = batch.reqs.max(1);
    let idx = e.alloc(
        Name::top("batch", "input_ids"),
        Shape::new(&[reqs, batch.tokens.div_ceil(reqs)]),
        DType::I64,
        Category::Other,
    );
    // The runner's buffers outlive the run: never released.
    let (logits, _kept) = stage_forward(&mut e, &model, cfg, stage, idx, batch.tokens);
    e.release(idx);
    let Some(logits) = logits else {
        return Ok(e.tl);
    };
    let gathered = batch.gathered_vocab.map(|v| {
        e.alloc(
            Name::top("logits", "all_gather"),
            Shape::new(&[reqs, v]),
            weight_dtype(cfg),
            Category::Logits,
        )
    });
    let rows = Shape::new(&[reqs, batch.vocab]);
    let tmp = |e: &mut Engine, what: &'static str, dtype: DType| {
        e.alloc(Name::top("sampler", what), rows, dtype, Category::Logits)
    };
    let f32 = tmp(&mut e, "logits_fp32", DType::F32);
    let sort: Vec<T> = [
        ("logits_sort", DType::F32),
        ("logits_idx", DType::I64),
        ("top_k_mask", DType::Bool),
        ("probs_sort", DType::F32),
        ("top_p_mask", DType::Bool),
    ]
    .into_iter()
    .map(|(what, dtype)| tmp(&mut e, what, dtype))
    .collect();
    for t in sort.into_iter().rev() {
        e.release(t);
    }
    let probs = tmp(&mut e, "probs", DType::F32);
    let q = tmp(&mut e, "q", DType::F32);
    for t in [q, probs, f32] {
        e.release(t);
    }
    if let Some(g) = gathered {
        e.release(g);
    }
    e.drop_value(logits);
    Ok(e.tl)
}

/// One stage's forward of a profile run on the input ids `idx` (requests, tokens each): the
/// last rank's logits, or None once a non-last rank's output
/// (`IntermediateTensors`) has come and gone. A rank after the first reads the received
/// hidden states from the runner's buffers, returned for the caller to keep or free:
/// `hidden_states` and `residual` ([`Stage::intermediate_tensors`]), each `tokens` x n_embd
/// in the weights' dtype (vLLM 0.10.1 llama.py: `make_empty_intermediate_tensors_factory(
/// ["hidden_states", "residual"], hidden_size)`; sequence.py `IntermediateTensors`).
fn stage_forward(
    e: &mut Engine,
    model: &Model,
    cfg: &TrainConfig,
    stage: Stage,
    idx: T,
    tokens: u64,
) -> (Option<V>, Vec<T>) {
    let (reqs, each) = (e.shape(idx).dims()[0], e.shape(idx).dims()[1]);
    let dtype = weight_dtype(cfg);
    let c = cfg.n_embd;
    let buffer = |e: &mut Engine, what: &'static str| {
        // Shaped as the simulated batch's rows; sized as vLLM's (tokens, hidden_size).
        let bytes = tokens.saturating_mul(c).saturating_mul(dtype.size());
        let shape = Shape::new(&[reqs, each, c]);
        let name = Name::top("intermediate_tensors", what);
        e.alloc_bytes(name, shape, dtype, bytes, Category::Activations)
    };
    let handed = Stage::intermediate_tensors(cfg);
    let received: Vec<T> = if stage.first {
        Vec::new()
    } else {
        handed.iter().map(|what| buffer(e, what)).collect()
    };
    let input = match received.first() {
        Some(&hidden) => StageInput::Hidden(V {
            t: hidden,
            edge: Edge::None,
        }),
        None => StageInput::Ids(idx),
    };
    let out = model.stage_logits(e, input);
    let logits = match out {
        StageOutput::Done(Output::Logits(l)) | StageOutput::Done(Output::Loss(_, l)) => Some(l),
        StageOutput::Hidden(x) => {
            // vLLM's decoder layer returns (hidden_states, residual): the simulated layers
            // leave one stream, the fused residual add keeps the second.
            if handed.len() > 1 {
                let shape = e.shape(x.t);
                let name = Name::top("intermediate_tensors", "residual_out");
                let residual = e.alloc(name, shape, e.dtype(x.t), Category::Activations);
                e.release(residual);
            }
            e.drop_value(x);
            None
        }
    };
    (logits, received)
}

/// The engine of a profile run: the stage's weights loaded (phase Init), then no_grad
/// prefill.
fn profile_engine(cfg: &TrainConfig, rt: Runtime, stage: Stage) -> Result<(Engine, Model)> {
    cfg.validate()?;
    let mut e = Engine::new(rt);
    let model = Model::build_stage(&mut e, cfg, stage);
    e.grad_mode = false;
    e.training = false;
    e.phase = Phase::Prefill;
    Ok((e, model))
}
