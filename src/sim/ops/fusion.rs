//! torch.compile's rules, as the ops consult them (`Engine::compiled()`).
//!
//! A compiled nanoGPT step is the graphs AOTAutograd traces from the same ops the eager
//! simulator runs, and inductor's code for each. What they keep and allocate was read from
//! PyTorch's source and checked against PyTorch itself (scripts/compile-truth: the partition of
//! the real joint graph, and the CUDA wrapper inductor generates for it; fixtures/compile-proxy):
//!
//! - **Fusion** (torch/_inductor/scheduler.py `Scheduler.fuse_nodes`, ir.py `Pointwise`):
//!   casts, GELU, the layer norm's affine output, dropout's multiply and the loss's
//!   log-softmax are not kernels of their own but code inlined into their consumer. Such a
//!   value is `Residency::Fused`: no buffer; it keeps its inputs alive until consumed. An
//!   extern kernel (a matmul) needs real operands: a fused input is written into a buffer for
//!   it (`Engine::materialise`, the wrapper's `empty_strided` … `del buf`).
//! - **Partition** (torch/_functorch/partitioners.py `min_cut_rematerialization_partition`):
//!   a value the backward consumes in a non-fusible op (a matmul, the flash backward) would
//!   have to be materialised again to be recomputed, so it is saved (`should_ban_recomputation`
//!   with `ban_recompute_materialized_backward`): the matmul operands — the bf16 weight copies
//!   and the bf16 inputs, GELU's output included — are saved as in eager autograd. The layer
//!   norm saves its normalised input x̂ and rstd, not x and mean; the loss saves only its row
//!   statistics (loss.rs); dropout masks are saved as bool (random ops are not recomputed).
//! - **Graph outputs that require grad** get a gradient even when the user never uses them:
//!   AOTAutograd's autograd.Function materialises the undefined gradient of `logits` as zeros
//!   at the start of the backward (torch/csrc/autograd/python_function.cpp, `materialize_grads`).
//! - **Inference graphs** (estimate_loss under no_grad) save nothing: every fused chain's
//!   inputs die as soon as the kernel that consumed them has run.

use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::timeline::{Category, Name, Shape};

/// The output of a pointwise op: a fused value under compile, a buffer in eager mode.
pub(crate) fn pointwise_out(
    e: &mut Engine,
    name: Name,
    shape: Shape,
    dtype: DType,
    category: Category,
    inputs: &[T],
) -> T {
    if e.compiled() {
        e.alloc_fused(name, shape, dtype, category, inputs)
    } else {
        e.alloc(name, shape, dtype, category)
    }
}
