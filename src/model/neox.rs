//! Hugging Face's GPTNeoXForCausalLM (Pythia), written as the ops it runs:
//!
//! ```python
//! hidden_states = self.emb_dropout(self.embed_in(input_ids))
//! position_embeddings = self.rotary_emb(hidden_states, position_ids)   # rotary_pct of head_dim
//! for layer in self.layers:
//!     attn_output, _ = layer.attention(layer.input_layernorm(hidden_states), ...)
//!     if use_parallel_residual:   # x = x + attn(ln1(x)) + mlp(ln2(x))
//!         mlp_output = layer.mlp(layer.post_attention_layernorm(hidden_states))
//!         hidden_states = mlp_output + attn_output + hidden_states
//!     else:                       # x = x + attn(ln1(x)); x = x + mlp(ln2(x))
//!         attn_output = attn_output + hidden_states
//!         hidden_states = layer.mlp(layer.post_attention_layernorm(attn_output)) + attn_output
//! logits = self.embed_out(self.final_layer_norm(hidden_states))
//! ```
//! The attention projects q, k, v with one `query_key_value` Linear, views it as
//! (B, nh, T, 3·hd) and chunks it; rotary rotates the first `rotary_pct · hd` dims of q and k.

use super::hf::{input_embeddings, Shared};
use super::lora::{self, Params, Proj};
use super::{Head, Output};
use crate::config::TrainConfig;
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops::{self, Heads};
use crate::sim::timeline::{Category, Name, Shape};

type Lin = (usize, Option<usize>);

#[derive(Debug, Clone, Copy)]
struct Layer {
    ln1: Lin,
    ln2: Lin,
    qkv: Proj,
    dense: Proj,
    fc_in: Proj,
    fc_out: Proj,
}

#[derive(Debug, Clone, Copy)]
struct LayerCall {
    p: Layer,
    nh: u64,
    hd: u64,
    rot: u64,
    parallel: bool,
    eager: bool,
    shared: Shared,
    layer: u32,
}

pub struct Neox {
    c: u64,
    nh: u64,
    hd: u64,
    rot: u64,
    parallel: bool,
    eager: bool,
    checkpoint: super::Checkpointing,
    lora: bool,
    loss: super::hf_loss::HfLoss,
    embed_in: usize,
    layers: Vec<Layer>,
    final_ln: Lin,
    embed_out: usize,
}

impl Neox {
    /// Parameters in module order: embed_in, each layer's two LayerNorms, attention and MLP,
    /// the final LayerNorm, the rotary buffer, embed_out.
    pub fn build(e: &mut Engine, cfg: &TrainConfig) -> Neox {
        let (c, v, i) = (cfg.n_embd, cfg.vocab_size, cfg.mlp_width());
        let bias = cfg.bias;
        let ps = Params::new(cfg);
        let lin = |e: &mut Engine, l: u32, m: &'static str, out: u64, inp: u64| {
            ps.linear(e, l, m, (out, inp), bias)
        };
        let norm = |e: &mut Engine, l: Option<u32>, m: &'static str| {
            let w = ps.weight(e, Name::at(l, m, "weight"), &[c], false);
            let b = bias.then(|| ps.weight(e, Name::at(l, m, "bias"), &[c], false));
            (w, b)
        };
        let embed_in = ps.weight(e, Name::top("embed_in", "weight"), &[v, c], true);
        let mut layers = Vec::with_capacity(cfg.n_layer as usize);
        for l in 0..cfg.n_layer as u32 {
            let ln1 = norm(e, Some(l), "input_layernorm");
            let ln2 = norm(e, Some(l), "post_attention_layernorm");
            let qkv = lin(e, l, "attention.query_key_value", 3 * c, c);
            let dense = lin(e, l, "attention.dense", c, c);
            let fc_in = lin(e, l, "mlp.dense_h_to_4h", i, c);
            let fc_out = lin(e, l, "mlp.dense_4h_to_h", c, i);
            layers.push(Layer {
                ln1,
                ln2,
                qkv,
                dense,
                fc_in,
                fc_out,
            });
        }
        let final_ln = norm(e, None, "final_layer_norm");
        e.alloc(
            Name::top("rotary_emb", "inv_freq"),
            Shape::new(&[cfg.rotary_dim() / 2]),
            crate::sim::DType::F32,
            Category::Other,
        );
        let embed_out = if cfg.tie_word_embeddings {
            embed_in
        } else {
            ps.weight(e, Name::top("embed_out", "weight"), &[v, c], true)
        };
        Neox {
            c,
            nh: cfg.n_head,
            hd: cfg.head_size(),
            rot: cfg.rotary_dim(),
            parallel: cfg.parallel_residual,
            eager: !cfg.flash,
            checkpoint: super::Checkpointing::new(cfg),
            lora: cfg.lora_rank > 0,
            loss: super::hf_loss::HfLoss::of(cfg),
            embed_in,
            layers,
            final_ln,
            embed_out,
        }
    }

    pub fn forward(&self, e: &mut Engine, idx: T, head: Head) -> Output {
        let bt = e.shape(idx);
        let (b, t) = (bt.dims()[0], bt.dims()[1]);
        let mut x = input_embeddings(
            e,
            self.embed_in,
            idx,
            self.c,
            Name::top("embed_in", "out"),
            self.lora && self.checkpoint.any(),
        );
        let dtype = e.dtype(x.t);
        let shared = Shared::new(e, b, t, self.rot, dtype, self.eager);
        let calls = self.layers.iter().enumerate().map(|(l, p)| LayerCall {
            p: *p,
            nh: self.nh,
            hd: self.hd,
            rot: self.rot,
            parallel: self.parallel,
            eager: self.eager,
            shared,
            layer: l as u32,
        });
        x = shared.run_layers(e, x, self.checkpoint, calls, LayerCall::forward);
        let (w, bias) = self.final_ln;
        let xf = ops::layer_norm(e, x, w, bias, Name::top("final_layer_norm", "out"));
        e.drop_value(x);
        shared.finish(e, xf, self.embed_out, head, (self.loss, false))
    }
}

impl LayerCall {
    fn name(&self, what: &'static str) -> Name {
        Name::layer(self.layer, what)
    }

    /// GPTNeoXLayer.forward.
    fn forward(&self, e: &mut Engine, x: V) -> V {
        let p = &self.p;
        let h = ops::layer_norm(e, x, p.ln1.0, p.ln1.1, self.name("input_layernorm.out"));
        let a = self.attn(e, h);
        e.drop_value(h);
        if self.parallel {
            let h2 = ops::layer_norm(
                e,
                x,
                p.ln2.0,
                p.ln2.1,
                self.name("post_attention_layernorm.out"),
            );
            let m = self.mlp(e, h2);
            e.drop_value(h2);
            // mlp_output + attn_output + hidden_states, left to right.
            let s = ops::add(e, m, a, self.name("mlp_plus_attn"));
            e.drop_value(m);
            e.drop_value(a);
            let out = ops::add(e, s, x, self.name("resid"));
            e.drop_value(s);
            out
        } else {
            let a1 = ops::add(e, a, x, self.name("resid_attn"));
            e.drop_value(a);
            let h2 = ops::layer_norm(
                e,
                a1,
                p.ln2.0,
                p.ln2.1,
                self.name("post_attention_layernorm.out"),
            );
            let m = self.mlp(e, h2);
            e.drop_value(h2);
            let out = ops::add(e, m, a1, self.name("resid_mlp"));
            e.drop_value(m);
            e.drop_value(a1);
            out
        }
    }

    /// GPTNeoXAttention.forward.
    fn attn(&self, e: &mut Engine, h: V) -> V {
        let (p, l) = (&self.p, Some(self.layer));
        let s = e.shape(h.t);
        let (b, t) = (s.dims()[0], s.dims()[1]);
        let heads = Heads {
            b,
            t,
            nh: self.nh,
            nkv: self.nh,
            hd: self.hd,
            layer: l,
            module: "attention",
        };
        let qkv = lora::forward(e, h, p.qkv, l, "attention.query_key_value");
        let [q, k, v] = ops::split3(e, qkv, heads.name("qkv"));
        let sh = &self.shared;
        let dims = [b, self.nh, t, self.hd];
        let qe = ops::rope(e, q, sh.cos, sh.sin, dims, self.rot, heads.name("q_embed"));
        let ke = ops::rope(e, k, sh.cos, sh.sin, dims, self.rot, heads.name("k_embed"));
        e.drop_value(q);
        e.drop_value(k);
        let y = sh.attend(e, qe, ke, v, heads, self.eager);
        let o = lora::forward(e, y, p.dense, l, "attention.dense");
        for x in [y, qe, ke, v, qkv] {
            e.drop_value(x);
        }
        o
    }

    /// GPTNeoXMLP.forward: dense_4h_to_h(act(dense_h_to_4h(x))), GELU.
    fn mlp(&self, e: &mut Engine, h: V) -> V {
        let (p, l) = (&self.p, Some(self.layer));
        let f = lora::forward(e, h, p.fc_in, l, "mlp.dense_h_to_4h");
        let g = ops::gelu(e, f, self.name("mlp.act"));
        e.drop_value(f);
        let o = lora::forward(e, g, p.fc_out, l, "mlp.dense_4h_to_h");
        e.drop_value(g);
        o
    }
}
