//! Mixtral's sparse mixture-of-experts block, which replaces the MLP in Llama's layer
//! (llama_layer.rs), as transformers 5.x runs it by default (read in 5.25.0,
//! models/mixtral/modeling_mixtral.py and integrations/moe.py):
//!
//! ```python
//! # MixtralSparseMoeBlock.forward (router_jitter_noise = 0.0: no jitter)
//! hidden_states = hidden_states.view(-1, hidden_dim)                      # (N, C)
//! _, top_k_weights, top_k_index = self.gate(hidden_states)                 # MixtralTopKRouter
//! hidden_states = self.experts(hidden_states, top_k_index, top_k_weights)  # grouped_mm path
//! # grouped_mm_experts_forward, S = N * top_k:
//! expert_ids_g, perm = torch.sort(top_k_index.reshape(-1))
//! selected_hidden_states_g = hidden_states[perm // num_top_k]             # (S, C)
//! sample_weights_g = top_k_weights.reshape(-1)[perm]                       # (S,)
//! tokens_per_expert = torch.histc(expert_ids_g.int(), bins=E, ...); offsets = cumsum(int32)
//! proj_out = grouped_mm(selected.to(w.dtype), gate_up_proj.transpose(-2, -1), offsets)
//! proj_out = act_fn(gate) * up            # gate, up = proj_out.chunk(2, dim=-1)
//! proj_out = grouped_mm(proj_out, down_proj.transpose(-2, -1), offsets)   # (S, C)
//! weighted_out = proj_out * sample_weights_g.unsqueeze(-1)
//! inv_perm = torch.empty_like(perm); inv_perm[perm] = torch.arange(S)
//! weighted_out = weighted_out[inv_perm]
//! return weighted_out.view(N, top_k, C).sum(dim=1).to(hidden_states.dtype)
//! ```
//! Every buffer has N or S rows whatever the routing: a balanced and a skewed batch cost
//! the same here (transformers 4.x's per-expert loop did not; it is refused, moe_keys.rs).
//! `output_router_logits` is False by default (MixtralConfig): no auxiliary loss.
//!
//! Qwen2-MoE's block (models/qwen2_moe/modeling_qwen2_moe.py, `Qwen2MoeSparseMoeBlock`) runs
//! a shared expert beside the routed ones and adds it, gated per token:
//!
//! ```python
//! hidden_states_reshaped = hidden_states.view(-1, hidden_dim)                 # (N, C)
//! shared_expert_output = self.shared_expert(hidden_states_reshaped)            # Qwen2MoeMLP
//! _, routing_weights, selected_experts = self.gate(hidden_states_reshaped)     # Qwen3's router
//! expert_output = self.experts(hidden_states_reshaped, selected_experts, routing_weights)
//! shared_expert_output = F.sigmoid(self.shared_expert_gate(hidden_states_reshaped)) * shared_expert_output
//! expert_output = expert_output + shared_expert_output
//! return expert_output.reshape(batch_size, sequence_length, hidden_dim)
//! ```

use super::lora::{self, Proj};
use super::mlp::{gated_mlp, GatedNames};
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops;
use crate::sim::timeline::{Category, Name, Shape};

/// One MoE layer's parameters: MixtralTopKRouter.weight (E, C), MixtralExperts.gate_up_proj
/// (E, 2I, C) and down_proj (E, C, I).
#[derive(Debug, Clone, Copy)]
pub struct MoeWeights {
    pub router: usize,
    pub gate_up: usize,
    pub down: usize,
    pub top_k: u64,
    pub router_kind: RouterKind,
    /// `output_router_logits`: the model's output keeps the router's logits.
    pub keep_logits: bool,
    /// Qwen2-MoE's shared expert.
    pub shared: Option<SharedExpert>,
}

/// Qwen2MoeSparseMoeBlock's `shared_expert` (a Qwen2MoeMLP: gate_proj, up_proj, down_proj of
/// shared_expert_intermediate_size) and `shared_expert_gate` (Linear(C, 1, bias=False)).
#[derive(Debug, Clone, Copy)]
pub struct SharedExpert {
    pub mlp: [Proj; 3],
    pub gate: Proj,
}

const SHARED_NAMES: GatedNames = GatedNames {
    gate: "mlp.shared_expert.gate_proj",
    act: "mlp.shared_expert.act_fn",
    up: "mlp.shared_expert.up_proj",
    prod: "mlp.shared_expert.gate_up",
    down: "mlp.shared_expert.down_proj",
};

/// How the router turns its logits into routing weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    /// MixtralTopKRouter.forward: `softmax(router_logits.float())`, always renormalised, the
    /// weights left in fp32.
    Mixtral,
    /// Qwen3MoeTopKRouter.forward (modeling_qwen3_moe.py, 5.25.0): `softmax(router_logits,
    /// dtype=torch.float)` (no fp32 copy of the logits), renormalised when `norm_topk_prob`,
    /// then `router_top_value.to(router_logits.dtype)`: the weights in the logits' dtype.
    Qwen3Moe { norm: bool },
}

/// MixtralSparseMoeBlock.forward / Qwen3MoeSparseMoeBlock.forward /
/// Qwen2MoeSparseMoeBlock.forward on h (B, T, C); returns (B, T, C) in h's dtype (fp32 where
/// the shared expert's bf16 output is added to fp32 routed rows).
pub fn sparse_moe_block(e: &mut Engine, h: V, w: MoeWeights, layer: u32) -> V {
    let shared = w
        .shared
        .map(|s| (s, gated_mlp(e, h, s.mlp, false, layer, &SHARED_NAMES)));
    let (logits, weights, indices) = route(e, h, w, layer);
    let routed = routed_experts(e, h, w, weights, layer);
    let out = match shared {
        Some((s, shared_out)) => add_shared(e, routed, (h, shared_out), s.gate, layer),
        None => routed,
    };
    // The block's locals (`_` = router_logits, the top-k weights and indices) go as it
    // returns; with output_router_logits the model's OutputRecorder holds the logits (not
    // while a checkpointed block is recomputed in the backward: that forward's outputs go).
    keep_or_drop_logits(e, logits, w.keep_logits);
    e.drop_value(weights);
    e.release(indices);
    out
}

/// OutputRecorder(*TopKRouter, index=0) appends the router's logits to the output's
/// `router_logits` (utils/output_capturing.py). Under a checkpoint without reentrancy the
/// forward runs with autograd on in torch, off in the engine: the logits still require a
/// gradient; reentrant, they do not (the block's forward ran under no_grad).
fn keep_or_drop_logits(e: &mut Engine, logits: V, keep: bool) {
    use crate::sim::timeline::Phase;
    if !keep || e.phase == Phase::Backward {
        e.drop_value(logits);
        return;
    }
    let requires_grad = logits.edge != crate::sim::autograd::Edge::None
        || (e.in_checkpoint_forward && !e.reentrant_checkpoint);
    e.router_logits.push(ops::moe_aux::RouterLogits {
        v: logits,
        requires_grad,
    });
}

/// `F.sigmoid(self.shared_expert_gate(x)) * shared_expert_output` ((N, 1) times (N, C), in
/// the projections' autocast dtype; the sigmoid keeps its result, the multiply both
/// factors), then `expert_output + shared_expert_output` (promoted to the routed output's
/// dtype). The multiply is `weigh`'s broadcast product with the (N, 1) factor first: its
/// backward makes the same two (N, C) gradients before summing the gate's to (N, 1).
fn add_shared(e: &mut Engine, routed: V, (h, shared_out): (V, V), gate: Proj, layer: u32) -> V {
    let l = Some(layer);
    let logit = lora::forward(e, h, gate, l, "mlp.shared_expert_gate");
    let sig = ops::sigmoid(
        e,
        logit,
        Name::layer(layer, "mlp.shared_expert_gate.sigmoid"),
    );
    e.drop_value(logit);
    let gated_name = Name::layer(layer, "mlp.shared_expert_output");
    let gated = ops::moe::weigh(e, shared_out, sig, gated_name);
    e.drop_value(sig);
    e.drop_value(shared_out);
    let sum = ops::add(e, routed, gated, Name::layer(layer, "mlp.expert_output"));
    e.drop_value(routed);
    // shared_expert_output goes as the block returns.
    e.drop_value(gated);
    sum
}

/// The routed experts (integrations/moe.py `grouped_mm_experts_forward`) on h's N rows:
/// returns their weighted sum per token in h's dtype; the function's locals go as it returns.
fn routed_experts(e: &mut Engine, h: V, w: MoeWeights, weights: V, layer: u32) -> V {
    let l = Some(layer);
    // A tensor whose node names its gradient gets the whole name as its module, so that the
    // gradient reads `layer0.mlp.<tensor>.grad`.
    let name = |module| Name::at(l, module, "");
    let d = e.shape(h.t);
    let c = *d.dims().last().unwrap_or(&1);
    let n = d.numel().unwrap_or(0) / c.max(1);
    let (experts, k) = (e.params[w.router].shape.dims()[0], w.top_k);
    let s = n * k;
    // grouped_mm_experts_forward's index bookkeeping (no grad).
    let vec = |e: &mut Engine, what, len, dt| {
        let n = Name::at(l, "mlp", what);
        e.alloc(n, Shape::new(&[len]), dt, Category::Activations)
    };
    let expert_ids_g = vec(e, "expert_ids_g", s, DType::I64);
    let perm = vec(e, "perm", s, DType::I64);
    let token_of = vec(e, "perm_div_top_k", s, DType::I64);
    let rows = Shape::new(&[s, c]);
    let selected =
        ops::moe::gather_rows(e, h, token_of, rows, name("mlp.selected_hidden_states_g"));
    e.release(token_of);
    let sample_weights_name = name("mlp.sample_weights_g");
    let sample_weights =
        ops::moe::gather_rows(e, weights, perm, Shape::new(&[s]), sample_weights_name);
    let histc_input = vec(e, "histc_input", s, DType::I32);
    let tokens_per_expert = vec(e, "tokens_per_expert", experts, DType::I32);
    let offsets = vec(e, "offsets", experts, DType::I32);
    let out = experts_mlp(e, selected, w, offsets, layer);
    e.drop_value(selected);
    let weighted = ops::moe::weigh(e, out, sample_weights, name("mlp.weighted_out"));
    e.drop_value(out);
    e.drop_value(sample_weights);
    let inv_perm = vec(e, "inv_perm", s, DType::I64);
    let arange = vec(e, "arange", s, DType::I64);
    e.release(arange);
    let restored_name = name("mlp.weighted_out_restored");
    let restored = ops::moe::gather_rows(e, weighted, inv_perm, rows, restored_name);
    e.drop_value(weighted);
    let summed = top_k_sum(e, restored, d, name("mlp.final_hidden_states"));
    e.drop_value(restored);
    let result = ops::to_dtype(e, summed, e.dtype(h.t), name("mlp.final_hidden_states.to"));
    e.drop_value(summed);
    let locals: [T; 6] = [
        expert_ids_g,
        perm,
        histc_input,
        tokens_per_expert,
        offsets,
        inv_perm,
    ];
    for t in locals {
        e.release(t);
    }
    result
}

/// The router (its module's forward): the logits by F.linear under autocast (returned: the
/// block's `_` local), the routing weights and the expert indices.
fn route(e: &mut Engine, h: V, w: MoeWeights, layer: u32) -> (V, V, T) {
    let l = Some(layer);
    let logits = ops::linear(e, h, w.router, None, l, "mlp.gate");
    let router = Name::at(l, "mlp.gate", "");
    let k = w.top_k;
    match w.router_kind {
        RouterKind::Mixtral => {
            let name = Name::at(l, "mlp", "router_logits.float");
            let logits_f32 = ops::to_dtype(e, logits, DType::F32, name);
            let (weights, indices) = ops::moe::router_topk(e, logits_f32, k, true, router);
            e.drop_value(logits_f32);
            (logits, weights, indices)
        }
        RouterKind::Qwen3Moe { norm } => {
            let (top, indices) = ops::moe::router_topk(e, logits, k, norm, router);
            let name = Name::at(l, "mlp.gate", "top_k_weights.to");
            let weights = ops::to_dtype(e, top, e.dtype(logits.t), name);
            e.drop_value(top);
            (logits, weights, indices)
        }
    }
}

/// The experts' SwiGLU on the S gathered rows: gate_up grouped matmul, `act_fn(gate) * up`
/// on the halves of its output (views), down grouped matmul.
fn experts_mlp(e: &mut Engine, x: V, w: MoeWeights, offsets: T, layer: u32) -> V {
    let name = |module| Name::at(Some(layer), module, "");
    let gate_up = ops::moe::grouped_mm(
        e,
        x,
        w.gate_up,
        offsets,
        name("mlp.experts.gate_up_proj.out"),
    );
    let gs = e.shape(gate_up.t).dims().to_vec();
    let half = Shape::new(&[gs[0], gs[1] / 2]);
    let [gate, up] = ops::split2(e, gate_up, name("mlp.experts.gate_up_proj.out"));
    e.drop_value(gate_up);
    let a = ops::silu_as(e, gate, half, name("mlp.experts.act_fn"));
    e.drop_value(gate);
    let prod = ops::mul_as(e, a, up, half, name("mlp.experts.gate_up"));
    e.drop_value(a);
    e.drop_value(up);
    let out = ops::moe::grouped_mm(e, prod, w.down, offsets, name("mlp.experts.down_proj.out"));
    e.drop_value(prod);
    out
}

/// `weighted_out.view(N, top_k, C).sum(dim=1)` viewed back as the block's (B, T, C):
/// SumBackward expands the gradient and ViewBackward's reshape of that expand copies it to
/// (S, C) — the node's one allocation.
fn top_k_sum(e: &mut Engine, x: V, out: Shape, name: Name) -> V {
    ops::copy_reshaped(e, x, out, name)
}
