//! Inference's KV cache and the ops that read it.
//!
//! The cache is static, as vLLM's paged blocks and Hugging Face's `StaticCache` are: every
//! layer's keys and values are allocated once, for `block_size` tokens of every sequence, before
//! the first forward. A forward writes its (post-rotary) keys and values into it in place
//! (`reshape_and_cache_flash` / `index_copy_`): the write allocates nothing, and the forward's
//! own k and v temporaries are freed as in any forward. The prefill attends over the prompt's
//! own k and v (vLLM's flash-attention prefill; HF's DynamicCache); a decode step attends from
//! one new query per sequence over the whole cache.

use super::sdpa::Heads;
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// The cache of one run: per layer its keys and values (B, kv_heads, block_size, head_dim).
#[derive(Debug, Clone)]
pub struct KvCache {
    pub layers: Vec<[T; 2]>,
    /// Tokens already in the cache when the current forward starts (0 in the prefill).
    pub past: u64,
}

/// Allocate the cache for `layers` layers, `b` sequences of `tokens` tokens each.
pub fn alloc_kv_cache(
    e: &mut Engine,
    layers: u64,
    (b, nkv, tokens, hd): (u64, u64, u64, u64),
    dtype: DType,
) -> KvCache {
    let per_layer = vec![tokens; layers as usize];
    alloc_kv_cache_per_layer(e, &per_layer, (b, nkv, hd), dtype)
}

/// The cache with each layer's own length (`tokens[l]`): a sliding-window layer of Gemma 2/3
/// keeps `min(sliding_window, context)` tokens (transformers' cache_utils.py:
/// DynamicSlidingWindowLayer, "[batch_size, num_heads, min(seq_len, sliding_window),
/// head_dim]", and StaticSlidingWindowLayer's `min(sliding_window, max_cache_len)`).
pub fn alloc_kv_cache_per_layer(
    e: &mut Engine,
    tokens: &[u64],
    (b, nkv, hd): (u64, u64, u64),
    dtype: DType,
) -> KvCache {
    let layers = tokens
        .iter()
        .enumerate()
        .map(|(l, &n)| {
            let (l, shape) = (l as u32, Shape::new(&[b, nkv, n, hd]));
            [
                e.alloc(
                    Name::layer_param(l, "kv_cache", "k"),
                    shape,
                    dtype,
                    Category::KvCache,
                ),
                e.alloc(
                    Name::layer_param(l, "kv_cache", "v"),
                    shape,
                    dtype,
                    Category::KvCache,
                ),
            ]
        })
        .collect();
    KvCache { layers, past: 0 }
}

/// The tokens a decode step attends over, or None outside a decode step (training, prefill).
pub fn decode_context(e: &Engine) -> Option<u64> {
    e.kv.as_ref().filter(|c| c.past > 0).map(|c| c.past + 1)
}

/// The hidden state of each sequence's last position, for the lm_head: nanoGPT's
/// `x[:, [-1], :]` indexes with a list (a gather: a (B, 1, C) copy); Hugging Face's
/// `hidden_states[:, -1:, :]` is a view (no storage: the record has 0 bytes and the caller
/// keeps the base alive until the lm_head has run).
pub fn last_position(e: &mut Engine, x: V, copy: bool, name: Name) -> V {
    let r = *e.record(x.t);
    let d = r.shape.dims();
    let shape = Shape::new(&[d[0], 1, d[d.len() - 1]]);
    let t = if copy {
        e.alloc(name, shape, r.dtype, Category::Activations)
    } else {
        e.alloc_bytes(name, shape, r.dtype, 0, Category::Activations)
    };
    V {
        t,
        edge: Edge::None,
    }
}

/// One decode step's attention: q (B, nh, 1, hd) over `ctx` cached tokens of every layer.
/// Returns the output as o_proj sees it, (B, 1, nh·hd).
///
/// - SDPA / flash with a half q (`eager` false) runs vLLM's paged attention or
///   flash-attention's `flash_attn_with_kvcache`: the
///   output and the fp32 logsumexp (B, nh, 1), nothing of the cache's size. (Split-KV scratch
///   of flash-decoding is a few (splits, B, nh, hd) fp32 rows: not modelled.)
/// - Otherwise (eager attention, or fp32) Hugging Face's eager attention over the cache:
///   `repeat_kv` copies of the cached
///   k and v at the full head count (with grouped-query attention), the (B, nh, 1, ctx)
///   scores, their fp32 softmax cast back, `attn @ v` and its contiguous transpose.
pub fn decode_attention(e: &mut Engine, q: V, h: Heads, ctx: u64, eager: bool) -> V {
    let dtype = e.dtype(q.t);
    let act = Category::Activations;
    let out_shape = Shape::new(&[h.b, 1, h.nh * h.hd]);
    if dtype.is_half() && !eager {
        let out = e.alloc(h.name("decode.out"), out_shape, dtype, act);
        let lse = e.alloc(
            h.name("decode.logsumexp"),
            Shape::new(&[h.b, h.nh, 1]),
            DType::F32,
            act,
        );
        e.release(lse);
        return V {
            t: out,
            edge: Edge::None,
        };
    }
    let cache_dtype =
        e.kv.as_ref()
            .and_then(|c| c.layers.first())
            .map_or(dtype, |l| e.dtype(l[0]));
    let full = Shape::new(&[h.b, h.nh, ctx, h.hd]);
    let mut temps = Vec::new();
    if h.nkv != h.nh {
        temps.push(e.alloc(h.name("decode.k_repeat"), full, cache_dtype, act));
        temps.push(e.alloc(h.name("decode.v_repeat"), full, cache_dtype, act));
    }
    let scores_shape = Shape::new(&[h.b, h.nh, 1, ctx]);
    let scores = e.alloc(h.name("decode.scores"), scores_shape, dtype, act);
    e.matmul_workspace();
    let soft = e.alloc(h.name("decode.softmax"), scores_shape, DType::F32, act);
    e.release(scores);
    let probs = if dtype == DType::F32 {
        soft
    } else {
        let c = e.alloc(h.name("decode.softmax_cast"), scores_shape, dtype, act);
        e.release(soft);
        c
    };
    let y = e.alloc(
        h.name("decode.y"),
        Shape::new(&[h.b, h.nh, 1, h.hd]),
        dtype,
        act,
    );
    e.release(probs);
    let out = e.alloc(h.name("decode.out"), out_shape, dtype, act);
    e.release(y);
    for t in temps.into_iter().rev() {
        e.release(t);
    }
    V {
        t: out,
        edge: Edge::None,
    }
}
