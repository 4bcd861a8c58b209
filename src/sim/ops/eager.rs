//! Attention that materialises the (B, nh, T, T) scores, in the two forms a Hugging Face
//! decoder can run:
//!
//! - `Eager` — `attn_implementation="eager"` (`flash = False`), HF's `eager_attention_forward`:
//!   `repeat_kv` copies of k and v, `matmul(q, k.T) * scaling` (autocast casts q and k.T to
//!   bf16), `+ causal_mask` (the model's (B, 1, T, T) mask in the embeddings' dtype, so the sum
//!   is fp32 under autocast with fp32 weights), `softmax(dtype=float32).to(query.dtype)`,
//!   `matmul(attn, v)` (autocast casts the fp32 probabilities to bf16), then
//!   `transpose(1, 2).contiguous()`.
//! - `Math` — SDPA's math kernel, which PyTorch runs for fp32 inputs with `enable_gqa=True`
//!   (the efficient kernel has no GQA): `q * √scale`, `repeat_interleave` of k and v,
//!   `k.T * √scale`, `matmul`, the causal mask added in place, `_safe_softmax`, `matmul`; its
//!   contiguous (B, nh, T, hd) output is copied by HF's `transpose(1, 2).contiguous()`.
//!
//! Each is one backward node here; the backward replays its ops' gradients in autograd order.

use super::sdpa::Heads;
use super::{Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::sac::SacOp;
use crate::sim::timeline::{Category, Shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoresKind {
    Eager,
    Math,
}

#[derive(Debug, Clone, Copy)]
pub struct EagerSaved {
    kind: ScoresKind,
    h: Heads,
    /// Dtypes of q, k, v as they came in (their gradients go back in these).
    dq: DType,
    dk: DType,
    dv: DType,
    /// The matmuls' dtype (bf16 under autocast).
    mm: DType,
    /// Dtype of the scores that entered softmax.
    pre_softmax: DType,
    /// Dtype of the probabilities the second matmul was given before autocast's cast.
    att_dtype: DType,
    q: T,
    kt: T,
    softmax: T,
    att: T,
    v: T,
    /// Gemma 2's soft-capping: tanh's result (B, nh, T, T), kept by TanhBackward.
    tanh: Option<T>,
}

/// An autocast cast (a copy) unless `t` already has the matmul's dtype.
fn to_mm(e: &mut Engine, t: T, shape: Shape, mm: DType, h: &Heads, what: &'static str) -> T {
    if e.dtype(t) == mm {
        e.retain(t);
        t
    } else {
        e.alloc(h.name(what), shape, mm, Category::Activations)
    }
}

/// Attention over q (B, nh, T, hd) and k, v (B, nkv, T, hd); `mask` is the model's additive
/// causal mask (eager only). Returns the output, (B, T, nh·hd) contiguous.
pub fn scores_attention(
    e: &mut Engine,
    q: V,
    k: V,
    v: V,
    mask: Option<T>,
    kind: ScoresKind,
    h: Heads,
) -> V {
    scores_attention_capped(e, [q, k, v], mask, kind, h, false)
}

/// Gemma 2's `eager_attention_forward` (models/gemma2/modeling_gemma2.py): the eager
/// attention above with soft-capping between the scaling and the mask,
/// `attn_weights = attn_weights / softcap; torch.tanh(...); * softcap` — three more
/// (B, nh, T, T) tensors in the matmul's dtype, of which tanh's result stays saved until the
/// backward.
pub fn softcapped_eager_attention(
    e: &mut Engine,
    q: V,
    k: V,
    v: V,
    mask: Option<T>,
    h: Heads,
) -> V {
    scores_attention_capped(e, [q, k, v], mask, ScoresKind::Eager, h, true)
}

fn scores_attention_capped(
    e: &mut Engine,
    [q, k, v]: [V; 3],
    mask: Option<T>,
    kind: ScoresKind,
    h: Heads,
    softcap: bool,
) -> V {
    let act = Category::Activations;
    let record = e.grad_mode && [q.edge, k.edge, v.edge].iter().any(|x| *x != Edge::None);
    let (dq, dk, dv) = (e.dtype(q.t), e.dtype(k.t), e.dtype(v.t));
    let mm = match kind {
        ScoresKind::Eager => e.autocast.unwrap_or(dq),
        ScoresKind::Math => dq,
    };
    let full = h.bhtd(h.nh);
    let (qm, ktm, temps) = first_operands(e, [q.t, k.t], kind, &h, mm);
    let vx = repeat_kv(e, v.t, dv, &h, "v_repeat");
    // Both matmuls are bmm, which torchtitan's op policy keeps (sim::sac).
    let s = e.sac_output(SacOp::ComputeIntensive, |e| {
        e.alloc(h.name("scores"), h.scores(), mm, act)
    });
    e.matmul_workspace();
    let (softmax, tanh, pre_softmax) = scores_softmax(e, s, kind, &h, (mm, mask), softcap, record);
    // `.to(query.dtype)`: a copy only when q is not fp32.
    let att = if kind == ScoresKind::Eager && dq != e.dtype(softmax) {
        e.alloc(h.name("attn_weights"), h.scores(), dq, act)
    } else {
        e.retain(softmax);
        softmax
    };
    let att_dtype = e.dtype(att);
    let attm = to_mm(e, att, h.scores(), mm, &h, "attn_cast");
    let vm = to_mm(e, vx, full, mm, &h, "v_cast");
    let y = e.sac_output(SacOp::ComputeIntensive, |e| {
        e.alloc(h.name("attn_output"), full, mm, act)
    });
    let yt = e.alloc(h.name("attn_output_contiguous"), h.out(), mm, act);
    e.release(y);
    if record {
        // softmax's backward keeps its output.
        e.retain(softmax);
    }
    // Locals of the attention function go at its return (att is returned and discarded).
    for t in [att, vx, softmax].into_iter().chain(temps) {
        e.release(t);
    }
    if !record {
        for t in [qm, ktm, attm, vm] {
            e.release(t);
        }
        return V {
            t: yt,
            edge: Edge::None,
        };
    }
    let saved = EagerSaved {
        kind,
        h,
        dq,
        dk,
        dv,
        mm,
        pre_softmax,
        att_dtype,
        q: qm,
        kt: ktm,
        softmax,
        att: attm,
        v: vm,
        tanh,
    };
    let edge = e.push_node(Op::Scores(saved), [q.edge, k.edge, v.edge]);
    V { t: yt, edge }
}

/// `repeat_kv`: a copy at the full head count, unless there are as many key/value heads.
fn repeat_kv(e: &mut Engine, x: T, dt: DType, h: &Heads, what: &'static str) -> T {
    if h.nkv == h.nh {
        e.retain(x);
        x
    } else {
        e.alloc(h.name(what), h.bhtd(h.nh), dt, Category::Activations)
    }
}

/// q and kᵀ as the first matmul takes them, and the temporaries the function holds until it
/// returns (the repeated k; the math kernel's causal mask).
fn first_operands(
    e: &mut Engine,
    [q, k]: [T; 2],
    kind: ScoresKind,
    h: &Heads,
    mm: DType,
) -> (T, T, Vec<T>) {
    let act = Category::Activations;
    let (dq, dk) = (e.dtype(q), e.dtype(k));
    let full = h.bhtd(h.nh);
    let mut temps = Vec::new();
    let (qm, ktm, kx);
    match kind {
        ScoresKind::Eager => {
            kx = repeat_kv(e, k, dk, h, "k_repeat");
            qm = to_mm(e, q, full, mm, h, "q_cast");
            ktm = to_mm(e, kx, full, mm, h, "k_cast");
        }
        ScoresKind::Math => {
            qm = e.alloc(h.name("q_scaled"), full, dq, act);
            // The causal mask: ones(T, T).tril(), then where(~mask, -inf, 0) in q's dtype.
            let tt = Shape::new(&[h.t, h.t]);
            let ones = e.alloc(h.name("causal_ones"), tt, DType::Bool, act);
            let tril = e.alloc(h.name("causal_tril"), tt, DType::Bool, act);
            e.release(ones);
            let not = e.alloc(h.name("causal_not"), tt, DType::Bool, act);
            temps.push(e.alloc(h.name("causal_mask"), tt, dq, act));
            e.release(not);
            e.release(tril);
            kx = repeat_kv(e, k, dk, h, "k_repeat");
            ktm = e.alloc(h.name("k_scaled"), full, dk, act);
        }
    }
    temps.push(kx);
    (qm, ktm, temps)
}

/// The first matmul's scores `s` through eager's scaling, soft-capping and mask to softmax
/// (fp32 for eager, the matmul's dtype for the math kernel): (softmax, tanh's kept result,
/// the dtype that entered softmax).
fn scores_softmax(
    e: &mut Engine,
    mut s: T,
    kind: ScoresKind,
    h: &Heads,
    (mm, mask): (DType, Option<T>),
    softcap: bool,
    record: bool,
) -> (T, Option<T>, DType) {
    let act = Category::Activations;
    let mut tanh = None;
    let mut pre_softmax = mm;
    if kind == ScoresKind::Eager {
        // `* scaling`, then `+ causal_mask` (promoted to the mask's dtype).
        let sc = e.alloc(h.name("scores_scaled"), h.scores(), mm, act);
        e.release(s);
        s = sc;
        if softcap {
            (s, tanh) = softcap_scores(e, s, h, mm, record);
        }
        if let Some(m) = mask {
            pre_softmax = if e.dtype(m) == mm { mm } else { DType::F32 };
            let sm = e.alloc(h.name("scores_masked"), h.scores(), pre_softmax, act);
            e.release(s);
            s = sm;
        }
    }
    let soft_dtype = match kind {
        ScoresKind::Eager => DType::F32,
        ScoresKind::Math => mm,
    };
    let softmax = e.alloc(h.name("softmax"), h.scores(), soft_dtype, act);
    e.release(s);
    (softmax, tanh, pre_softmax)
}

/// `scores / cap`, `tanh`, `* cap` in the matmul's dtype (tanh is on none of autocast's
/// lists): returns the capped scores and, when autograd records, tanh's kept result.
fn softcap_scores(e: &mut Engine, s: T, h: &Heads, mm: DType, record: bool) -> (T, Option<T>) {
    let act = Category::Activations;
    let div = e.alloc(h.name("scores_div"), h.scores(), mm, act);
    e.release(s);
    let th = e.alloc(h.name("scores_tanh"), h.scores(), mm, act);
    e.release(div);
    let capped = e.alloc(h.name("scores_capped"), h.scores(), mm, act);
    if record {
        (capped, Some(th))
    } else {
        e.release(th);
        (capped, None)
    }
}

impl Backward for EagerSaved {
    /// Gradients of q, k, v, replaying the ops' backward last to first.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let act = Category::Activations;
        let h = self.h;
        let full = h.bhtd(h.nh);
        let sc = h.scores();
        // A gradient handed on in another dtype or shape: a new tensor, the old one freed.
        let convert = |e: &mut Engine, t: T, shape: Shape, dt: DType, what| {
            let n = e.alloc(h.name(what), shape, dt, act);
            e.release(t);
            n
        };
        // matmul(att, v): the probabilities' gradient, then v's.
        let mut ga = e.alloc(h.name("attn.grad"), sc, self.mm, act);
        e.matmul_workspace();
        let mut gv = e.alloc(h.name("v.grad"), full, self.mm, act);
        e.release(g);
        e.release(self.att);
        e.release(self.v);
        if self.dv != self.mm {
            gv = convert(e, gv, full, self.dv, "v.grad");
        }
        if h.nkv != h.nh {
            gv = convert(e, gv, h.bhtd(h.nkv), self.dv, "v.grad");
        }
        if self.att_dtype != self.mm {
            ga = convert(e, ga, sc, self.att_dtype, "attn.grad");
        }
        if self.att_dtype != e.dtype(self.softmax) {
            ga = convert(e, ga, sc, e.dtype(self.softmax), "attn.grad");
        }
        // softmax backward (in the dtype of its input), then the mask add and the scaling.
        let gs = e.alloc(h.name("softmax.grad"), sc, self.pre_softmax, act);
        e.release(ga);
        e.release(self.softmax);
        let mut gs = gs;
        if self.kind == ScoresKind::Eager {
            if self.pre_softmax != self.mm {
                gs = convert(e, gs, sc, self.mm, "scores.grad");
            }
            if let Some(th) = self.tanh {
                // `* softcap`'s MulBackward, TanhBackward (then its saved result goes), `/ softcap`.
                gs = convert(e, gs, sc, self.mm, "scores_capped.grad");
                gs = convert(e, gs, sc, self.mm, "scores_tanh.grad");
                e.release(th);
                gs = convert(e, gs, sc, self.mm, "scores_div.grad");
            }
            gs = convert(e, gs, sc, self.mm, "scores.grad");
        }
        // matmul(q, k.T): q's gradient, then k.T's.
        let mut gq = e.alloc(h.name("q.grad"), full, self.mm, act);
        let mut gk = e.alloc(h.name("k.grad"), full, self.mm, act);
        e.release(gs);
        e.release(self.q);
        e.release(self.kt);
        match self.kind {
            ScoresKind::Eager => {
                // Autocast's casts back (k first: its nodes were created later), repeat_kv's sum.
                if self.dk != self.mm {
                    gk = convert(e, gk, full, self.dk, "k.grad");
                }
                if h.nkv != h.nh {
                    gk = convert(e, gk, h.bhtd(h.nkv), self.dk, "k.grad");
                }
                if self.dq != self.mm {
                    gq = convert(e, gq, full, self.dq, "q.grad");
                }
            }
            ScoresKind::Math => {
                // k.T * √scale, repeat_interleave's sum, then q * √scale.
                gk = convert(e, gk, full, self.dk, "k.grad");
                if h.nkv != h.nh {
                    gk = convert(e, gk, h.bhtd(h.nkv), self.dk, "k.grad");
                }
                gq = convert(e, gq, full, self.dq, "q.grad");
            }
        }
        [Some(gq), Some(gk), Some(gv)]
    }

    fn release_saved(self, e: &mut Engine) {
        for t in [self.q, self.kt, self.softmax, self.att, self.v] {
            e.release(t);
        }
        if let Some(t) = self.tanh {
            e.release(t);
        }
    }
}
