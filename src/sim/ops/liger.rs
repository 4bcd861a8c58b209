//! Liger-Kernel's fused linear cross-entropy (`loss = 'liger'`), as the Trainer's
//! `use_liger_kernel=True` and axolotl's `liger_fused_linear_cross_entropy` run it: the model's
//! forward is patched (`lce_forward`) to hand the last hidden states and `lm_head.weight` to
//! `LigerForCausalLMLoss` (labels padded and shifted as transformers does) and on to
//! `LigerFusedLinearCrossEntropyFunction` (liger_kernel/ops/fused_linear_cross_entropy.py,
//! `fused_linear_cross_entropy_forward`, read at commit 00eba63):
//!
//! ```python
//! inc_factor = cdiv(V, H); chunk_size = min(next_power_of_2(cdiv(BT, inc_factor)), BT)
//! grad_input = torch.zeros_like(_input)                     # (BT, H), kept for the backward
//! grad_weight = torch.zeros_like(weight) if weight.requires_grad else None   # (V, H), kept
//! loss_1d = torch.zeros(BT, dtype=torch.float32)
//! for each chunk:
//!     logits_chunk = _input_chunk @ weight.t()              # (chunk, V), autocast's dtype
//!     liger_cross_entropy_kernel(...)                       # the gradient, in place
//!     grad_input[chunk] = grad_logits_chunk @ weight        # (chunk, H) then copied in
//!     torch.addmm(grad_weight, grad_logits.t(), _input_chunk.to(bf16), out_dtype=fp32,
//!                 out=grad_weight)                          # no (V, H) temporary
//! ctx.save_for_backward(grad_input, grad_weight)
//! ```
//! The gradients are computed in the forward, so nothing (B·T, V) outlives a chunk, but the
//! lm_head's weight gradient is alive from the forward to the end of the backward. The backward
//! scales both in place (`element_mul_kernel`) and hands them on. Liger's other kernels (RMSNorm,
//! SwiGLU, RoPE), which the same flag patches in, are not modelled: their saved tensors are
//! fewer than eager PyTorch's, so the figures are an upper bound there.

use super::linear::cast;
use super::{Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// What the function saved: the gradients it computed in the forward.
#[derive(Debug, Clone, Copy)]
pub struct LigerSaved {
    pub grad_input: T,
    /// None for a frozen lm_head (LoRA).
    pub grad_weight: Option<T>,
}

/// Rows per chunk: the transient logits are bounded by about B·T × H elements.
fn chunk_rows(bt: u64, v: u64, h: u64) -> u64 {
    let inc_factor = v.div_ceil(h.max(1)).max(1);
    bt.div_ceil(inc_factor).next_power_of_two().min(bt).max(1)
}

/// The loss of `x` (B, T, H) through lm_head `weight`. The labels (padded and shifted by the
/// caller, who holds them) take no memory of the function's own.
pub fn fused_linear_cross_entropy(e: &mut Engine, x: V, weight: usize) -> V {
    let (v, h) = (
        e.params[weight].shape.dims()[0],
        e.params[weight].shape.dims()[1],
    );
    let x_shape = e.shape(x.t);
    let bt = x_shape.numel().unwrap_or(0) / h.max(1);
    let (x_dtype, w) = (e.dtype(x.t), e.param(weight));
    let w_dtype = e.dtype(w.t);
    let record = e.grad_mode;
    let input_grad = record && x.edge != Edge::None;
    // Function.forward runs without grad (nothing inside records), in autocast's state.
    e.grad_mode = false;
    let act = Category::Logits;
    let name = |what| Name::top("loss", what);
    // Allocated whether or not gradients are wanted; (B·T, H) as the (B, T, H) it flows to.
    let grad_input = e.alloc(name("liger.grad_input"), x_shape, x_dtype, act);
    let grad_weight = (input_grad && w.edge != Edge::None).then(|| {
        let shape = e.params[weight].shape;
        e.alloc(
            name("liger.grad_weight"),
            shape,
            w_dtype,
            Category::Gradients,
        )
    });
    let loss_1d = e.alloc(name("liger.loss_1d"), Shape::new(&[bt]), DType::F32, act);
    // `(target != ignore_index).sum().item()`
    let mask = e.alloc(
        name("liger.target_mask"),
        Shape::new(&[bt]),
        DType::Bool,
        act,
    );
    let count = e.alloc(name("liger.n_non_ignore"), Shape::scalar(), DType::I64, act);
    e.release(mask);
    e.release(count);
    // `_input_chunk @ weight.t()` under autocast: the weight's cast is autocast's cached one
    // (a leaf that requires grad), the input chunk's a temporary.
    let mm = e.autocast.unwrap_or(x_dtype);
    let wm = (w_dtype != mm).then(|| {
        let what = Name::top("lm_head", "weight_cast");
        cast(e, w, mm, Some(weight), what).t
    });
    let rows = chunk_rows(bt, v, h);
    let mut left = bt;
    while left > 0 {
        let n = rows.min(left);
        left -= n;
        chunk(
            e,
            [n, v, h],
            x_dtype,
            mm,
            [input_grad, grad_weight.is_some()],
        );
    }
    if let Some(wm) = wm {
        e.release(wm);
    }
    let loss = e.alloc(name("loss"), Shape::scalar(), DType::F32, act);
    e.release(loss_1d);
    e.grad_mode = record;
    let saved = LigerSaved {
        grad_input,
        grad_weight,
    };
    let edge = e.push_node(Op::LigerLoss(saved), [x.edge, w.edge, Edge::None]);
    if !record {
        // No graph: the function's context, and the gradients in it, go at once.
        e.release(grad_input);
        if let Some(w) = grad_weight {
            e.release(w);
        }
    }
    V { t: loss, edge }
}

/// One chunk of `n` rows: the logits (whose gradient the kernel writes in place); with
/// gradients, the input gradient's rows through a temporary and the weight gradient
/// accumulated by addmm into its buffer (its operand cast to the matmul dtype first).
fn chunk(e: &mut Engine, [n, v, h]: [u64; 3], x_dtype: DType, mm: DType, grads: [bool; 2]) {
    let act = Category::Logits;
    let name = |what| Name::top("lm_head", what);
    let rows = Shape::new(&[n, h]);
    let x_cast = (mm != x_dtype).then(|| e.alloc(name("input_chunk_cast"), rows, mm, act));
    let logits = e.alloc(name("logits_chunk"), Shape::new(&[n, v]), mm, act);
    e.matmul_workspace();
    if let Some(c) = x_cast {
        e.release(c);
    }
    let [input_grad, weight_grad] = grads;
    if input_grad {
        // grad_input[start:end] = grad_logits_chunk @ weight: the product, then copied in.
        let g = e.alloc(name("grad_input_chunk"), rows, mm, act);
        e.release(g);
    }
    if weight_grad && mm != x_dtype {
        // `_input_chunk.to(grad_logits.dtype)` for addmm's operands.
        let c = e.alloc(name("input_chunk_for_addmm"), rows, mm, act);
        e.release(c);
    }
    e.release(logits);
}

impl Backward for LigerSaved {
    /// `fused_linear_cross_entropy_backward`: the saved gradients scaled in place by grad_output,
    /// handed to the hidden states and the weight.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        e.release(g);
        [Some(self.grad_input), self.grad_weight, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.grad_input), self.grad_weight, None]
    }
}
