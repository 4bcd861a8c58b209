//! One decoder layer of the Llama family (llama.rs builds the model), written as the ops it
//! runs. LlamaDecoderLayer.forward (modeling_llama.py), with the variants' differences
//! (variant.rs) where their modeling files put them:
//!
//! ```python
//! residual = hidden_states
//! hidden_states = self.input_layernorm(hidden_states)          # Olmo2: none
//! hidden_states, _ = self.self_attn(hidden_states, ...)
//! hidden_states = self.post_attention_layernorm(hidden_states) # Gemma 2/3, Olmo2: here
//! hidden_states = residual + hidden_states
//! residual = hidden_states
//! hidden_states = self.pre_feedforward_layernorm(hidden_states) # Llama: post_attention_layernorm
//! hidden_states = self.mlp(hidden_states)
//! hidden_states = self.post_feedforward_layernorm(hidden_states) # Gemma 2/3, Olmo2
//! hidden_states = residual + hidden_states
//! ```
//! Each `drop_value` is where a Python name goes out of scope or is rebound.

use super::hf::{Attend, Shared};
use super::lora::{self, Proj};
use super::mlp::{gated_mlp, MLP_NAMES};
use super::variant::{Norms, QkNorm, Variant};
use crate::sim::engine::{Engine, V};
use crate::sim::ops::{self, Heads};
use crate::sim::timeline::{Name, Shape};

/// One layer's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    /// LlamaMLP's gate_proj, up_proj, down_proj, or Mixtral's sparse MoE block (moe.rs).
    pub mlp: Mlp,
    /// input_layernorm, post_attention_layernorm, pre_feedforward_layernorm,
    /// post_feedforward_layernorm, where the variant has them.
    pub norms: [Option<usize>; 4],
    /// q_norm, k_norm weights.
    pub qk_norm: Option<(usize, usize)>,
    /// A sliding-window layer (Gemma 2/3's layer_types).
    pub sliding: bool,
}

/// A layer's feed-forward block. (Copied by value like `Layer`, one per layer: the size
/// difference between the variants costs nothing worth a Box.)
#[derive(Debug, Clone, Copy)]
#[allow(clippy::large_enum_variant)]
pub enum Mlp {
    Dense { gate: Proj, up: Proj, down: Proj },
    Moe(super::moe::MoeWeights),
}

/// The hyper-parameters one layer's forward needs.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub nh: u64,
    pub nkv: u64,
    pub hd: u64,
    pub var: Variant,
}

#[derive(Debug, Clone, Copy)]
pub struct LayerCall {
    pub p: Layer,
    pub d: Dims,
    pub shared: Shared,
    pub layer: u32,
}

impl LayerCall {
    fn name(&self, what: &'static str) -> Name {
        Name::layer(self.layer, what)
    }

    /// The RMSNorm `which` (0..4, the order of `Layer::norms`) of `x`, or x itself (one more
    /// reference) where the variant has no such norm.
    fn norm(&self, e: &mut Engine, x: V, which: usize) -> V {
        const OUT: [&str; 4] = [
            "input_layernorm.out",
            "post_attention_layernorm.out",
            "pre_feedforward_layernorm.out",
            "post_feedforward_layernorm.out",
        ];
        match self.p.norms[which] {
            Some(w) => ops::rms_norm(e, x, w, self.d.var.style, self.name(OUT[which])),
            None => {
                e.retain(x.t);
                x
            }
        }
    }

    /// The decoder layer's forward.
    pub fn forward(&self, e: &mut Engine, x: V) -> V {
        let h = self.norm(e, x, 0);
        let a = self.attn(e, h);
        e.drop_value(h);
        // Llama's post_attention_layernorm is the MLP's input norm; the others' normalises
        // the attention's output.
        let pre = self.d.var.norms == Norms::Pre;
        let a_normed = if pre { a } else { self.norm(e, a, 1) };
        if !pre {
            e.drop_value(a);
        }
        let x1 = ops::add(e, x, a_normed, self.name("resid_attn"));
        e.drop_value(a_normed);
        let h2 = self.norm(e, x1, if pre { 1 } else { 2 });
        let m = self.mlp(e, h2);
        e.drop_value(h2);
        let m_normed = if self.p.norms[3].is_some() {
            let n = self.norm(e, m, 3);
            e.drop_value(m);
            n
        } else {
            m
        };
        let x2 = ops::add(e, x1, m_normed, self.name("resid_mlp"));
        e.drop_value(m_normed);
        e.drop_value(x1);
        x2
    }

    /// LlamaAttention.forward (Qwen3, Gemma 3 and Olmo2 normalise q and k first).
    fn attn(&self, e: &mut Engine, h: V) -> V {
        let (p, d, l) = (&self.p, &self.d, Some(self.layer));
        let s = e.shape(h.t);
        let (b, t) = (s.dims()[0], s.dims()[1]);
        let heads = Heads {
            b,
            t,
            nh: d.nh,
            nkv: d.nkv,
            hd: d.hd,
            layer: l,
            module: "self_attn",
        };
        // q_proj(h).view(B, T, -1, hd).transpose(1, 2), and the same for k and v; Olmo2
        // normalises q_proj's and k_proj's whole outputs first.
        let q = self.projected(e, h, p.q, "self_attn.q_proj", 0);
        let k = self.projected(e, h, p.k, "self_attn.k_proj", 1);
        let v = lora::forward(e, h, p.v, l, "self_attn.v_proj");
        let mut qv = ops::heads_view(e, q, heads.name("query_states"));
        let mut kv = ops::heads_view(e, k, heads.name("key_states"));
        e.drop_value(q);
        e.drop_value(k);
        if let (QkNorm::PerHead, Some((qn, kn))) = (d.var.qk_norm, p.qk_norm) {
            (qv, kv) = self.per_head_norms(e, (qv, kv), (qn, kn), (b, t));
        }
        // apply_rotary_pos_emb(query_states, key_states, cos, sin)
        let sh = &self.shared;
        let (cos, sin) = sh.rope_tables(p.sliding);
        let rope = |e: &mut Engine, x: V, heads_n: u64, what| {
            ops::rope(
                e,
                x,
                cos,
                sin,
                [b, heads_n, t, d.hd],
                d.hd,
                heads.name(what),
            )
        };
        let qe = rope(e, qv, d.nh, "q_embed");
        let ke = rope(e, kv, d.nkv, "k_embed");
        e.drop_value(qv);
        e.drop_value(kv);
        let how = Attend {
            eager: d.var.eager,
            softcap: d.var.attn_softcap,
            sliding: p.sliding,
            window: d.var.window,
        };
        let y = sh.attend_with(e, [qe, ke, v], heads, how);
        let o = lora::forward(e, y, p.o, l, "self_attn.o_proj");
        // The attention forward's locals: the rotated q and k, v, attn_output.
        for x in [y, qe, ke, v] {
            e.drop_value(x);
        }
        o
    }

    /// A projection of `h`; with Olmo2's whole-projection norms, `q_norm(q_proj(h))` (or
    /// k's): an RMSNorm over all its channels, whose output replaces the projection's.
    fn projected(&self, e: &mut Engine, h: V, w: Proj, module: &'static str, which: usize) -> V {
        let l = Some(self.layer);
        let x = lora::forward(e, h, w, l, module);
        let (QkNorm::Whole, Some((qn, kn))) = (self.d.var.qk_norm, self.p.qk_norm) else {
            return x;
        };
        let (weight, name) = match which {
            0 => (qn, Name::at(l, "self_attn.q_norm", "out")),
            _ => (kn, Name::at(l, "self_attn.k_norm", "out")),
        };
        let normed = ops::rms_norm(e, x, weight, self.d.var.style, name);
        e.drop_value(x);
        normed
    }

    /// Qwen3Attention / Gemma3Attention: `q_norm` and `k_norm` over each head — an RMSNorm
    /// over head_dim (fp32 statistics; Qwen3's fp32 weight times the bf16 cast promotes its
    /// output to fp32, Gemma's `type_as` keeps the input's dtype). Qwen3 normalises the
    /// (B, T, h, hd) view, Gemma 3 the transposed (B, h, T, hd) one.
    fn per_head_norms(
        &self,
        e: &mut Engine,
        (qv, kv): (V, V),
        (qn, kn): (usize, usize),
        (b, t): (u64, u64),
    ) -> (V, V) {
        let (d, l) = (&self.d, Some(self.layer));
        let transposed = self.d.var.style == ops::RmsStyle::Gemma;
        let by_head = |n| {
            if transposed {
                Shape::new(&[b, n, t, d.hd])
            } else {
                Shape::new(&[b, t, n, d.hd])
            }
        };
        let (qname, kname) = (
            Name::at(l, "self_attn.q_norm", "out"),
            Name::at(l, "self_attn.k_norm", "out"),
        );
        let st = d.var.style;
        let q_normed = ops::rms_norm_as(e, qv, by_head(d.nh), qn, st, qname);
        let k_normed = ops::rms_norm_as(e, kv, by_head(d.nkv), kn, st, kname);
        e.drop_value(qv);
        e.drop_value(kv);
        (q_normed, k_normed)
    }

    /// LlamaMLP.forward, or the layer's sparse MoE block (moe.rs).
    fn mlp(&self, e: &mut Engine, h: V) -> V {
        match self.p.mlp {
            Mlp::Dense { gate, up, down } => {
                let projs = [gate, up, down];
                gated_mlp(e, h, projs, self.d.var.gelu, self.layer, &MLP_NAMES)
            }
            Mlp::Moe(w) => super::moe::sparse_moe_block(e, h, w, self.layer),
        }
    }
}
