//! The router's auxiliary load-balancing loss (`output_router_logits = True`), as
//! transformers 5.25.0 computes it: `load_balancing_loss_func` (models/mixtral/
//! modeling_mixtral.py; qwen2_moe's and qwen3_moe's copies are the same), called by
//! `*ForCausalLM.forward` on the router logits OutputRecorder kept for every MoE layer, then
//! `loss += self.router_aux_loss_coef * aux_loss`. Without attention_mask (vramplan's model is
//! called with input_ids and labels), per layer:
//!
//! ```python
//! routing_weights = torch.nn.functional.softmax(layer_gate, dim=-1)    # (N, E)
//! _, selected_experts = torch.topk(routing_weights, top_k, dim=-1)     # (N, k), (N, k) int64
//! tokens_per_expert_sum = tokens_per_expert_sum + torch.histc(
//!     selected_experts.reshape(-1).to(histc_dtype), bins=num_experts, ...)  # int32 on CUDA
//! router_prob_sum = router_prob_sum + routing_weights.float().sum(dim=0)  # (E,) fp32
//! ```
//! then `torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0)) * num_experts`
//! over the (E,) sums divided by the row count. Under CUDA autocast `softmax` is an
//! fp32_set_opt_dtype op (aten/src/ATen/autocast_mode.cpp): fp32 probabilities straight from
//! the bf16 logits, `.float()` then a no-op; in pure bf16 the probabilities are bf16 and
//! `.float()` copies them. SoftmaxBackward0 keeps its output; TopkBackward0's values (`_`) take
//! no gradient from the loss. Checked on CPU in pure bf16 (scripts/moe-truth/
//! mixtral_aux_loss.out: each layer's SoftmaxBackward0 keeps `result=(N, E) bfloat16`; the
//! backward runs expand, `_to_copy` (N, E) bf16, `_softmax_backward_data` (N, E) bf16).

use super::{Backward, Op};
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// What one layer's `routing_weights.float().sum(dim=0)` chain kept for its backward.
#[derive(Debug, Clone, Copy)]
pub struct AuxSaved {
    /// SoftmaxBackward0's result: (N, E), its shape and dtype the backward's.
    probs: T,
    logits_dtype: DType,
    name: Name,
}

/// One router logit tensor the model's output holds: the value, and whether it requires a
/// gradient though the engine recorded no edge for it (it came out of a block checkpointed
/// without reentrancy, whose forward the engine runs with autograd off; torch runs it with
/// autograd on and discards the saved tensors instead).
#[derive(Debug, Clone, Copy)]
pub struct RouterLogits {
    pub v: V,
    pub requires_grad: bool,
}

/// `load_balancing_loss_func(router_logits, num_experts, top_k)` then
/// `loss += router_aux_loss_coef * aux_loss`. Consumes the logits (the output tuple goes with
/// the outputs) and `loss`; returns the new loss.
pub fn add_aux_loss(e: &mut Engine, loss: V, logits: Vec<RouterLogits>, k: u64) -> V {
    let name = Name::top("router_aux_loss", "");
    let vec = |e: &mut Engine, what, dims: &[u64], dt| {
        let n = Name { what, ..name };
        e.alloc(n, Shape::new(dims), dt, Category::Activations)
    };
    let experts = logits
        .first()
        .map_or(1, |l| *e.shape(l.v.t).dims().last().unwrap_or(&1));
    let mut tokens_sum = vec(e, "tokens_per_expert_sum", &[experts], DType::F32);
    let mut prob_sum = V {
        t: vec(e, "router_prob_sum", &[experts], DType::F32),
        edge: Edge::None,
    };
    // `_`, selected_experts and routing_weights live until the next iteration rebinds them.
    let mut locals: Option<[T; 3]> = None;
    for l in &logits {
        let v = if l.requires_grad {
            super::requires_grad(e, l.v)
        } else {
            l.v
        };
        let (layer_sum, held) = layer_probs(e, v, k, name);
        if let Some(old) = locals.replace(held) {
            for t in old {
                e.release(t);
            }
        }
        let summed = vec(e, "tokens_per_expert_sum", &[experts], DType::F32);
        e.release(tokens_sum);
        tokens_sum = summed;
        let added = super::add(
            e,
            prob_sum,
            layer_sum,
            Name {
                what: "router_prob_sum",
                ..name
            },
        );
        e.drop_value(prob_sum);
        e.drop_value(layer_sum);
        prob_sum = added;
    }
    for t in locals.into_iter().flatten() {
        e.release(t);
    }
    for l in logits {
        e.drop_value(l.v);
    }
    let aux = aux_head(e, prob_sum, name);
    e.release(tokens_sum);
    e.drop_value(prob_sum);
    // `self.router_aux_loss_coef * aux_loss` (MulBackward0 by a Python float keeps nothing),
    // then `loss += ...` (simulated out of place: a 0-dim tensor more for a moment).
    let scaled = super::mul_scalar(
        e,
        aux,
        Name {
            what: "scaled",
            ..name
        },
    );
    e.drop_value(aux);
    let total = super::add(e, loss, scaled, Name::top("loss", "with_aux"));
    e.drop_value(loss);
    e.drop_value(scaled);
    total
}

/// One layer's softmax, topk, histc and `routing_weights.float().sum(dim=0)`: returns the
/// (E,) sum (with its backward node) and the locals the loop keeps until
/// its next iteration (`_`, selected_experts, routing_weights).
fn layer_probs(e: &mut Engine, logits: V, k: u64, name: Name) -> (V, [T; 3]) {
    let d = e.shape(logits.t).dims().to_vec();
    let (rows, experts) = (d[..d.len() - 1].iter().product::<u64>(), d[d.len() - 1]);
    let logits_dtype = e.dtype(logits.t);
    let probs_dtype = if e.autocast.is_some() {
        DType::F32
    } else {
        logits_dtype
    };
    let alloc = |e: &mut Engine, what, dims: &[u64], dt| {
        e.alloc(
            Name { what, ..name },
            Shape::new(dims),
            dt,
            Category::Activations,
        )
    };
    let probs = alloc(e, "routing_weights", &[rows, experts], probs_dtype);
    let values = alloc(e, "top_k_values", &[rows, k], probs_dtype);
    let indices = alloc(e, "selected_experts", &[rows, k], DType::I64);
    // `.to(torch.int32)` (CUDA), histc's (E,) int32 counts, both gone after the statement.
    let ids = alloc(e, "histc_input", &[rows * k], DType::I32);
    let counts = alloc(e, "histc", &[experts], DType::I32);
    e.release(ids);
    e.release(counts);
    let copy = (probs_dtype != DType::F32).then(|| alloc(e, "float", &[rows, experts], DType::F32));
    let sum = alloc(e, "prob_sum", &[experts], DType::F32);
    if let Some(c) = copy {
        e.release(c);
    }
    let grad = e.grad_mode && logits.edge != Edge::None;
    let edge = if grad {
        e.retain(probs);
        let saved = AuxSaved {
            probs,
            logits_dtype,
            name: Name::top("router_aux_loss.routing_weights", "grad"),
        };
        e.push_node(Op::MoeAux(saved), [logits.edge, Edge::None, Edge::None])
    } else {
        Edge::None
    };
    (V { t: sum, edge }, [values, indices, probs])
}

/// `tokens_per_expert = tokens_per_expert_sum / total_rows`, the same for the probabilities,
/// `torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0)) * num_experts`: (E,)
/// and 0-dim tensors. MulBackward0 keeps tokens_per_expert for the probabilities' gradient;
/// the divisors are Python numbers (wrapped CPU scalars).
fn aux_head(e: &mut Engine, prob_sum: V, name: Name) -> V {
    let experts = e.shape(prob_sum.t);
    let tokens = e.alloc(
        Name {
            what: "tokens_per_expert",
            ..name
        },
        experts,
        DType::F32,
        Category::Activations,
    );
    let per_expert = super::mul_scalar(
        e,
        prob_sum,
        Name {
            what: "router_prob_per_expert",
            ..name
        },
    );
    let product = e.alloc(
        Name {
            what: "product",
            ..name
        },
        experts,
        DType::F32,
        Category::Activations,
    );
    let total = e.alloc(
        Name {
            what: "sum",
            ..name
        },
        Shape::scalar(),
        DType::F32,
        Category::Activations,
    );
    e.release(product);
    let edge = if e.grad_mode && per_expert.edge != Edge::None {
        // MulBackward0's `self` (tokens_per_expert); its backward: `grad * self` (1, E).
        let saved = super::pointwise::MulSaved {
            a: Some(super::save(e, tokens)),
            b: None,
            a_dtype: DType::F32,
            b_dtype: DType::F32,
            shape: experts,
            name: Name {
                what: "grad",
                ..name
            },
        };
        e.push_node(Op::Mul(saved), [Edge::None, per_expert.edge, Edge::None])
    } else {
        Edge::None
    };
    e.release(tokens);
    e.drop_value(per_expert);
    let summed = V { t: total, edge };
    let aux = super::mul_scalar(
        e,
        summed,
        Name {
            what: "aux_loss",
            ..name
        },
    );
    e.drop_value(summed);
    aux
}

impl Backward for AuxSaved {
    /// SumBackward1's expand (a view) of the (E,) gradient, ToCopyBackward0's cast to the
    /// probabilities' dtype where `.float()` copied them ((N, E) contiguous), then
    /// `_softmax_backward_data`: its (N, E) result in the logits' dtype and, on CUDA,
    /// `grad_.contiguous()` of the expanded fp32 gradient (SoftMax.cu host_softmax_backward).
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let (shape, probs_dtype) = (e.shape(self.probs), e.dtype(self.probs));
        let alloc = |e: &mut Engine, dt| e.alloc(self.name, shape, dt, Category::Activations);
        let copy = if probs_dtype != DType::F32 {
            let c = alloc(e, probs_dtype);
            e.release(g);
            Some(c)
        } else {
            None
        };
        let gi = alloc(e, self.logits_dtype);
        match copy {
            Some(c) => e.release(c),
            None => {
                let contiguous = alloc(e, DType::F32);
                e.release(contiguous);
                e.release(g);
            }
        }
        e.release(self.probs);
        [Some(gi), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [Some(self.probs), None, None]
    }
}
