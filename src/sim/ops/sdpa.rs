//! `F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=...)` on separate q, k, v
//! tensors, as Hugging Face's sdpa attention calls it (transformers'
//! `integrations/sdpa_attention.py`).
//!
//! Grouped-query attention: with PyTorch ≥ 2.5 and no attention mask (packed or unpadded
//! batches, where HF skips the causal mask and passes `is_causal=True`), HF does not expand k and
//! v with `repeat_kv` but passes `enable_gqa=True`. PyTorch's flash kernel takes k and v with
//! fewer heads as they are; its backward allocates dk and dv at the full head count
//! (`dk_expanded`, `dv_expanded`) and sums them over each group. The memory-efficient kernel
//! does not support GQA, so fp32 GQA falls back to the math kernel (see `eager.rs`).
//!
//! Autocast puts SDPA on its lower-precision list: fp32 inputs (the rotated q and k, promoted
//! by fp32 cos/sin) are cast to bf16 first, and the kernel keeps the casts.

use super::linear::cast;
use super::{Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::sac::SacOp;
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpaKernel {
    /// bf16 / fp16: flash-attention 2 (native GQA).
    Flash,
    /// fp32, or half on a card older than sm80, with as many k/v heads as q heads.
    Efficient,
}

/// Head counts and sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub b: u64,
    pub t: u64,
    /// Query heads.
    pub nh: u64,
    /// Key/value heads (== nh without GQA).
    pub nkv: u64,
    pub hd: u64,
    pub layer: Option<u32>,
    /// The attention module's name ("self_attn", GPT-NeoX's "attention").
    pub module: &'static str,
}

impl Heads {
    pub fn name(&self, what: &'static str) -> Name {
        Name::at(self.layer, self.module, what)
    }

    /// (B, heads, T, hd).
    pub fn bhtd(&self, heads: u64) -> Shape {
        Shape::new(&[self.b, heads, self.t, self.hd])
    }

    /// The output as o_proj sees it: (B, T, nh·hd).
    pub fn out(&self) -> Shape {
        Shape::new(&[self.b, self.t, self.nh * self.hd])
    }

    pub fn scores(&self) -> Shape {
        Shape::new(&[self.b, self.nh, self.t, self.t])
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SdpaSaved {
    kernel: SdpaKernel,
    h: Heads,
    dtype: DType,
    q: T,
    k: T,
    v: T,
    out: T,
    lse: Option<T>,
    rng: [Option<T>; 2],
    /// The additive mask of `sdpa_masked`.
    bias: Option<T>,
}

/// flash-attn 2's backward scratch, in fp32: softmax_d (B, nh, T₁₂₈) and dq_accum
/// (B, T₁₂₈, nh, hd₃₂, or hd₆₄ above 128), in that order; the caller frees them.
pub(super) fn flash_backward_scratch(
    e: &mut Engine,
    [b, nh, t, hd]: [u64; 4],
    name: impl Fn(&'static str) -> Name,
) -> [T; 2] {
    let t128 = round_up(t, 128);
    let hd_r = round_up(hd, if hd <= 128 { 32 } else { 64 });
    let mut scratch = |what, dims: &[u64]| {
        e.alloc(
            name(what),
            Shape::new(dims),
            DType::F32,
            Category::Workspace,
        )
    };
    let softmax_d = scratch("softmax_d", &[b, nh, t128]);
    let dq_accum = scratch("dq_accum", &[b, t128, nh, hd_r]);
    [softmax_d, dq_accum]
}

/// `x` rounded up to a multiple of `m` (the kernels' tile sizes).
pub(super) fn round_up(x: u64, m: u64) -> u64 {
    x.div_ceil(m) * m
}

/// The kernel PyTorch's dispatcher picks for these inputs on a card that can (`flash`) or
/// cannot run the flash kernel (see `Runtime::flash_attention`), or None for the math fallback.
pub fn kernel_for(dtype: DType, h: &Heads, flash: bool) -> Option<SdpaKernel> {
    sdpa_kernel(dtype.is_half(), h.nkv != h.nh, flash)
}

/// SDPA's choice (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp `select_sdp_backend`):
/// flash for half inputs on a card that has it (sm80+), else the memory-efficient kernel,
/// which does not broadcast fewer key/value heads (grouped-query attention): then math (None).
pub fn sdpa_kernel(half: bool, gqa: bool, flash_card: bool) -> Option<SdpaKernel> {
    if half && flash_card {
        Some(SdpaKernel::Flash)
    } else if !gqa {
        Some(SdpaKernel::Efficient)
    } else {
        None
    }
}

/// Autocast's casts of SDPA's inputs (the lower-precision list): a copy unless already half.
pub(super) fn autocast_inputs(e: &mut Engine, q: V, k: V, v: V, h: &Heads) -> [V; 3] {
    let names = [h.name("q_cast"), h.name("k_cast"), h.name("v_cast")];
    let mut out = [q, k, v];
    for (x, name) in out.iter_mut().zip(names) {
        match e.autocast {
            Some(half) if e.dtype(x.t) != half => *x = cast(e, *x, half, None, name),
            _ => e.retain(x.t),
        }
    }
    out
}

/// SDPA with the flash or memory-efficient kernel; returns the output, (B, T, nh·hd) in
/// memory. The caller's `transpose(1, 2).contiguous()` and `reshape` are views of it.
pub fn sdpa(e: &mut Engine, q: V, k: V, v: V, kernel: SdpaKernel, h: Heads) -> V {
    let qkv = autocast_inputs(e, q, k, v, &h);
    run_kernel(e, qkv, kernel, h, None)
}

/// SDPA given an explicit boolean mask (the model's, read here and not kept) and k, v at the
/// full head count (a
/// mask rules out `enable_gqa` in transformers' sdpa_attention.py, which then `repeat_kv`s):
/// the flash kernel takes no mask, so PyTorch runs the memory-efficient one
/// (sdp_utils.cpp `check_for_attn_mask`). `scaled_dot_product_attention` first turns the
/// boolean mask into an additive one in the query's dtype (attention.cpp
/// `convert_boolean_attn_mask`: `where(mask.logical_not(), -inf, 0)`, a (B, 1, T, T)
/// temporary and the result), which the kernel keeps for its backward; the mem-efficient
/// path pads its last dimension to a multiple of 16 (`preprocess_mask`) with a copy when T
/// is not one.
pub fn sdpa_masked(e: &mut Engine, q: V, k: V, v: V, h: Heads) -> V {
    let qkv = autocast_inputs(e, q, k, v, &h);
    let dtype = e.dtype(qkv[0].t);
    let act = Category::Activations;
    let shape = Shape::new(&[h.b, 1, h.t, h.t]);
    let not = e.alloc(h.name("attn_mask_not"), shape, DType::Bool, act);
    let mut bias = e.alloc(h.name("attn_bias"), shape, dtype, act);
    e.release(not);
    if !h.t.is_multiple_of(16) {
        let padded = Shape::new(&[h.b, 1, h.t, round_up(h.t, 16)]);
        let p = e.alloc(h.name("attn_bias_padded"), padded, dtype, act);
        e.release(bias);
        bias = p;
    }
    run_kernel(e, qkv, SdpaKernel::Efficient, h, Some(bias))
}

/// What the kernel writes: its output, the fp32 logsumexp (the memory-efficient kernel pads it
/// to 32 rows and skips it when no input needs a gradient; a non-reentrant checkpoint's forward
/// runs with grad on, so it computes it there too) and flash's Philox seed and offset as device
/// tensors (uint64[2] and a uint64 scalar).
pub(super) fn kernel_outputs(
    e: &mut Engine,
    flash: bool,
    (b, nh, t): (u64, u64, u64),
    (out_shape, dtype): (Shape, DType),
    name: impl Fn(&'static str) -> Name,
) -> [Option<T>; 4] {
    let out = e.alloc(name("sdpa.out"), out_shape, dtype, Category::Activations);
    let lse_rows = match flash {
        true => t,
        false if e.grad_mode || e.sac_forward() => round_up(t, 32),
        false => 0,
    };
    let lse = (lse_rows > 0).then(|| {
        let shape = Shape::new(&[b, nh, lse_rows]);
        e.alloc(
            name("sdpa.logsumexp"),
            shape,
            DType::F32,
            Category::Activations,
        )
    });
    let [rng_state, rng_offset] = match flash {
        true => [
            Some(e.alloc(
                name("sdpa.rng_state"),
                Shape::new(&[2]),
                DType::U64,
                Category::Other,
            )),
            Some(e.alloc(
                name("sdpa.rng_offset"),
                Shape::scalar(),
                DType::U64,
                Category::Other,
            )),
        ],
        false => [None, None],
    };
    [Some(out), lse, rng_state, rng_offset]
}

/// The kernel on q, k, v already in its dtype; `bias` (an additive mask) is kept with them.
fn run_kernel(
    e: &mut Engine,
    [q, k, v]: [V; 3],
    kernel: SdpaKernel,
    h: Heads,
    bias: Option<T>,
) -> V {
    let dtype = e.dtype(q.t);
    let training = e.grad_mode;
    // The kernel's outputs; torchtitan's op policy keeps them all (sim::sac).
    let [out, lse, rng_state, rng_offset] = e.sac_outputs(SacOp::ComputeIntensive, |e| {
        let flash = kernel == SdpaKernel::Flash;
        kernel_outputs(e, flash, (h.b, h.nh, h.t), (h.out(), dtype), |w| h.name(w))
    });
    let out = out.expect("SDPA has an output");
    let rng = [rng_state, rng_offset];
    let record = training && [q.edge, k.edge, v.edge].iter().any(|e| *e != Edge::None);
    if !record {
        for t in [rng[1], rng[0], lse, bias].into_iter().flatten() {
            e.release(t);
        }
        for x in [q, k, v] {
            e.release(x.t);
        }
        return V {
            t: out,
            edge: Edge::None,
        };
    }
    // The kernel keeps q, k, v (its references replace the casts' temporaries), the output,
    // logsumexp and the rng state.
    e.retain(out);
    let saved = SdpaSaved {
        kernel,
        h,
        dtype,
        q: q.t,
        k: k.t,
        v: v.t,
        out,
        lse,
        rng,
        bias,
    };
    let edge = e.push_node(Op::Sdpa(saved), [q.edge, k.edge, v.edge]);
    V { t: out, edge }
}

impl Backward for SdpaSaved {
    fn release_saved(self, e: &mut Engine) {
        let all = [
            Some(self.q),
            Some(self.k),
            Some(self.v),
            Some(self.out),
            self.lse,
            self.rng[0],
            self.rng[1],
            self.bias,
        ];
        for t in all.into_iter().flatten() {
            e.release(t);
        }
    }

    /// dq, dk, dv (each in the layout the kernel writes, then seen through transposes).
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let h = self.h;
        let act = Category::Activations;
        let mut scratch = Vec::new();
        if self.kernel == SdpaKernel::Flash {
            scratch.extend(flash_backward_scratch(e, [h.b, h.nh, h.t, h.hd], |w| {
                h.name(w)
            }));
        }
        let dq = e.alloc(h.name("q.grad"), h.bhtd(h.nh), self.dtype, act);
        let dk = e.alloc(h.name("k.grad"), h.bhtd(h.nkv), self.dtype, act);
        let dv = e.alloc(h.name("v.grad"), h.bhtd(h.nkv), self.dtype, act);
        if h.nkv != h.nh {
            // MQA / GQA: gradients at the full head count, then summed over each group.
            let dk_e = e.alloc(h.name("k.grad_expanded"), h.bhtd(h.nh), self.dtype, act);
            let dv_e = e.alloc(h.name("v.grad_expanded"), h.bhtd(h.nh), self.dtype, act);
            scratch.push(dk_e);
            scratch.push(dv_e);
        }
        for s in scratch.into_iter().rev() {
            e.release(s);
        }
        e.release(g);
        self.release_saved(e);
        [Some(dq), Some(dk), Some(dv)]
    }
}
