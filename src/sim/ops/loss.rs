//! The losses that never materialise the eager log-probabilities: cross-entropy over chunks
//! of rows (`loss = 'chunked'`) and cross-entropy inside a compiled graph.

use super::linear::cast;
use super::{save, Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// Rows of the logits computed at once by `loss = 'chunked'`.
pub const CHUNK_ROWS: u64 = 4096;

/// What the chunked loss keeps: the lm_head's input and weight as multiplied, the targets.
#[derive(Debug, Clone, Copy)]
pub struct ChunkedSaved {
    pub x: T,
    pub w: T,
    pub target: T,
    pub m: u64,
    pub c: u64,
    pub v: u64,
    pub dtype: DType,
    /// The weight needs a gradient (false for a frozen lm_head).
    pub w_grad: bool,
}

fn chunks(m: u64) -> impl Iterator<Item = u64> {
    (0..m.div_ceil(CHUNK_ROWS)).map(move |i| (m - i * CHUNK_ROWS).min(CHUNK_ROWS))
}

/// One chunk's forward chain: logits, log-probs (and their fp32 copy under autocast).
fn chunk_forward(e: &mut Engine, rows: u64, s: &ChunkedSaved) -> [Option<T>; 3] {
    let shape = Shape::new(&[rows, s.v]);
    let logits = e.alloc(
        Name::top("lm_head", "logits_chunk"),
        shape,
        s.dtype,
        Category::Logits,
    );
    e.matmul_workspace();
    let lp = e.alloc(
        Name::top("loss", "log_probs_chunk"),
        shape,
        s.dtype,
        Category::Logits,
    );
    let lp32 = (s.dtype != DType::F32).then(|| {
        e.alloc(
            Name::top("loss", "log_probs_fp32_chunk"),
            shape,
            DType::F32,
            Category::Logits,
        )
    });
    [Some(logits), Some(lp), lp32]
}

/// `loss = 'chunked'`: lm_head + cross-entropy over CHUNK_ROWS rows at a time, each chunk
/// under torch.utils.checkpoint, so only one chunk's logits chain is ever alive; the backward
/// recomputes each chunk's logits. GPT.forward then returns no full logits.
pub fn chunked_cross_entropy(e: &mut Engine, x: V, wte: usize, targets: T) -> V {
    let xs = e.shape(x.t);
    let (n, c) = (e.params[wte].shape.dims()[0], e.params[wte].shape.dims()[1]);
    let m = xs.numel().unwrap_or(0) / c.max(1);
    let wv = e.param(wte);
    // Autocast casts what is not in the half dtype already (a frozen bf16 lm_head is not).
    let to_half = |e: &mut Engine, v: V, h, p, what| {
        if e.dtype(v.t) == h {
            e.retain(v.t);
            v
        } else {
            cast(e, v, h, p, Name::top("lm_head", what))
        }
    };
    let (xm, wm, dtype) = match e.autocast {
        Some(h) => (
            to_half(e, x, h, None, "input_cast"),
            to_half(e, wv, h, Some(wte), "weight_cast"),
            h,
        ),
        None => {
            e.retain(x.t);
            e.retain(wv.t);
            (x, wv, DType::F32)
        }
    };
    let s = ChunkedSaved {
        x: xm.t,
        w: wm.t,
        target: targets,
        m,
        c,
        v: n,
        dtype,
        w_grad: wv.edge != Edge::None,
    };
    let mut loss: Option<T> = None;
    for rows in chunks(m) {
        let chain = chunk_forward(e, rows, &s);
        let nll = e.alloc(
            Name::top("loss", "nll_chunk"),
            Shape::scalar(),
            DType::F32,
            Category::Logits,
        );
        for t in chain.into_iter().rev().flatten() {
            e.release(t);
        }
        let sum = e.alloc(
            Name::top("loss", "nll"),
            Shape::scalar(),
            DType::F32,
            Category::Logits,
        );
        e.release(nll);
        if let Some(old) = loss.replace(sum) {
            e.release(old);
        }
    }
    let out = loss.unwrap_or_else(|| {
        e.alloc(
            Name::top("loss", "nll"),
            Shape::scalar(),
            DType::F32,
            Category::Logits,
        )
    });
    let saved = ChunkedSaved {
        x: save(e, xm.t),
        w: save(e, wm.t),
        target: save(e, targets),
        ..s
    };
    let edge = e.push_node(Op::ChunkedLoss(saved), [xm.edge, wm.edge, Edge::None]);
    e.release(xm.t);
    e.release(wm.t);
    V { t: out, edge }
}

impl Backward for ChunkedSaved {
    /// Each chunk is recomputed, its gradient chain runs, and its slices of the input and weight
    /// gradients are accumulated.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let gx = e.alloc(
            Name::top("lm_head", "input.grad"),
            Shape::new(&[self.m, self.c]),
            self.dtype,
            Category::Activations,
        );
        let mut gw: Option<T> = None;
        for rows in chunks(self.m) {
            let [logits, lp, lp32] = chunk_forward(e, rows, &self);
            let shape = Shape::new(&[rows, self.v]);
            let mut grad = e.alloc(
                Name::top("loss", "nll.grad"),
                shape,
                DType::F32,
                Category::Logits,
            );
            if let Some(t) = lp32 {
                e.release(t);
                let half = e.alloc(
                    Name::top("loss", "log_probs.grad"),
                    shape,
                    self.dtype,
                    Category::Logits,
                );
                e.release(grad);
                grad = half;
            }
            let glogits = e.alloc(
                Name::top("loss", "log_softmax.grad"),
                shape,
                self.dtype,
                Category::Logits,
            );
            e.release(grad);
            for t in [lp, logits].into_iter().flatten() {
                e.release(t);
            }
            let gw_c = self.w_grad.then(|| {
                e.alloc(
                    Name::top("lm_head", "weight.grad"),
                    Shape::new(&[self.v, self.c]),
                    self.dtype,
                    Category::Activations,
                )
            });
            let gx_c = e.alloc(
                Name::top("lm_head", "input.grad_chunk"),
                Shape::new(&[rows, self.c]),
                self.dtype,
                Category::Activations,
            );
            e.release(glogits);
            e.release(gx_c);
            match (gw, gw_c) {
                (None, c) => gw = c,
                (Some(_), Some(c)) => e.release(c),
                (Some(_), None) => {}
            }
        }
        e.release(g);
        e.release(self.x);
        e.release(self.w);
        e.release(self.target);
        [Some(gx), gw, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.x), Some(self.w), Some(self.target)]
    }
}

/// What the compiled loss keeps for its backward.
#[derive(Debug, Clone, Copy)]
pub struct CompiledCeSaved {
    pub logits: T,
    pub target: T,
    /// The per-row max and log-sum-exp, (B·T, 1) fp32 each.
    pub stats: [T; 2],
    pub shape: Shape,
    pub dtype: DType,
}

/// Cross-entropy as inductor compiles it (fusion.rs). AOTAutograd decomposes `_log_softmax`
/// (torch/_decomp/decompositions.py) into amax, exp-sum-log and a subtraction, and autocast's
/// fp32 cast before it into a `convert_element_type`: the row reductions read the bf16 logits
/// in place and only their (B·T, 1) results are buffers; the log-probabilities and their fp32
/// copy are never materialised, and `nll_loss` becomes a gather inside the same kernels.
pub(super) fn compiled_cross_entropy(e: &mut Engine, logits: V, targets: T, shape: Shape) -> V {
    let rows = Shape::new(&[shape.dims()[0], 1]);
    let dtype = e.dtype(logits.t);
    // The eager chain's log-probs and their fp32 copy, as values the reductions compute in
    // registers: named, so `explain` can say where they went, but never a buffer.
    let lp = e.alloc_fused(
        Name::top("loss", "log_probs"),
        shape,
        dtype,
        Category::Logits,
        &[logits.t],
    );
    if e.autocast.is_some() && dtype != DType::F32 {
        let lp32 = e.alloc_fused(
            Name::top("loss", "log_probs_fp32"),
            shape,
            DType::F32,
            Category::Logits,
            &[lp],
        );
        e.release(lp32);
    }
    e.release(lp);
    let stat =
        |e: &mut Engine, what| e.alloc(Name::top("loss", what), rows, DType::F32, Category::Logits);
    let stats = [stat(e, "row_max"), stat(e, "row_logsumexp")];
    let out = e.alloc(
        Name::top("loss", "nll"),
        Shape::scalar(),
        DType::F32,
        Category::Logits,
    );
    if !e.grad_mode || logits.edge == Edge::None {
        for t in stats {
            e.release(t);
        }
        return V {
            t: out,
            edge: Edge::None,
        };
    }
    let saved = CompiledCeSaved {
        logits: save(e, logits.t),
        target: save(e, targets),
        stats,
        shape,
        dtype,
    };
    let edge = e.push_node(Op::CompiledCe(saved), [logits.edge, Edge::None, Edge::None]);
    V { t: out, edge }
}

impl Backward for CompiledCeSaved {
    /// The backward of the compiled loss is one kernel: `nll_loss_backward`'s scatter into zeros
    /// becomes a pointwise select (inductor's `scatter_upon_const_tensor` pass,
    /// torch/_inductor/fx_passes/post_grad.py), fused with `_log_softmax_backward_data` and the
    /// cast back to the logits' dtype, so the only new buffer is the logits' gradient in their
    /// dtype. Before it, the compiled backward receives the gradient of its other output,
    /// `logits`: nanoGPT never uses it, so autograd hands AOTAutograd's Function an undefined
    /// gradient, which it materialises as zeros of the logits' shape (fusion.rs); the wrapper
    /// frees it after this kernel.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let tangent = e.alloc(
            Name::top("lm_head", "logits.tangent"),
            self.shape,
            self.dtype,
            Category::Logits,
        );
        let gx = e.alloc(
            Name::top("loss", "logits.grad"),
            self.shape,
            self.dtype,
            Category::Logits,
        );
        e.release(g);
        for t in [
            self.logits,
            self.target,
            self.stats[0],
            self.stats[1],
            tangent,
        ] {
            e.release(t);
        }
        [Some(gx), None, None]
    }

    fn release_saved(self, e: &mut Engine) {
        for t in [self.stats[0], self.stats[1], self.logits, self.target] {
            e.release(t);
        }
    }
}
