//! nanoGPT's manual attention (`flash = False`) inside a compiled graph (fusion.rs).
//!
//! `att = (q @ k.transpose(-2, -1)) * scale; att.masked_fill(bias == 0, -inf); softmax;
//! dropout; y = att @ v`. Inductor does not turn this into SDPA (its attention pattern
//! matcher does not match nanoGPT's masked_fill form, torch/_inductor/fx_passes/fuse_attention.py),
//! so both matmuls stay extern kernels, with everything between them fused:
//!
//! - the scaling, the mask and the softmax are one reduction kernel over the bmm's bf16 scores;
//!   its row max and sum are (B, nh, T, 1) fp32 buffers; the fp32 probabilities never exist —
//!   what the second bmm needs is their bf16 cast, written for it;
//! - q, k and v are strided views of the qkv projection; the bmms get contiguous copies.
//!
//! What the partition saves (checked against PyTorch 2.15's partition of nanoGPT's GPT,
//! fixtures/compile-proxy/tiny-bf16-noflash.json): the contiguous q, k, v, the bf16 scores,
//! the two row statistics and the bf16 probabilities — every operand a backward bmm reads, and
//! what the softmax backward needs to recompute the probabilities in registers (partitioners.py
//! bans recomputing the bmm outputs); a dropout mask as bool. The qkv buffer is not saved.

use super::attention::Attention;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::timeline::{Category, Shape};

/// The forward: y (B, T, nh, hs) contiguous for c_proj, and the local `att` (a fused value:
/// the caller releases it with the other locals).
pub(super) fn forward(e: &mut Engine, a: &mut Attention, dropout: f64) -> (T, T) {
    let (h, act) = (a.dtype, Category::Activations);
    let grad = e.grad_mode;
    a.compiled = true;
    let q = e.alloc(a.name("q"), a.bhtd(), h, act);
    let k = e.alloc(a.name("k"), a.bhtd(), h, act);
    let scores = e.alloc(a.name("scores"), a.scores(), h, act);
    e.matmul_workspace();
    let rows = Shape::new(&[a.b, a.nh, a.t, 1]);
    let stat = |e: &mut Engine, what| e.alloc(a.name(what), rows, DType::F32, act);
    let stats = [stat(e, "softmax.row_max"), stat(e, "softmax.row_sum")];
    let drop_mask = (dropout > 0.0 && e.training)
        .then(|| e.alloc(a.name("att_dropout.mask"), a.scores(), DType::Bool, act));
    // The probabilities in the matmul's dtype, written for att @ v.
    let att = e.alloc(a.name("att_cast"), a.scores(), h, act);
    let v = e.alloc(a.name("v"), a.bhtd(), h, act);
    let y = e.alloc(a.name("y"), a.bhtd(), h, act);
    let yt = e.alloc(a.name("y_contiguous"), a.bhtd(), h, act);
    e.release(y);
    if grad {
        a.q = Some(q);
        a.k = Some(k);
        a.v = Some(v);
        a.softmax = Some(scores);
        a.stats = [Some(stats[0]), Some(stats[1])];
        a.drop_mask = drop_mask;
        a.att = Some(att);
    } else {
        for t in [att, v, stats[1], stats[0], scores, k, q]
            .into_iter()
            .chain(drop_mask)
        {
            e.release(t);
        }
    }
    // The Python local `att`: the probabilities exist only inside kernels.
    let local = e.alloc_fused(a.name("att"), a.scores(), DType::F32, act, &[]);
    (yt, local)
}

/// The backward: (dq, dk, dv) as (B, nh, T, hs), which `Attention::backward` concatenates.
pub(super) fn backward(a: Attention, e: &mut Engine, g: T) -> (Option<T>, Option<T>, Option<T>) {
    let (h, act) = (a.dtype, Category::Activations);
    // y's gradient back through the transpose, contiguous for the bmms.
    let gy = e.alloc(a.name("y.grad"), a.bhtd(), h, act);
    e.release(g);
    // att @ v: v's gradient (att^T @ gy), then att's (gy @ v^T).
    let gv = e.alloc(a.name("v.grad"), a.bhtd(), h, act);
    let gatt = e.alloc(a.name("att.grad"), a.scores(), h, act);
    e.release(gy);
    for t in [a.att, a.v].into_iter().flatten() {
        e.release(t);
    }
    // Dropout, softmax (probabilities recomputed from the scores and row statistics), mask
    // and scaling backward: one fused kernel, whose output is the next bmms' operand.
    let gscores = e.alloc(a.name("scores.grad"), a.scores(), h, act);
    e.release(gatt);
    for t in [a.drop_mask, a.stats[0], a.stats[1], a.softmax]
        .into_iter()
        .flatten()
    {
        e.release(t);
    }
    // q @ k^T: q's gradient (gscores @ k), then k's (gscores^T @ q).
    let gq = e.alloc(a.name("q.grad"), a.bhtd(), h, act);
    let gk = e.alloc(a.name("k.grad"), a.bhtd(), h, act);
    e.release(gscores);
    for t in [a.k, a.q].into_iter().flatten() {
        e.release(t);
    }
    (Some(gq), Some(gk), Some(gv))
}
