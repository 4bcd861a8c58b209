//! torch.compile's rules, as the ops consult them (`Engine::compiled()`).
//!
//! A compiled nanoGPT step is two graphs AOTAutograd traced from the same ops the eager
//! simulator runs, and inductor's code for each:
//!
//! - **Fusion** (torch/_inductor/scheduler.py, `Scheduler.fuse_nodes`; ir.py `Pointwise`):
//!   pointwise ops (casts, GELU, the layer norm's normalisation, dropout's multiply, the loss's
//!   log-softmax) are not kernels of their own but code inlined into the kernel that consumes
//!   them. Such a value is `Residency::Fused`: no buffer; it keeps its inputs alive until its
//!   consumer has run. A matmul or SDPA (an extern kernel) needs real operands, so a fused
//!   input is written into a buffer for that kernel and freed after it (`Engine::materialise`;
//!   the wrapper's `empty_strided` + `del buf` in codegen/wrapper.py).
//! - **Partition** (torch/_functorch/partitioners.py, `min_cut_rematerialization_partition`):
//!   the backward gets the values the min-cut saves; a fused value it needs is recomputed from
//!   saved ones inside the backward's kernels, and a matmul operand is recomputed into a
//!   buffer right before the matmul (an `Operand` born in the backward).
//! - **Autocast** is traced into the graph: a weight's bf16 copy is a `convert_element_type`
//!   node like any other cast, so there is no autocast cache holding every copy through the
//!   forward; parameters are free to save (`treat_parameters_as_free_to_save` in
//!   torch/_functorch/config.py), so the copy is recomputed for the backward's matmul.
//!
//! Under eager PyTorch every helper here allocates, exactly as before.

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

/// A matmul's operand that the backward uses: materialised for the kernel, released after.
pub(crate) fn with_operand(e: &mut Engine, t: Option<T>) -> Option<T> {
    t.map(|t| e.materialise(t))
}
