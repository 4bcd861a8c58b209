//! Hugging Face's Phi3ForCausalLM (Phi-3, Phi-3.5), written as the ops it runs, as
//! transformers' `models/phi3/modeling_phi3.py` reads. Llama's decoder with two fused Linears:
//!
//! ```python
//! # Phi3Attention.forward
//! qkv = self.qkv_proj(hidden_states)                    # (B, T, nh·hd + 2·nkv·hd)
//! query_pos = self.config.num_attention_heads * self.head_dim
//! query_states = qkv[..., :query_pos]                   # slices of qkv: views
//! key_states = qkv[..., query_pos : query_pos + self.num_key_value_heads * self.head_dim]
//! value_states = qkv[..., query_pos + self.num_key_value_heads * self.head_dim :]
//! query_states = query_states.view(hidden_shape).transpose(1, 2)   # and k, v
//! query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
//! # Phi3MLP.forward
//! up_states = self.gate_up_proj(hidden_states)          # (B, T, 2·I)
//! gate, up_states = up_states.chunk(2, dim=-1)
//! up_states = up_states * self.activation_fn(gate)
//! return self.down_proj(up_states)
//! ```
//! The decoder layer adds `resid_attn_dropout` and `resid_mlp_dropout` (nn.Dropout with
//! `resid_pdrop`, 0.0 in the released configs: ATen's `dropout` returns its input for p = 0,
//! so they allocate nothing and are not modelled).
//!
//! What autograd keeps differs from Llama's. Each of q, k and v is a *slice* of qkv, and
//! SliceBackward (`slice_backward` in torch/csrc/autograd/FunctionsManual.cpp) allocates a
//! zero tensor of qkv's full shape and copies the slice's gradient into it: three full-size
//! gradients summed into qkv's. `chunk` is SplitBackward: one cat of the two halves'
//! gradients. The saved v, gate and up are views, so they keep qkv and gate_up alive whole.

use super::hf::{input_embeddings, Shared};
use super::lora::{self, Params, Proj};
use super::{Head, Output};
use crate::config::TrainConfig;
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops::{self, Heads, RmsStyle};
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone, Copy)]
struct Layer {
    qkv: Proj,
    o: Proj,
    gate_up: Proj,
    down: Proj,
    input_ln: usize,
    post_ln: usize,
}

/// The hyper-parameters one layer's forward needs.
#[derive(Debug, Clone, Copy)]
struct Dims {
    nh: u64,
    nkv: u64,
    hd: u64,
    /// The MLP's hidden width (each half of gate_up_proj's output).
    i: u64,
    eager: bool,
}

#[derive(Debug, Clone, Copy)]
struct LayerCall {
    p: Layer,
    d: Dims,
    shared: Shared,
    layer: u32,
}

pub struct Phi3 {
    d: Dims,
    c: u64,
    checkpoint: super::Checkpointing,
    lora: bool,
    loss: super::hf_loss::HfLoss,
    embed: usize,
    layers: Vec<Layer>,
    norm: usize,
    lm_head: usize,
}

impl Phi3 {
    /// `model.to(device)`: parameters in module order (embed_tokens; each layer's o_proj,
    /// qkv_proj, gate_up_proj, down_proj, the two norms; the final norm, lm_head).
    pub fn build(e: &mut Engine, cfg: &TrainConfig) -> Phi3 {
        let (c, v) = (cfg.n_embd, cfg.vocab_size);
        let (nh, nkv, hd, i) = (cfg.n_head, cfg.kv_heads(), cfg.head_size(), cfg.mlp_width());
        let ps = Params::new(cfg);
        let embed = ps.weight(e, Name::top("embed_tokens", "weight"), &[v, c], true);
        let mut layers = Vec::with_capacity(cfg.n_layer as usize);
        for l in 0..cfg.n_layer as u32 {
            // Phi3Attention.__init__ creates o_proj before qkv_proj; no biases anywhere.
            let o = ps.linear(e, l, "self_attn.o_proj", (c, nh * hd), false);
            let op_size = nh * hd + 2 * nkv * hd;
            let qkv = ps.linear(e, l, "self_attn.qkv_proj", (op_size, c), false);
            let gate_up = ps.linear(e, l, "mlp.gate_up_proj", (2 * i, c), false);
            let down = ps.linear(e, l, "mlp.down_proj", (c, i), false);
            let norm =
                |e: &mut Engine, m| ps.weight(e, Name::layer_param(l, m, "weight"), &[c], false);
            let input_ln = norm(e, "input_layernorm");
            let post_ln = norm(e, "post_attention_layernorm");
            layers.push(Layer {
                qkv,
                o,
                gate_up,
                down,
                input_ln,
                post_ln,
            });
        }
        let norm = ps.weight(e, Name::top("norm", "weight"), &[c], false);
        e.alloc(
            Name::top("rotary_emb", "inv_freq"),
            Shape::new(&[cfg.rotary_dim() / 2]),
            crate::sim::DType::F32,
            Category::Other,
        );
        let lm_head = if cfg.tie_word_embeddings {
            embed
        } else {
            ps.weight(e, Name::top("lm_head", "weight"), &[v, c], true)
        };
        Phi3 {
            d: Dims {
                nh,
                nkv,
                hd,
                i,
                eager: !cfg.flash,
            },
            c,
            checkpoint: super::Checkpointing::new(cfg),
            lora: cfg.lora_rank > 0,
            loss: super::hf_loss::HfLoss::of(cfg),
            embed,
            layers,
            norm,
            lm_head,
        }
    }

    /// `outputs = model(input_ids, labels=labels)`: (logits, loss).
    pub fn forward(&self, e: &mut Engine, idx: T, head: Head) -> Output {
        let bt = e.shape(idx);
        let (b, t) = (bt.dims()[0], bt.dims()[1]);
        let inputs_embeds = input_embeddings(
            e,
            self.embed,
            idx,
            self.c,
            Name::top("embed_tokens", "out"),
            self.lora && self.checkpoint.any(),
        );
        // hidden_states = inputs_embeds: one tensor under two names.
        e.retain(inputs_embeds.t);
        let dtype = e.dtype(inputs_embeds.t);
        let shared = Shared::new(e, b, t, self.d.hd, dtype, self.d.eager);
        let calls = self.layers.iter().enumerate().map(|(l, p)| LayerCall {
            p: *p,
            d: self.d,
            shared,
            layer: l as u32,
        });
        let x = shared.run_layers(e, inputs_embeds, self.checkpoint, calls, LayerCall::forward);
        let xf = ops::rms_norm(e, x, self.norm, RmsStyle::Llama, Name::top("norm", "out"));
        e.drop_value(x);
        // Phi3Model.forward returns: its locals (inputs_embeds, the rotary tables, the mask,
        // cache_position) go.
        e.drop_value(inputs_embeds);
        shared.finish(e, xf, self.lm_head, head, (self.loss, false))
    }
}

impl LayerCall {
    fn name(&self, what: &'static str) -> Name {
        Name::layer(self.layer, what)
    }

    /// Phi3DecoderLayer.forward (the residual dropouts are identities at p = 0).
    fn forward(&self, e: &mut Engine, x: V) -> V {
        let (p, st) = (&self.p, RmsStyle::Llama);
        let h = ops::rms_norm(e, x, p.input_ln, st, self.name("input_layernorm.out"));
        let a = self.attn(e, h);
        e.drop_value(h);
        let x1 = ops::add(e, x, a, self.name("resid_attn"));
        e.drop_value(a);
        let post = self.name("post_attention_layernorm.out");
        let h2 = ops::rms_norm(e, x1, p.post_ln, st, post);
        let m = self.mlp(e, h2);
        e.drop_value(h2);
        let x2 = ops::add(e, x1, m, self.name("resid_mlp"));
        e.drop_value(m);
        e.drop_value(x1);
        x2
    }

    /// Phi3Attention.forward.
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
        let qkv = lora::forward(e, h, p.qkv, l, "self_attn.qkv_proj");
        // Slices, views and transposes of qkv: no storage of their own. Each one's backward is
        // a zero tensor of qkv's full shape (SliceBackward), which `heads_view`'s node makes.
        let slice = |e: &mut Engine, m| ops::heads_view(e, qkv, Name::at(l, m, "view"));
        let q = slice(e, "self_attn.query_states");
        let k = slice(e, "self_attn.key_states");
        let v = slice(e, "self_attn.value_states");
        e.drop_value(qkv);
        let sh = &self.shared;
        let rope = |e: &mut Engine, x: V, n: u64, what| {
            let shape = [b, n, t, d.hd];
            ops::rope(e, x, sh.cos, sh.sin, shape, d.hd, heads.name(what))
        };
        let qe = rope(e, q, d.nh, "q_embed");
        let ke = rope(e, k, d.nkv, "k_embed");
        e.drop_value(q);
        e.drop_value(k);
        let y = sh.attend(e, qe, ke, v, heads, d.eager);
        let o = lora::forward(e, y, p.o, l, "self_attn.o_proj");
        for x in [y, qe, ke, v] {
            e.drop_value(x);
        }
        o
    }

    /// Phi3MLP.forward: gate_up_proj, chunk(2), up * silu(gate), down_proj.
    fn mlp(&self, e: &mut Engine, h: V) -> V {
        let (p, l) = (&self.p, Some(self.layer));
        let gate_up = lora::forward(e, h, p.gate_up, l, "mlp.gate_up_proj");
        let s = e.shape(gate_up.t);
        let half = Shape::new(&[s.dims()[0], s.dims()[1], self.d.i]);
        let [gate, up] = ops::split2(e, gate_up, self.name("mlp.gate_up_proj.out"));
        e.drop_value(gate_up);
        let a = ops::silu_as(e, gate, half, self.name("mlp.act_fn"));
        e.drop_value(gate);
        let prod = ops::mul_as(e, up, a, half, self.name("mlp.up_states"));
        e.drop_value(up);
        e.drop_value(a);
        let out = lora::forward(e, prod, p.down, l, "mlp.down_proj");
        e.drop_value(prod);
        out
    }
}
