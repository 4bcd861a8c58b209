//! LlamaMLP (transformers' models/llama/modeling_llama.py): the gated MLP every Hugging Face
//! decoder here uses, and Qwen2-MoE's shared expert (Qwen2MoeMLP) too.

use super::lora::{self, Proj};
use crate::sim::engine::{Engine, V};
use crate::sim::ops;
use crate::sim::timeline::Name;

/// The modules of a gated MLP: gate_proj, act_fn, up_proj, the gate × up product, down_proj.
pub struct GatedNames {
    pub gate: &'static str,
    pub act: &'static str,
    pub up: &'static str,
    pub prod: &'static str,
    pub down: &'static str,
}

/// A decoder layer's own MLP (`layer{l}.mlp`).
pub const MLP_NAMES: GatedNames = GatedNames {
    gate: "mlp.gate_proj",
    act: "mlp.act_fn",
    up: "mlp.up_proj",
    prod: "mlp.gate_up",
    down: "mlp.down_proj",
};

/// LlamaMLP.forward (and Qwen2MoeMLP.forward, the shared expert's):
/// `down_proj(act_fn(gate_proj(x)) * up_proj(x))`, SiLU or Gemma's GELU.
pub fn gated_mlp(
    e: &mut Engine,
    h: V,
    [gate, up, down]: [Proj; 3],
    gelu: bool,
    layer: u32,
    n: &GatedNames,
) -> V {
    let l = Some(layer);
    let g = lora::forward(e, h, gate, l, n.gate);
    let a = if gelu {
        ops::gelu(e, g, Name::layer(layer, n.act))
    } else {
        ops::silu(e, g, Name::layer(layer, n.act))
    };
    e.drop_value(g);
    let u = lora::forward(e, h, up, l, n.up);
    let prod = ops::mul(e, a, u, Name::layer(layer, n.prod));
    e.drop_value(a);
    e.drop_value(u);
    let out = lora::forward(e, prod, down, l, n.down);
    e.drop_value(prod);
    out
}
