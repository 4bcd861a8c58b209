//! Hugging Face's LlamaForCausalLM (and Mistral, Qwen2, Gemma, Qwen3, which differ in a few places),
//! written as the ops it runs, top to bottom, as modeling_llama.py reads:
//!
//! ```python
//! inputs_embeds = self.embed_tokens(input_ids)          # Gemma: * hidden_size ** 0.5
//! position_embeddings = self.rotary_emb(hidden_states, position_ids)
//! for decoder_layer in self.layers:
//!     residual = hidden_states
//!     hidden_states = self.input_layernorm(hidden_states)
//!     hidden_states, _ = self.self_attn(hidden_states, position_embeddings, ...)
//!     hidden_states = residual + hidden_states
//!     residual = hidden_states
//!     hidden_states = self.post_attention_layernorm(hidden_states)
//!     hidden_states = self.mlp(hidden_states)    # down_proj(act_fn(gate_proj(x)) * up_proj(x))
//!     hidden_states = residual + hidden_states
//! hidden_states = self.norm(hidden_states)
//! logits = self.lm_head(hidden_states); loss = ForCausalLMLoss(logits, labels)
//! ```
//! Weights are fp32 master weights under autocast (the training loop is train.rs's), so the
//! residual stream and the norms are fp32 and every projection casts its input to bf16.
//! `use_cache=False` (training); attention is HF's default `sdpa`, or `eager` with
//! `flash = False`. Each `drop_value` is where a Python name goes out of scope or is rebound.

use super::hf::{causal_lm_head, input_embeddings, Shared};
use super::lora::{self, Params, Proj};
use super::{Head, Output};
use crate::config::{ModelType, TrainConfig};
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops::{self, Heads, RmsStyle};
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone, Copy)]
struct Layer {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    gate: Proj,
    up: Proj,
    down: Proj,
    input_ln: usize,
    post_ln: usize,
    /// Qwen3: RMSNorm weights (head_dim) over each head of q and of k.
    qk_norm: Option<(usize, usize)>,
}

/// The hyper-parameters one layer's forward needs.
#[derive(Debug, Clone, Copy)]
struct Dims {
    nh: u64,
    nkv: u64,
    hd: u64,
    style: RmsStyle,
    /// Gemma's MLP: GELU (tanh) instead of SiLU.
    gelu: bool,
    eager: bool,
}

#[derive(Debug, Clone, Copy)]
struct LayerCall {
    p: Layer,
    d: Dims,
    shared: Shared,
    layer: u32,
}

pub struct Llama {
    d: Dims,
    embed_scale: bool,
    c: u64,
    checkpoint: super::Checkpointing,
    lora: bool,
    loss: super::hf_loss::HfLoss,
    embed: usize,
    layers: Vec<Layer>,
    norm: usize,
    lm_head: usize,
}

impl Llama {
    /// `model.to(device)`: parameters in module order (embed_tokens, each layer's self_attn,
    /// mlp and norms, the final norm, the rotary module's buffer, lm_head).
    pub fn build(e: &mut Engine, cfg: &TrainConfig) -> Llama {
        let (c, v) = (cfg.n_embd, cfg.vocab_size);
        let (nh, nkv, hd, i) = (cfg.n_head, cfg.kv_heads(), cfg.head_size(), cfg.mlp_width());
        // attention_bias: q, k, v and o; Qwen2 has q, k, v biases only.
        let qkv_bias = cfg.bias;
        let o_bias = cfg.bias && cfg.model_type != ModelType::Qwen2;
        let ps = Params::new(cfg);
        let embed = ps.weight(e, Name::top("embed_tokens", "weight"), &[v, c], true);
        let mut layers = Vec::with_capacity(cfg.n_layer as usize);
        for l in 0..cfg.n_layer as u32 {
            let q = ps.linear(e, l, "self_attn.q_proj", (nh * hd, c), qkv_bias);
            let k = ps.linear(e, l, "self_attn.k_proj", (nkv * hd, c), qkv_bias);
            let vp = ps.linear(e, l, "self_attn.v_proj", (nkv * hd, c), qkv_bias);
            let o = ps.linear(e, l, "self_attn.o_proj", (c, nh * hd), o_bias);
            // Qwen3Attention.__init__: q_norm, k_norm = Qwen3RMSNorm(head_dim), after o_proj.
            let qk_norm = (cfg.model_type == ModelType::Qwen3).then(|| {
                let w = |e: &mut Engine, m| {
                    ps.weight(e, Name::layer_param(l, m, "weight"), &[hd], false)
                };
                (w(e, "self_attn.q_norm"), w(e, "self_attn.k_norm"))
            });
            let gate = ps.linear(e, l, "mlp.gate_proj", (i, c), false);
            let up = ps.linear(e, l, "mlp.up_proj", (i, c), false);
            let down = ps.linear(e, l, "mlp.down_proj", (c, i), false);
            let norm =
                |e: &mut Engine, m| ps.weight(e, Name::layer_param(l, m, "weight"), &[c], false);
            let input_ln = norm(e, "input_layernorm");
            let post_ln = norm(e, "post_attention_layernorm");
            layers.push(Layer {
                q,
                k,
                v: vp,
                o,
                gate,
                up,
                down,
                input_ln,
                post_ln,
                qk_norm,
            });
        }
        let norm = ps.weight(e, Name::top("norm", "weight"), &[c], false);
        // rotary_emb.inv_freq: a buffer (head_dim / 2 fp32), not a parameter.
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
        let gemma = cfg.model_type == ModelType::Gemma;
        Llama {
            d: Dims {
                nh,
                nkv,
                hd,
                style: if gemma {
                    RmsStyle::Gemma
                } else {
                    RmsStyle::Llama
                },
                gelu: gemma,
                eager: !cfg.flash,
            },
            embed_scale: gemma,
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
        // Gemma: hidden_states = inputs_embeds * normalizer (inputs_embeds stays a local).
        let mut x = if self.embed_scale {
            ops::scale(e, inputs_embeds, Name::top("embed", "scaled"))
        } else {
            e.retain(inputs_embeds.t);
            inputs_embeds
        };
        let dtype = e.dtype(x.t);
        let shared = Shared::new(e, b, t, self.d.hd, dtype, self.d.eager);
        let calls = self.layers.iter().enumerate().map(|(l, p)| LayerCall {
            p: *p,
            d: self.d,
            shared,
            layer: l as u32,
        });
        x = shared.run_layers(e, x, self.checkpoint, calls, LayerCall::forward);
        let xf = ops::rms_norm(e, x, self.norm, self.d.style, Name::top("norm", "out"));
        e.drop_value(x);
        // LlamaModel.forward returns: its locals (inputs_embeds, the rotary tables, the mask,
        // cache_position) go.
        e.drop_value(inputs_embeds);
        shared.release(e);
        e.release(shared.positions);
        let out = causal_lm_head(e, xf, self.lm_head, head, self.loss);
        e.drop_value(xf);
        out
    }
}

impl LayerCall {
    fn name(&self, what: &'static str) -> Name {
        Name::layer(self.layer, what)
    }

    /// LlamaDecoderLayer.forward.
    fn forward(&self, e: &mut Engine, x: V) -> V {
        let (p, st) = (&self.p, self.d.style);
        let h = ops::rms_norm(e, x, p.input_ln, st, self.name("input_layernorm.out"));
        let a = self.attn(e, h);
        e.drop_value(h);
        let x1 = ops::add(e, x, a, self.name("resid_attn"));
        e.drop_value(a);
        let h2 = ops::rms_norm(
            e,
            x1,
            p.post_ln,
            st,
            self.name("post_attention_layernorm.out"),
        );
        let m = self.mlp(e, h2);
        e.drop_value(h2);
        let x2 = ops::add(e, x1, m, self.name("resid_mlp"));
        e.drop_value(m);
        e.drop_value(x1);
        x2
    }

    /// LlamaAttention.forward.
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
        // q_proj(h).view(B, T, -1, hd).transpose(1, 2), and the same for k and v.
        let q = lora::forward(e, h, p.q, l, "self_attn.q_proj");
        let k = lora::forward(e, h, p.k, l, "self_attn.k_proj");
        let v = lora::forward(e, h, p.v, l, "self_attn.v_proj");
        let mut qv = ops::heads_view(e, q, heads.name("query_states"));
        let mut kv = ops::heads_view(e, k, heads.name("key_states"));
        e.drop_value(q);
        e.drop_value(k);
        // Qwen3Attention.forward: q_norm(q_proj(h).view(hidden_shape)).transpose(1, 2), and k
        // likewise — an RMSNorm over head_dim (fp32 statistics, fp32 weight x the bf16 cast
        // promotes its output to fp32), before rotary.
        if let Some((qn, kn)) = p.qk_norm {
            let st = self.d.style;
            let by_head = |n| Shape::new(&[b, t, n, d.hd]);
            let (qname, kname) = (
                Name::at(l, "self_attn.q_norm", "out"),
                Name::at(l, "self_attn.k_norm", "out"),
            );
            let q_normed = ops::rms_norm_as(e, qv, by_head(d.nh), qn, st, qname);
            let k_normed = ops::rms_norm_as(e, kv, by_head(d.nkv), kn, st, kname);
            e.drop_value(qv);
            e.drop_value(kv);
            (qv, kv) = (q_normed, k_normed);
        }
        // apply_rotary_pos_emb(query_states, key_states, cos, sin)
        let sh = &self.shared;
        let rope = |e: &mut Engine, x: V, heads_n: u64, what| {
            ops::rope(
                e,
                x,
                sh.cos,
                sh.sin,
                [b, heads_n, t, d.hd],
                d.hd,
                heads.name(what),
            )
        };
        let qe = rope(e, qv, d.nh, "q_embed");
        let ke = rope(e, kv, d.nkv, "k_embed");
        e.drop_value(qv);
        e.drop_value(kv);
        let y = sh.attend(e, qe, ke, v, heads, d.eager);
        let o = lora::forward(e, y, p.o, l, "self_attn.o_proj");
        // The attention forward's locals: the rotated q and k, v, attn_output.
        for x in [y, qe, ke, v] {
            e.drop_value(x);
        }
        o
    }

    /// LlamaMLP.forward: down_proj(act_fn(gate_proj(x)) * up_proj(x)).
    fn mlp(&self, e: &mut Engine, h: V) -> V {
        let (p, l) = (&self.p, Some(self.layer));
        let g = lora::forward(e, h, p.gate, l, "mlp.gate_proj");
        let a = if self.d.gelu {
            ops::gelu(e, g, self.name("mlp.act_fn"))
        } else {
            ops::silu(e, g, self.name("mlp.act_fn"))
        };
        e.drop_value(g);
        let u = lora::forward(e, h, p.up, l, "mlp.up_proj");
        let prod = ops::mul(e, a, u, self.name("mlp.gate_up"));
        e.drop_value(a);
        e.drop_value(u);
        let out = lora::forward(e, prod, p.down, l, "mlp.down_proj");
        e.drop_value(prod);
        out
    }
}
