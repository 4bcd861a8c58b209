//! The ops of a mixture-of-experts layer as transformers 5.x runs it (read in 5.25.0:
//! models/mixtral/modeling_mixtral.py `MixtralTopKRouter.forward`, and
//! integrations/moe.py `grouped_mm_experts_forward`, the default `experts_implementation`
//! — modeling_utils.py `get_correct_experts_implementation` picks "grouped_mm" when none is
//! asked for). Every expert buffer there has S = tokens × top_k rows whatever the routing:
//! the grouped matmul takes all S rows at once and per-expert offsets only steer the kernel.
//! What each backward node keeps was checked against torch 2.15 (CPU) with
//! `torch.autograd.graph.saved_tensors_hooks`: softmax its fp32 output, topk its int64
//! indices, the in-place `/=` the sum and a clone of the values before it, each row gather
//! its index, grouped_mm its weight, offsets and input, the weighting multiply both factors.

use super::{save, Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// What an MoE op kept for its backward.
#[derive(Debug, Clone, Copy)]
pub enum MoeSaved {
    /// softmax → topk → `/= sum`: the softmax output, topk's indices, and what the in-place
    /// division reads (the values before it, cloned, and the sum).
    Router {
        probs: T,
        indices: T,
        /// The in-place division's operands (the values before it, the sum) when the
        /// weights are renormalised.
        renorm: Option<(T, T)>,
        /// The logits' dtype: SoftmaxBackward's gradient comes out in it.
        logits_dtype: DType,
        rows: u64,
        experts: u64,
        k: u64,
        name: Name,
    },
    /// `x[idx]` along the rows: IndexBackward0 keeps the index and x's sizes.
    Rows {
        idx: T,
        src: Shape,
        dtype: DType,
        name: Name,
    },
    /// `grouped_mm(x, w.transpose(-2, -1), offs)`: x as multiplied (when the weight needs a
    /// gradient), the weight (when x does) and the offsets, always (as torch 2.15's
    /// GroupedMmBackward0 keeps them, read through saved_tensors_hooks).
    GroupedMm {
        x: Option<T>,
        w: Option<T>,
        offs: T,
        x_shape: Shape,
        w_shape: Shape,
        dtype: DType,
        need_x: bool,
        need_w: bool,
        name: Name,
    },
    /// `proj_out * sample_weights_g.unsqueeze(-1)`: (S, C) times (S, 1).
    Weigh {
        proj: Option<T>,
        weights: Option<T>,
        shape: Shape,
        /// proj's, the weights', the product's.
        dtypes: [DType; 3],
        name: Name,
    },
}

fn grad_name(name: Name) -> Name {
    Name {
        what: "grad",
        ..name
    }
}

/// The top-k router after its Linear: MixtralTopKRouter.forward's `softmax(logits.float())`
/// (`logits` is then the fp32 copy) or Qwen3MoeTopKRouter.forward's `softmax(logits,
/// dtype=torch.float)` (the bf16 logits themselves; SoftmaxBackward's gradient comes out in
/// their dtype): the probabilities in fp32 (SoftmaxBackward keeps its output), `topk(k)`
/// (values fp32, indices int64; TopkBackward keeps the indices), and with `renorm`,
/// `router_top_value /= router_top_value.sum(-1, keepdim=True)` (DivBackward0 keeps `other`,
/// the (N, 1) sum, and the values before the in-place division, which autograd clones for an
/// in-place op whose formula reads `self`). Returns the routing weights (N, k) and the
/// indices (N, k), which take no gradient.
pub fn router_topk(e: &mut Engine, logits: V, k: u64, renorm: bool, name: Name) -> (V, T) {
    let d = e.shape(logits.t).dims().to_vec();
    let (n, experts) = (d[..d.len() - 1].iter().product::<u64>(), d[d.len() - 1]);
    let at = |what| Name { what, ..name };
    let alloc = |e: &mut Engine, what, dims: &[u64], dt| {
        e.alloc(at(what), Shape::new(dims), dt, Category::Activations)
    };
    let probs = alloc(e, "probs", &[n, experts], DType::F32);
    let values = alloc(e, "top_k_weights", &[n, k], DType::F32);
    let indices = alloc(e, "top_k_index", &[n, k], DType::I64);
    let grad = e.grad_mode && logits.edge != Edge::None;
    let sum = renorm.then(|| alloc(e, "top_k_sum", &[n, 1], DType::F32));
    if !grad {
        for t in [Some(probs), sum].into_iter().flatten() {
            e.release(t);
        }
        let v = V {
            t: values,
            edge: Edge::None,
        };
        return (v, indices);
    }
    let renorm = sum.map(|sum| (alloc(e, "top_k_original", &[n, k], DType::F32), sum));
    let saved = MoeSaved::Router {
        probs,
        indices: save(e, indices),
        renorm,
        logits_dtype: e.dtype(logits.t),
        rows: n,
        experts,
        k,
        name: grad_name(name),
    };
    let edge = e.push_node(Op::Moe(saved), [logits.edge, Edge::None, Edge::None]);
    (V { t: values, edge }, indices)
}

/// `x[idx]` with `idx` an int64 vector of row numbers: a gathered copy shaped `out` in
/// x's dtype. Its backward is `zeros_like(x).index_put_(idx, grad, accumulate=True)`
/// (derivatives.yaml `index.Tensor`: `index_backward`) — one x-sized buffer. (index_put_'s
/// own sort of the indices, a few int64 vectors of `rows`, is not simulated.)
pub fn gather_rows(e: &mut Engine, x: V, idx: T, out: Shape, name: Name) -> V {
    let r = *e.record(x.t);
    let t = e.alloc(name, out, r.dtype, Category::Activations);
    if x.edge == Edge::None || !e.grad_mode {
        return V {
            t,
            edge: Edge::None,
        };
    }
    let saved = MoeSaved::Rows {
        idx: save(e, idx),
        src: r.shape,
        dtype: r.dtype,
        name: grad_name(name),
    };
    let edge = e.push_node(Op::Moe(saved), [x.edge, Edge::None, Edge::None]);
    V { t, edge }
}

/// integrations/moe.py `_grouped_linear` → `_grouped_mm`: `grouped_mm(input.to(w.dtype),
/// w.transpose(-2, -1), offs)` for x (S, in) and the 3-D parameter w (E, out, in). grouped_mm
/// is on no autocast list, so with fp32 master weights the experts run in fp32; the input is
/// cast to the weight's dtype where they differ. The output is (S, out) in that dtype.
pub fn grouped_mm(e: &mut Engine, x: V, w: usize, offs: T, name: Name) -> V {
    let wshape = e.params[w].shape;
    let out_features = wshape.dims()[1];
    let wv = e.param(w);
    let wd = e.dtype(wv.t);
    let xm = super::to_dtype(
        e,
        x,
        wd,
        Name {
            what: "input_cast",
            ..name
        },
    );
    let xs = e.shape(xm.t);
    let rows = xs.dims()[0];
    let out = e.alloc(
        name,
        Shape::new(&[rows, out_features]),
        wd,
        Category::Activations,
    );
    e.matmul_workspace();
    let (need_x, need_w) = (xm.edge != Edge::None, wv.edge != Edge::None);
    let saved = MoeSaved::GroupedMm {
        x: need_w.then(|| save(e, xm.t)).filter(|_| e.grad_mode),
        w: need_x.then(|| save(e, wv.t)).filter(|_| e.grad_mode),
        offs,
        x_shape: xs,
        w_shape: wshape,
        dtype: wd,
        need_x,
        need_w,
        name: grad_name(name),
    };
    let edge = if e.grad_mode && (need_x || need_w) {
        e.retain(offs);
        e.push_node(Op::Moe(saved), [xm.edge, wv.edge, Edge::None])
    } else {
        Edge::None
    };
    // The input's cast was a temporary of this call (the saved reference keeps it); the
    // parameter is not ours to release.
    e.release(xm.t);
    V { t: out, edge }
}

/// `proj_out * sample_weights_g.unsqueeze(-1)`: (S, C) in the experts' dtype times the
/// routing weights (S, 1) — fp32 (Mixtral) or the logits' dtype (Qwen3-MoE) — in the
/// promoted dtype (fp32 whenever either is).
pub fn weigh(e: &mut Engine, proj: V, weights: V, name: Name) -> V {
    let r = *e.record(proj.t);
    let weights_dtype = e.dtype(weights.t);
    let out = super::promote(r.dtype, weights_dtype);
    let t = e.alloc(name, r.shape, out, Category::Activations);
    if !e.grad_mode {
        return V {
            t,
            edge: Edge::None,
        };
    }
    // MulBackward0 keeps `other` for self's gradient and `self` for other's.
    let saved = MoeSaved::Weigh {
        proj: (weights.edge != Edge::None).then(|| save(e, proj.t)),
        weights: (proj.edge != Edge::None).then(|| save(e, weights.t)),
        shape: r.shape,
        dtypes: [r.dtype, weights_dtype, out],
        name: grad_name(name),
    };
    let edge = e.push_node(Op::Moe(saved), [proj.edge, weights.edge, Edge::None]);
    V { t, edge }
}

impl MoeSaved {
    /// DivBackward0 when renormalised (self's gradient, then other's: fp32 (N, k), summed to
    /// (N, 1)); the sum's gradient added to self's; TopkBackward's scatter into zeros (N, E)
    /// fp32; SoftmaxBackward's (N, E) in the logits' dtype. The aten ops as a
    /// TorchDispatchMode logs them (torch 2.15, CPU).
    fn router_backward(self, e: &mut Engine, g: T) -> T {
        let MoeSaved::Router {
            probs,
            indices,
            renorm,
            logits_dtype,
            rows,
            experts,
            k,
            name,
        } = self
        else {
            unreachable!("router_backward on another op")
        };
        let alloc = |e: &mut Engine, dims: &[u64], dt| {
            e.alloc(name, Shape::new(dims), dt, Category::Activations)
        };
        let g_values = match renorm {
            Some((original, sum)) => {
                // div_tensor_self_backward: grad / other. div_tensor_other_backward:
                // -grad * ((self / other) / other), its temporaries alive to the end of the
                // C++ expression; validate_outputs sums it to (N, 1). SumBackward's expand
                // is then added to self's gradient out of place.
                let nk = [rows, k];
                let g_self = alloc(e, &nk, DType::F32);
                let temps = [0; 3].map(|_| alloc(e, &nk, DType::F32));
                let g_other_full = alloc(e, &nk, DType::F32);
                for t in temps {
                    e.release(t);
                }
                let g_other = alloc(e, &[rows, 1], DType::F32);
                for t in [g_other_full, g, original, sum] {
                    e.release(t);
                }
                let g_sum = alloc(e, &nk, DType::F32);
                e.release(g_self);
                e.release(g_other);
                g_sum
            }
            None => g,
        };
        // TopkBackward: new_zeros (N, E), then the out-of-place scatter.
        let zeros = alloc(e, &[rows, experts], DType::F32);
        let g_topk = alloc(e, &[rows, experts], DType::F32);
        e.release(zeros);
        e.release(g_values);
        e.release(indices);
        let g_logits = alloc(e, &[rows, experts], logits_dtype);
        e.release(g_topk);
        e.release(probs);
        g_logits
    }

    /// MulBackward0: `grad * other` ((S, C) in the output's dtype) cast to proj's dtype by the
    /// engine's validate_outputs where it differs; then `grad * self` ((S, C)) summed to
    /// (S, 1), cast to the weights' dtype where it differs.
    fn weigh_backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let MoeSaved::Weigh {
            proj,
            weights,
            shape,
            dtypes: [proj_dtype, weights_dtype, out],
            name,
        } = self
        else {
            unreachable!("weigh_backward on another op")
        };
        let rows = shape.dims()[0];
        // One product in `out`, then its reduction or cast into `(shape, to)`.
        let grad_as = |e: &mut Engine, reduced: Shape, to: DType| {
            let full = e.alloc(name, shape, out, Category::Activations);
            let mut t = full;
            if reduced != shape {
                t = e.alloc(name, reduced, out, Category::Activations);
                e.release(full);
            }
            if to != out {
                let cast = e.alloc(name, reduced, to, Category::Activations);
                e.release(t);
                t = cast;
            }
            t
        };
        let g_proj = weights.map(|_| grad_as(e, shape, proj_dtype));
        let g_weights = proj.map(|_| grad_as(e, Shape::new(&[rows, 1]), weights_dtype));
        e.release(g);
        for t in [proj, weights].into_iter().flatten() {
            e.release(t);
        }
        [g_proj, g_weights, None]
    }
}

impl Backward for MoeSaved {
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        match self {
            MoeSaved::Router { .. } => [Some(self.router_backward(e, g)), None, None],
            MoeSaved::Rows {
                idx,
                src,
                dtype,
                name,
            } => {
                // `grad.new_zeros(sizes).index_put(indices, grad, accumulate=True)`: the
                // out-of-place index_put copies the zeros (aten ops logged with a
                // TorchDispatchMode, torch 2.15), which then go.
                let zeros = e.alloc(name, src, dtype, Category::Activations);
                let gx = e.alloc(name, src, dtype, Category::Activations);
                e.release(zeros);
                e.release(g);
                e.release(idx);
                [Some(gx), None, None]
            }
            MoeSaved::GroupedMm {
                x,
                w,
                offs,
                x_shape,
                w_shape,
                dtype,
                need_x,
                need_w,
                name,
            } => {
                // GroupedMmBackward0 (aten ops logged, torch 2.15): mat_b's gradient first
                // (the weight's, through the transpose: a view of a buffer of its shape),
                // then mat_a's.
                let gw = need_w.then(|| e.alloc(name, w_shape, dtype, Category::Gradients));
                e.matmul_workspace();
                let gx = need_x.then(|| e.alloc(name, x_shape, dtype, Category::Activations));
                if let Some(gw) = gw {
                    e.mark_no_inplace(gw);
                }
                e.release(g);
                for t in [x, w, Some(offs)].into_iter().flatten() {
                    e.release(t);
                }
                [gx, gw, None]
            }
            MoeSaved::Weigh { .. } => self.weigh_backward(e, g),
        }
    }

    fn release_saved(self, e: &mut Engine) {
        let saved: [Option<T>; 4] = match self {
            MoeSaved::Router {
                probs,
                indices,
                renorm,
                ..
            } => [
                Some(probs),
                Some(indices),
                renorm.map(|r| r.0),
                renorm.map(|r| r.1),
            ],
            MoeSaved::Rows { idx, .. } => [Some(idx), None, None, None],
            MoeSaved::GroupedMm { x, w, offs, .. } => [x, w, Some(offs), None],
            MoeSaved::Weigh { proj, weights, .. } => [proj, weights, None, None],
        };
        for t in saved.into_iter().flatten() {
            e.release(t);
        }
    }
}
