//! The ops a transformer is made of. Each forward allocates its outputs in the dtype the
//! runtime's cast policy gives, saves what its backward needs (one reference each), and
//! records a backward node; each backward allocates its input gradients in PyTorch's order
//! and then releases the gradient it got and its saved tensors.
//!
//! What an op saved is a struct in the op's own module, and its backward is that struct's
//! `Backward` impl beside the forward; `Op` only lists them.

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
mod split;
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
pub use linear::{linear, lm_head};
pub use loss::{chunked_cross_entropy, CHUNK_ROWS};
pub use pointwise::{
    clone, copy_reshaped, heads_view, mul, mul_as, mul_scalar, promote, repeat_kv, requires_grad,
    scale, shifted_copy, sigmoid, silu, silu_as, tanh, to_dtype,
};
pub use rms_norm::{rms_norm, rms_norm_as, RmsStyle};
pub use rotary::{rope, rotary_tables, rotary_tables_of};
pub use sdpa::{kernel_for, sdpa, sdpa_kernel, sdpa_masked, Heads, SdpaKernel};
pub use split::{split2, split3};
pub use tp::{vocab_parallel_cross_entropy, vocab_parallel_embedding};

use super::engine::{Engine, T};

/// What an op's forward left for autograd: the tensors (and shapes, dtypes, names) its
/// backward needs, and that backward. Each op implements it beside its forward.
pub(crate) trait Backward: Copy {
    /// Input gradients, one per edge of the node, allocated in PyTorch's order; the gradient
    /// received and the saved tensors are let go of.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3];

    /// The saved tensors that `release_saved` lets go of, in that order.
    fn saved(&self) -> [Option<T>; 3] {
        [None; 3]
    }

    /// Free the saved tensors of a node that never received a gradient.
    fn release_saved(self, e: &mut Engine) {
        for t in self.saved().into_iter().flatten() {
            e.release(t);
        }
    }
}

/// Declares `Op`, one tuple variant per op holding what it saved, and its two dispatches
/// from that one list.
macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident($saved:ty),)*) => {
        /// A backward node's op and what it saved.
        #[derive(Debug, Clone, Copy)]
        pub enum Op {
            $($(#[$doc])* $variant($saved),)*
        }

        impl Op {
            /// Input gradients, one per edge of the node, allocated in PyTorch's order.
            pub fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
                match self {
                    $(Op::$variant(s) => Backward::backward(s, e, g),)*
                }
            }

            /// Free the saved tensors of a node that never received a gradient.
            pub fn release_saved(self, e: &mut Engine) {
                match self {
                    $(Op::$variant(s) => Backward::release_saved(s, e),)*
                }
            }
        }
    };
}

ops! {
    Embedding(basic::EmbeddingSaved),
    AddBroadcast(basic::AddBroadcastSaved),
    Add(basic::AddSaved),
    Dropout(basic::DropoutSaved),
    LayerNorm(layer_norm::LayerNormSaved),
    Linear(linear::LinearSaved),
    /// Autocast's `_to_copy`: the backward casts the gradient back.
    ToCopy(pointwise::ToCopySaved),
    /// A pointwise activation that keeps its input (GELU, SiLU) or its result (tanh, sigmoid).
    Activation(basic::ActivationSaved),
    Attention(Attention),
    LogSoftmax(cross_entropy::LogSoftmaxSaved),
    NllLoss(cross_entropy::NllSaved),
    Div(basic::DivSaved),
    /// A checkpointed block: recompute it on the saved input in the backward.
    Checkpoint(crate::sim::autograd::CheckpointSaved),
    /// Cross-entropy over chunks of rows, each chunk recomputed in the backward.
    ChunkedLoss(loss::ChunkedSaved),
    /// Liger's fused linear cross-entropy: the gradients it computed in its forward.
    LigerLoss(liger::LigerSaved),
    // --- the Hugging Face decoders' ops ---
    RmsNorm(rms_norm::RmsSaved),
    Rope(rotary::RopeSaved),
    Mul(pointwise::MulSaved),
    /// `x * s` for a 0-dim `s` without grad (Gemma's embedding scale).
    Scale(pointwise::ScaleSaved),
    /// A node that keeps nothing and whose backward allocates one gradient shaped like its
    /// input: a view whose backward `reshape` copies, `x * python_float`.
    Pointwise(pointwise::PointwiseSaved),
    /// A chunk of a split whose gradient its last sibling collects.
    SplitPart(split::SplitPartSaved),
    /// The output of an FSDP unit: its backward is the unit's pre-backward hook.
    Unshard(crate::sim::parallel::UnshardSaved),
    /// Megatron's vocab-parallel cross-entropy (tp.rs).
    VocabParallelCe(tp::VocabParallelCeSaved),
    /// The last chunk of a split: SplitBackward.
    SplitCat(split::SplitCatSaved),
    /// `output.requires_grad_(True)` on a tensor with no grad_fn.
    Sink(pointwise::SinkSaved),
    /// SDPA (flash / efficient) on separate q, k, v, with native GQA.
    Sdpa(sdpa::SdpaSaved),
    /// Attention with materialised scores (HF eager, SDPA's math fallback).
    Scores(eager::EagerSaved),
    /// A bitsandbytes matmul on a frozen quantized weight (keeps the int8 path's input).
    QuantLinear(quant::QuantSaved),
    /// `x.clone()`: CloneBackward passes the gradient on as it is.
    Clone(pointwise::CloneSaved),
    /// Cross-entropy inside a compiled graph (loss.rs).
    CompiledCe(loss::CompiledCeSaved),
    /// A mixture-of-experts layer's router, gathers and grouped matmuls (moe.rs).
    Moe(moe::MoeSaved),
    /// One layer's share of the router's auxiliary loss (moe_aux.rs).
    MoeAux(moe_aux::AuxSaved),
}

/// Keep a reference for backward when autograd records the op.
pub(crate) fn save(e: &mut Engine, t: T) -> T {
    if e.grad_mode {
        e.retain(t);
    }
    t
}
