//! Causal self-attention from the fused qkv projection, as nanoGPT calls it.
//!
//! Three kernels, chosen the way PyTorch's SDPA dispatcher (or `flash = False`) chooses:
//! - `Flash` (bf16/fp16): keeps its output and the fp32 logsumexp (B, nh, T); its backward
//!   allocates fp32 scratch for dq accumulation and softmax_d, rounded to its tile sizes.
//! - `Efficient` (fp32 with SDPA): keeps output and logsumexp padded to 32 rows.
//! - `Manual` (nanoGPT's flash = False path): T x T scores, masked_fill, softmax (fp32 under
//!   autocast), dropout on the scores, contiguous copies for the batched matmuls.
//!
//! q, k, v are views of the qkv projection, so any kernel that saves them keeps it alive; the
//! backward ends with `cat` of dq, dk, dv (SplitBackward).

use super::sdpa::flash_backward_scratch;
use super::{save, Backward};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::sac::SacOp;
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKind {
    Flash,
    Efficient,
    Manual,
}

/// What an attention call saved for backward.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    pub(super) kind: AttnKind,
    pub(super) b: u64,
    pub(super) t: u64,
    pub(super) nh: u64,
    pub(super) hs: u64,
    pub(super) dtype: DType,
    pub(super) layer: Option<u32>,
    /// Flash / efficient: qkv (through the q, k, v views), output, logsumexp, rng state.
    pub(super) qkv: Option<T>,
    pub(super) out: Option<T>,
    pub(super) lse: Option<T>,
    pub(super) rng: [Option<T>; 2],
    /// Manual path.
    pub(super) q: Option<T>,
    pub(super) k: Option<T>,
    pub(super) mask: Option<T>,
    pub(super) softmax: Option<T>,
    pub(super) drop_mask: Option<T>,
    /// The probabilities as the second matmul took them (bf16 cast, dropout output, or softmax).
    pub(super) att: Option<T>,
    pub(super) v: Option<T>,
    pub(super) softmax_input_cast: bool,
    /// Compiled manual attention (attention_compiled.rs): the softmax's row max and sum.
    pub(super) stats: [Option<T>; 2],
    pub(super) compiled: bool,
}

impl Attention {
    pub(super) fn name(&self, what: &'static str) -> Name {
        Name::at(self.layer, "attn", what)
    }

    pub(super) fn bhtd(&self) -> Shape {
        Shape::new(&[self.b, self.nh, self.t, self.hs])
    }

    pub(super) fn scores(&self) -> Shape {
        Shape::new(&[self.b, self.nh, self.t, self.t])
    }

    fn sdpa_backward(self, e: &mut Engine, g: T) -> (Option<T>, Option<T>, Option<T>) {
        let mut scratch = Vec::new();
        if self.kind == AttnKind::Flash {
            let dims = [self.b, self.nh, self.t, self.hs];
            scratch.extend(flash_backward_scratch(e, dims, |w| self.name(w)));
        }
        let grads = if self.kind == AttnKind::Flash {
            let dq = e.alloc(
                self.name("q.grad"),
                self.bhtd(),
                self.dtype,
                Category::Activations,
            );
            let dk = e.alloc(
                self.name("k.grad"),
                self.bhtd(),
                self.dtype,
                Category::Activations,
            );
            let dv = e.alloc(
                self.name("v.grad"),
                self.bhtd(),
                self.dtype,
                Category::Activations,
            );
            (Some(dq), Some(dk), Some(dv))
        } else {
            // The efficient kernel writes dq, dk, dv into one (B, T, 3, nh, hs) buffer when
            // q, k, v are views of one projection, as nanoGPT's are.
            let chunk = e.alloc(
                self.name("qkv_chunk.grad"),
                Shape::new(&[self.b, self.t, 3, self.nh * self.hs]),
                self.dtype,
                Category::Activations,
            );
            (Some(chunk), None, None)
        };
        for s in scratch {
            e.release(s);
        }
        e.release(g);
        self.release_saved(e);
        grads
    }

    fn manual_backward(self, e: &mut Engine, g: T) -> (Option<T>, Option<T>, Option<T>) {
        let h = self.dtype;
        let act = Category::Activations;
        // y.transpose(1, 2).contiguous() backward: the gradient made contiguous for bmm.
        let gy = e.alloc(self.name("y.grad"), self.bhtd(), h, act);
        e.release(g);
        // att @ v: mat2 (v) gradient first, then att's.
        let gv = e.alloc(self.name("v.grad"), self.bhtd(), h, act);
        let mut ga = e.alloc(self.name("att.grad"), self.scores(), h, act);
        e.release(gy);
        for t in [self.att, self.v].into_iter().flatten() {
            e.release(t);
        }
        if self.att_was_cast() {
            let g32 = e.alloc(self.name("att.grad"), self.scores(), DType::F32, act);
            e.release(ga);
            ga = g32;
        }
        // Softmax and the dropout on its output run in fp32 under autocast.
        let sdt = if self.softmax_input_cast {
            DType::F32
        } else {
            h
        };
        if let Some(m) = self.drop_mask {
            let gd = e.alloc(self.name("att_dropout.grad"), self.scores(), sdt, act);
            e.release(ga);
            e.release(m);
            ga = gd;
        }
        let gs = e.alloc(self.name("softmax.grad"), self.scores(), sdt, act);
        e.release(ga);
        if let Some(s) = self.softmax {
            e.release(s);
        }
        let mut gm = gs;
        if self.softmax_input_cast {
            gm = e.alloc(self.name("scores.grad"), self.scores(), h, act);
            e.release(gs);
        }
        let gf = e.alloc(self.name("masked.grad"), self.scores(), h, act);
        e.release(gm);
        if let Some(m) = self.mask {
            e.release(m);
        }
        let gsc = e.alloc(self.name("scale.grad"), self.scores(), h, act);
        e.release(gf);
        let gk = e.alloc(self.name("k.grad"), self.bhtd(), h, act);
        let gq = e.alloc(self.name("q.grad"), self.bhtd(), h, act);
        e.release(gsc);
        for t in [self.k, self.q].into_iter().flatten() {
            e.release(t);
        }
        // Back through the transposes to (B, T, nh, hs): v's and q's gradients need copies.
        let gv_c = e.alloc(self.name("v.grad"), self.bhtd(), h, act);
        e.release(gv);
        let gq_c = e.alloc(self.name("q.grad"), self.bhtd(), h, act);
        e.release(gq);
        (Some(gq_c), Some(gk), Some(gv_c))
    }

    fn att_was_cast(&self) -> bool {
        self.softmax_input_cast
    }
}

impl Backward for Attention {
    fn release_saved(self, e: &mut Engine) {
        let all = [
            self.qkv,
            self.lse,
            self.out,
            self.rng[0],
            self.rng[1],
            self.stats[0],
            self.stats[1],
            self.att,
            self.v,
            self.drop_mask,
            self.softmax,
            self.mask,
            self.k,
            self.q,
        ];
        for t in all.into_iter().flatten() {
            e.release(t);
        }
    }

    /// Gradient of the attention output (B·T, C) → gradient of qkv (B, T, 3C).
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let (dq, dk, dv) = match self.kind {
            AttnKind::Flash | AttnKind::Efficient => self.sdpa_backward(e, g),
            AttnKind::Manual if self.compiled => super::attention_compiled::backward(self, e, g),
            AttnKind::Manual => self.manual_backward(e, g),
        };
        let cat = e.alloc(
            self.name("qkv.grad"),
            Shape::new(&[self.b, self.t, 3 * self.nh * self.hs]),
            self.dtype,
            Category::Activations,
        );
        for t in [dq, dk, dv].into_iter().flatten() {
            e.release(t);
        }
        [Some(cat), None, None]
    }
}

/// Attention over `qkv` (B·T, 3C). Returns y ready for c_proj and, for the manual path, the
/// last value of the local `att`; the caller drops those (and its q, k, v views of qkv) when
/// CausalSelfAttention.forward returns, after c_proj.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    e: &mut Engine,
    qkv: V,
    kind: AttnKind,
    b: u64,
    t: u64,
    nh: u64,
    hs: u64,
    dropout: f64,
    layer: Option<u32>,
) -> (V, Option<T>) {
    let mut a = Attention {
        kind,
        b,
        t,
        nh,
        hs,
        dtype: e.dtype(qkv.t),
        layer,
        qkv: None,
        out: None,
        lse: None,
        rng: [None; 2],
        q: None,
        k: None,
        mask: None,
        softmax: None,
        drop_mask: None,
        att: None,
        v: None,
        softmax_input_cast: false,
        stats: [None; 2],
        compiled: false,
    };
    let (y, att) = match kind {
        AttnKind::Flash | AttnKind::Efficient => (sdpa_forward(e, &mut a, qkv.t), None),
        AttnKind::Manual => {
            let (y, att) = if e.compiled() {
                super::attention_compiled::forward(e, &mut a, dropout)
            } else {
                manual_forward(e, &mut a, dropout)
            };
            (y, Some(att))
        }
    };
    let edge = e.push_node(super::Op::Attention(a), [qkv.edge, Edge::None, Edge::None]);
    (V { t: y, edge }, att)
}

fn sdpa_forward(e: &mut Engine, a: &mut Attention, qkv: T) -> T {
    let training = e.grad_mode;
    // torchtitan's op policy keeps all of the kernel's outputs (sim::sac).
    let [out, lse, rng_state, rng_offset] =
        e.sac_outputs(SacOp::ComputeIntensive, |e| sdpa_outputs(e, a));
    let out = out.expect("SDPA has an output");
    let rng = [rng_state, rng_offset];
    if training {
        a.qkv = Some(save(e, qkv));
        a.out = Some(save(e, out));
        a.lse = lse;
        a.rng = rng;
    } else {
        for t in [rng[1], rng[0], lse].into_iter().flatten() {
            e.release(t);
        }
    }
    out
}

/// The kernel's outputs ([`super::sdpa::kernel_outputs`]) in nanoGPT's (B, nh, T, hs) layout.
fn sdpa_outputs(e: &mut Engine, a: &Attention) -> [Option<T>; 4] {
    let flash = a.kind == AttnKind::Flash;
    let shapes = (a.bhtd(), a.dtype);
    super::sdpa::kernel_outputs(e, flash, (a.b, a.nh, a.t), shapes, |w| a.name(w))
}

fn manual_forward(e: &mut Engine, a: &mut Attention, dropout: f64) -> (T, T) {
    let h = a.dtype;
    let act = Category::Activations;
    let autocast = e.autocast.is_some();
    // q @ k.transpose(-2, -1): both made contiguous for bmm.
    let q = e.alloc(a.name("q"), a.bhtd(), h, act);
    let k = e.alloc(a.name("k"), a.bhtd(), h, act);
    // Both matmuls are bmm, which torchtitan's op policy keeps (sim::sac).
    let s = e.sac_output(SacOp::ComputeIntensive, |e| {
        e.alloc(a.name("scores"), a.scores(), h, act)
    });
    e.matmul_workspace();
    a.q = Some(save(e, q));
    a.k = Some(save(e, k));
    e.release(q);
    e.release(k);
    // * (1 / sqrt(hs)): the bmm output is not kept.
    let sc = e.alloc(a.name("scores_scaled"), a.scores(), h, act);
    e.release(s);
    // masked_fill(self.bias[:, :, :T, :T] == 0, -inf)
    let mask = e.alloc(
        a.name("causal_mask"),
        Shape::new(&[1, 1, a.t, a.t]),
        DType::Bool,
        act,
    );
    let mf = e.alloc(a.name("scores_masked"), a.scores(), h, act);
    a.mask = Some(save(e, mask));
    e.release(mask);
    e.release(sc);
    // softmax: fp32 under autocast (its input is cast first; the cast is not kept).
    let sm = if autocast {
        a.softmax_input_cast = true;
        let cin = e.alloc(a.name("scores_fp32"), a.scores(), DType::F32, act);
        let sm = e.alloc(a.name("att"), a.scores(), DType::F32, act);
        e.release(cin);
        sm
    } else {
        e.alloc(a.name("att"), a.scores(), h, act)
    };
    e.release(mf);
    a.softmax = Some(save(e, sm));
    let mut att = sm;
    if dropout > 0.0 && e.training {
        let d = e.alloc(a.name("att_dropout"), a.scores(), e.dtype(sm), act);
        let m = e.alloc(a.name("att_dropout.mask"), a.scores(), DType::Bool, act);
        if e.grad_mode {
            a.drop_mask = Some(m);
        } else {
            e.release(m);
        }
        e.release(att);
        att = d;
    }
    // att @ v: autocast casts the fp32 probabilities back to the half dtype.
    let att_mm = if autocast {
        e.alloc(a.name("att_cast"), a.scores(), h, act)
    } else {
        e.retain(att);
        att
    };
    let v = e.alloc(a.name("v"), a.bhtd(), h, act);
    let y = e.sac_output(SacOp::ComputeIntensive, |e| {
        e.alloc(a.name("y"), a.bhtd(), h, act)
    });
    a.att = Some(save(e, att_mm));
    a.v = Some(save(e, v));
    e.release(att_mm);
    e.release(v);
    // y.transpose(1, 2).contiguous()
    let yt = e.alloc(a.name("y_contiguous"), a.bhtd(), h, act);
    e.release(y);
    (yt, att)
}
