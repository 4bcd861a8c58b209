//! The ops a transformer is made of. Each forward allocates its outputs in the dtype the
//! runtime's cast policy gives, saves what its backward needs (one reference each), and
//! records a backward node; each backward allocates its input gradients in PyTorch's order
//! and then releases the gradient it got and its saved tensors.

mod attention;
mod attention_compiled;
mod basic;
mod cross_entropy;
mod eager;
pub(crate) mod fusion;
mod kv_cache;
mod layer_norm;
mod liger;
mod linear;
mod loss;
pub mod moe;
pub mod moe_aux;
mod pointwise;
pub mod quant;
mod rms_norm;
mod rotary;
mod sdpa;
mod tp;

pub use attention::{attention, Attention, AttnKind};
pub use basic::{add, add_broadcast, div_scalar, dropout, embedding, gelu};
pub use cross_entropy::cross_entropy;
pub use eager::{scores_attention, softcapped_eager_attention, ScoresKind};
pub use kv_cache::{
    alloc_kv_cache, alloc_kv_cache_per_layer, decode_attention, decode_context, last_position,
    KvCache,
};
pub use layer_norm::layer_norm;
pub use liger::fused_linear_cross_entropy;
pub use linear::linear;
pub use loss::{chunked_cross_entropy, CHUNK_ROWS};
pub use pointwise::{
    clone, heads_view, mul, mul_as, mul_scalar, promote, repeat_kv, requires_grad, scale,
    shifted_copy, sigmoid, silu, silu_as, split2, split3, tanh, to_dtype,
};
pub use rms_norm::{rms_norm, rms_norm_as, RmsStyle};
pub use rotary::{rope, rotary_tables, rotary_tables_of};
pub use sdpa::{kernel_for, sdpa, sdpa_kernel, sdpa_masked, Heads, SdpaKernel};
pub use tp::{vocab_parallel_cross_entropy, vocab_parallel_embedding};

use super::dtype::DType;
use super::engine::{Engine, T};
use super::timeline::{Category, Name, Shape};

/// A backward node's op and what it saved.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Embedding {
        idx: T,
        weight: Shape,
        dtype: DType,
        name: Name,
    },
    AddBroadcast {
        pos: Shape,
        name: Name,
    },
    Add {
        a: DType,
        b: DType,
        shape: Shape,
        name: Name,
    },
    Dropout {
        mask: T,
        shape: Shape,
        dtype: DType,
        name: Name,
    },
    LayerNorm {
        /// The input (eager), or the normalised input x̂ (compiled, fusion.rs).
        x: T,
        /// None when compiled: the backward reads x̂ and rstd only.
        mean: Option<T>,
        rstd: T,
        bias: bool,
        /// The weight (and bias) need gradients (false when frozen).
        w_grad: bool,
        c: u64,
        name: Name,
    },
    Linear(linear::LinearSaved),
    /// Autocast's `_to_copy`: the backward casts the gradient back.
    ToCopy {
        from: DType,
        shape: Shape,
        name: Name,
        category: Category,
    },
    /// A pointwise activation that keeps its input for the backward (GELU, SiLU); `shape`
    /// is the input's as the op sees it (a chunk of `x`'s storage for Phi-3's gate).
    Activation {
        x: T,
        shape: Shape,
        name: Name,
    },
    Attention(Attention),
    LogSoftmax {
        out: T,
        shape: Shape,
        dtype: DType,
    },
    NllLoss {
        input: T,
        target: T,
        total_weight: T,
        shape: Shape,
    },
    Div,
    /// A checkpointed block: recompute `f` on the saved input `x` in the backward.
    Checkpoint {
        f: u32,
        x: T,
    },
    /// Cross-entropy over chunks of rows, each chunk recomputed in the backward.
    ChunkedLoss(loss::ChunkedSaved),
    /// Liger's fused linear cross-entropy: the gradients it computed in its forward.
    LigerLoss(liger::LigerSaved),
    // --- the Hugging Face decoders' ops ---
    RmsNorm(rms_norm::RmsSaved),
    Rope(rotary::RopeSaved),
    Mul(pointwise::MulSaved),
    /// `x * s` for a 0-dim `s` without grad (Gemma's embedding scale).
    Scale {
        s: T,
        shape: Shape,
        dtype: DType,
        name: Name,
    },
    /// A node that keeps nothing and whose backward allocates one gradient shaped like its
    /// input: a view whose backward `reshape` copies, `x * python_float`.
    Pointwise {
        shape: Shape,
        dtype: DType,
        name: Name,
    },
    /// A chunk of a 3-way split whose gradient its last sibling collects.
    SplitPart,
    /// The output of an FSDP unit: its backward is the unit's pre-backward hook (gather the
    /// unit's parameters, prefetch the next); the gradient passes through.
    Unshard {
        unit: u32,
    },
    /// Megatron's vocab-parallel cross-entropy: the fp32 softmax of this rank's logits slice,
    /// turned into the gradient in place by the backward.
    VocabParallelCe {
        softmax: T,
        target_mask: T,
        masked_target: T,
        rows: u64,
    },
    /// The last chunk: SplitBackward concatenates the siblings' gradients and its own (and
    /// with `copy`, the reshape after it copies the result).
    SplitCat {
        parts: [Option<u32>; 2],
        shape: Shape,
        dtype: DType,
        name: Name,
        copy: bool,
    },
    /// `output.requires_grad_(True)` on a tensor with no grad_fn: its gradient is computed
    /// by the ops that use it, then dropped.
    Sink,
    /// SDPA (flash / efficient) on separate q, k, v, with native GQA.
    Sdpa(sdpa::SdpaSaved),
    /// Attention with materialised scores (HF eager, SDPA's math fallback).
    Scores(eager::EagerSaved),
    /// A bitsandbytes matmul on a frozen quantized weight (keeps the int8 path's input).
    QuantLinear(quant::QuantSaved),
    /// `x.clone()`: CloneBackward passes the gradient on as it is.
    Clone,
    /// Cross-entropy inside a compiled graph (loss.rs).
    CompiledCe(loss::CompiledCeSaved),
    /// A mixture-of-experts layer's router, gathers and grouped matmuls (moe.rs).
    Moe(moe::MoeSaved),
    /// One layer's share of the router's auxiliary loss (moe_aux.rs).
    MoeAux(moe_aux::AuxSaved),
}

impl Op {
    /// Input gradients, one per edge of the node, allocated in PyTorch's order.
    pub fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        match self {
            Op::Embedding {
                idx,
                weight,
                dtype,
                name,
            } => basic::embedding_backward(e, g, idx, (weight, dtype), name),
            Op::AddBroadcast { pos, name } => basic::add_broadcast_backward(e, g, pos, name),
            Op::Add { a, b, shape, name } => basic::add_backward(e, g, a, b, shape, name),
            Op::Dropout {
                mask,
                shape,
                dtype,
                name,
            } => basic::dropout_backward(e, g, mask, (shape, dtype), name),
            Op::LayerNorm {
                x,
                mean,
                rstd,
                bias,
                w_grad,
                c,
                name,
            } => layer_norm::backward(e, g, x, mean, rstd, (bias, w_grad), c, name),
            Op::Linear(s) => linear::backward(e, g, s),
            Op::ToCopy {
                from,
                shape,
                name,
                category,
            } => pointwise::to_copy_backward(e, g, (shape, from), name, category),
            Op::Activation { x, shape, name } => basic::activation_backward(e, g, x, shape, name),
            Op::Attention(a) => [Some(a.backward(e, g)), None, None],
            Op::LogSoftmax { out, shape, dtype } => {
                cross_entropy::log_softmax_backward(e, g, out, shape, dtype)
            }
            Op::NllLoss {
                input,
                target,
                total_weight,
                shape,
            } => cross_entropy::nll_backward(e, g, [input, target, total_weight], shape),
            Op::Checkpoint { f, x } => [Some(e.checkpoint_backward(f, x, g)), None, None],
            Op::ChunkedLoss(c) => loss::chunked_backward(e, g, c),
            Op::LigerLoss(s) => liger::backward(e, g, s),
            Op::Div => basic::div_backward(e, g),
            Op::RmsNorm(s) => rms_norm::backward(e, g, s),
            Op::Rope(s) => rotary::backward(e, g, s),
            Op::Mul(s) => pointwise::mul_backward(e, g, s),
            Op::Scale {
                s,
                shape,
                dtype,
                name,
            } => pointwise::scale_backward(e, g, s, (shape, dtype), name),
            Op::Pointwise { shape, dtype, name } => {
                pointwise::pointwise_backward(e, g, (shape, dtype), name)
            }
            // Its gradient was taken by the last chunk; one that arrives alone passes on.
            Op::SplitPart => [Some(g), None, None],
            Op::Unshard { unit } => {
                crate::sim::parallel::pre_backward(e, unit);
                [Some(g), None, None]
            }
            Op::VocabParallelCe {
                softmax,
                target_mask,
                masked_target,
                rows,
            } => tp::vocab_parallel_ce_backward(e, g, softmax, target_mask, masked_target, rows),
            Op::SplitCat {
                parts,
                shape,
                dtype,
                name,
                copy,
            } => [
                Some(pointwise::split_backward(
                    e,
                    g,
                    parts,
                    (shape, dtype),
                    name,
                    copy,
                )),
                None,
                None,
            ],
            Op::Sink => {
                e.release(g);
                [None; 3]
            }
            Op::Sdpa(s) => s.backward(e, g),
            Op::Scores(s) => eager::backward(e, g, s),
            Op::QuantLinear(s) => quant::backward(e, g, s),
            Op::Clone => [Some(g), None, None],
            Op::CompiledCe(s) => loss::compiled_backward(e, g, s),
            Op::Moe(s) => s.backward(e, g),
            Op::MoeAux(s) => s.backward(e, g),
        }
    }

    /// Free the saved tensors of a node that never received a gradient.
    pub fn release_saved(self, e: &mut Engine) {
        let saved: [Option<T>; 3] = match self {
            Op::Embedding { idx, .. } => [Some(idx), None, None],
            Op::Dropout { mask, .. } => [Some(mask), None, None],
            Op::LayerNorm { x, mean, rstd, .. } => [Some(x), mean, Some(rstd)],
            Op::Linear(s) => [s.x, s.w, None],
            Op::Activation { x, .. } => [Some(x), None, None],
            Op::Attention(a) => {
                a.release_saved(e);
                [None; 3]
            }
            Op::LogSoftmax { out, .. } => [Some(out), None, None],
            Op::NllLoss {
                input,
                target,
                total_weight,
                ..
            } => [Some(input), Some(target), Some(total_weight)],
            // An offloaded input has no GPU reference to let go of, only its host copy.
            Op::Checkpoint { x, .. } if e.offloads_checkpoint_inputs() => {
                let bytes = e.record(x).bytes;
                e.host_checkpoint(bytes, false);
                [None; 3]
            }
            Op::Checkpoint { x, .. } => [Some(x), None, None],
            Op::VocabParallelCe {
                softmax,
                target_mask,
                masked_target,
                ..
            } => [Some(softmax), Some(target_mask), Some(masked_target)],
            Op::ChunkedLoss(c) => [Some(c.x), Some(c.w), Some(c.target)],
            Op::LigerLoss(s) => [Some(s.grad_input), s.grad_weight, None],
            Op::RmsNorm(s) => {
                s.release_saved(e);
                [None; 3]
            }
            Op::Rope(s) => {
                s.release_saved(e);
                [None; 3]
            }
            Op::Sdpa(s) => {
                s.release_saved(e);
                [None; 3]
            }
            Op::Moe(s) => {
                s.release_saved(e);
                [None; 3]
            }
            Op::MoeAux(s) => {
                s.release_saved(e);
                [None; 3]
            }
            Op::Scores(s) => {
                s.release_saved(e);
                [None; 3]
            }
            Op::Mul(s) => [s.a, s.b, None],
            Op::Scale { s, .. } => [Some(s), None, None],
            Op::QuantLinear(s) => [s.x, None, None],
            Op::CompiledCe(s) => {
                for t in [s.stats[0], s.stats[1]] {
                    e.release(t);
                }
                [Some(s.logits), Some(s.target), None]
            }
            Op::AddBroadcast { .. }
            | Op::Add { .. }
            | Op::ToCopy { .. }
            | Op::Div
            | Op::Pointwise { .. }
            | Op::SplitPart
            | Op::Unshard { .. }
            | Op::SplitCat { .. }
            | Op::Clone
            | Op::Sink => [None; 3],
        };
        for t in saved.into_iter().flatten() {
            e.release(t);
        }
    }
}

/// Keep a reference for backward when autograd records the op.
pub(crate) fn save(e: &mut Engine, t: T) -> T {
    if e.grad_mode {
        e.retain(t);
    }
    t
}
