//! Hugging Face's LlamaForCausalLM (and Mistral, Qwen2, Gemma, Gemma 2, Gemma 3, Qwen3, Olmo2,
//! which differ in a few places: variant.rs), written as the ops it runs, top to bottom, as
//! modeling_llama.py reads (one layer: llama_layer.rs):
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
//! logits = self.lm_head(hidden_states)       # Gemma 2: soft-capped (final_logit_softcapping)
//! loss = ForCausalLMLoss(logits, labels)
//! ```
//! Weights are fp32 master weights under autocast (the training loop is train.rs's), so the
//! residual stream and the norms are fp32 and every projection casts its input to bf16.
//! `use_cache=False` (training); attention is HF's default `sdpa`, or `eager` with
//! `flash = False`. Each `drop_value` is where a Python name goes out of scope or is rebound.

use super::hf::{input_embeddings, Shared};
use super::llama_layer::{Dims, Layer, LayerCall, Mlp};
use super::lora::Params;
use super::moe::{MoeWeights, RouterKind, SharedExpert};
use super::variant::{EmbedScale, QkNorm, Variant};
use super::{Head, Output, StageInput, StageOutput};
use crate::config::{ModelType, TrainConfig};
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops;
use crate::sim::timeline::{Category, Name, Shape};

pub struct Llama {
    d: Dims,
    c: u64,
    checkpoint: super::Checkpointing,
    lora: bool,
    loss: super::hf_loss::HfLoss,
    /// None on a middle or last pipeline rank ([`super::Stage`]).
    embed: Option<usize>,
    /// The stage's layers, the first of them the model's layer `first_layer`.
    layers: Vec<Layer>,
    first_layer: u32,
    /// MoE models: experts per token (the auxiliary loss's topk).
    top_k: Option<u64>,
    /// The final norm and the lm_head the forward runs: None except on the last pipeline
    /// rank.
    head: Option<(usize, usize)>,
}

impl Llama {
    /// `model.to(device)`: parameters in module order (embed_tokens, each layer's self_attn,
    /// mlp and norms, the final norm, the rotary module's buffer, lm_head).
    pub fn build(e: &mut Engine, cfg: &TrainConfig) -> Llama {
        Llama::build_stage(e, cfg, super::Stage::whole(cfg))
    }

    /// The parameters one pipeline rank holds (`stage`), in the same order; the layers keep
    /// the model's own indices (names, sliding-window pattern).
    pub fn build_stage(e: &mut Engine, cfg: &TrainConfig, stage: super::Stage) -> Llama {
        let (c, v) = (cfg.n_embd, cfg.vocab_size);
        let var = Variant::of(cfg);
        let ps = Params::new(cfg);
        let embed = stage
            .has_embeddings(cfg)
            .then(|| ps.weight(e, Name::top("embed_tokens", "weight"), &[v, c], true));
        let layers = (stage.start as u32..stage.end.min(cfg.n_layer) as u32)
            .map(|l| build_layer(e, cfg, &ps, var, l))
            .collect();
        let norm = stage
            .has_head(cfg)
            .then(|| ps.weight(e, Name::top("norm", "weight"), &[c], false));
        // rotary_emb.inv_freq: a buffer (head_dim / 2 fp32), not a parameter; Gemma 3 has one
        // per layer type.
        let inv_freqs = if var.hybrid.local_rope { 2 } else { 1 };
        for _ in 0..inv_freqs {
            e.alloc(
                Name::top("rotary_emb", "inv_freq"),
                Shape::new(&[cfg.rotary_dim() / 2]),
                crate::sim::DType::F32,
                Category::Other,
            );
        }
        let head = norm.map(|norm| {
            let lm_head = match embed {
                Some(embed) if cfg.tie_word_embeddings => embed,
                _ => ps.weight(e, Name::top("lm_head", "weight"), &[v, c], true),
            };
            (norm, lm_head)
        });
        // Held on every rank by some models (Stage::ends_on_every_rank), run on the last.
        let head = head.filter(|_| stage.last);
        Llama {
            d: Dims {
                nh: cfg.n_head,
                nkv: cfg.kv_heads(),
                hd: cfg.head_size(),
                var,
            },
            c,
            checkpoint: super::Checkpointing::new(cfg),
            lora: cfg.lora_rank > 0,
            loss: super::hf_loss::HfLoss::of(cfg),
            embed,
            layers,
            first_layer: stage.start as u32,
            top_k: cfg.experts_per_token,
            head,
        }
    }

    /// `outputs = model(input_ids, labels=labels)`: (logits, loss).
    pub fn forward(&self, e: &mut Engine, idx: T, head: Head) -> Output {
        match self.forward_stage(e, StageInput::Ids(idx), head) {
            StageOutput::Done(out) => out,
            // The whole model has its head; a stage's hidden states are the closest value.
            StageOutput::Hidden(x) => Output::Logits(x),
        }
    }

    /// One stage's forward. The first rank embeds the ids; a later rank starts from the
    /// received hidden states, which the runner's buffer keeps (vLLM 0.10.1 llama.py
    /// `LlamaModel.forward`: `hidden_states = intermediate_tensors["hidden_states"]`). A rank
    /// without the head returns its last layer's output (`IntermediateTensors`).
    pub fn forward_stage(&self, e: &mut Engine, input: StageInput, head: Head) -> StageOutput {
        let var = self.d.var;
        let (inputs_embeds, x) = match (input, self.embed) {
            (StageInput::Ids(idx), Some(w)) => self.embed_ids(e, w, idx),
            (StageInput::Hidden(h), _) => {
                e.retain(h.t);
                (None, h)
            }
            (StageInput::Ids(_), None) => {
                unreachable!("token ids fed to a pipeline rank without embed_tokens")
            }
        };
        let bt = e.shape(x.t);
        let (b, t) = (bt.dims()[0], bt.dims()[1]);
        let dtype = e.dtype(x.t);
        let dims = (b, t, self.d.hd);
        let shared = Shared::new_hybrid(e, dims, dtype, var.eager, var.hybrid);
        let calls = self.layers.iter().enumerate().map(|(l, p)| LayerCall {
            p: *p,
            d: self.d,
            shared,
            layer: self.first_layer + l as u32,
        });
        let x = shared.run_layers(e, x, self.checkpoint, calls, LayerCall::forward);
        let Some((norm, lm_head)) = self.head else {
            if let Some(ie) = inputs_embeds {
                e.drop_value(ie);
            }
            shared.done(e);
            // A pipeline rank without the head hands on hidden states only.
            e.drop_router_logits();
            return StageOutput::Hidden(x);
        };
        let xf = ops::rms_norm(e, x, norm, var.style, Name::top("norm", "out"));
        e.drop_value(x);
        // The model's forward returns: its locals (inputs_embeds, the rotary tables, the
        // masks, cache_position) go.
        if let Some(ie) = inputs_embeds {
            e.drop_value(ie);
        }
        let how = (self.loss, var.final_softcap);
        let out = shared.finish(e, xf, lm_head, head, how);
        StageOutput::Done(self.router_aux_loss(e, out))
    }

    /// `*ForCausalLM.forward` after the loss, with output_router_logits: `aux_loss =
    /// load_balancing_loss_func(outputs.router_logits, ...)` and, given labels, `loss +=
    /// router_aux_loss_coef * aux_loss` (ops/moe_aux.rs). Without labels (serving) the logits
    /// go with the output.
    fn router_aux_loss(&self, e: &mut Engine, out: Output) -> Output {
        match (out, self.top_k) {
            (Output::Loss(l, loss), Some(k)) if !e.router_logits.is_empty() => {
                let logits = std::mem::take(&mut e.router_logits);
                Output::Loss(l, ops::moe_aux::add_aux_loss(e, loss, logits, k))
            }
            (out, _) => {
                e.drop_router_logits();
                out
            }
        }
    }

    /// `inputs_embeds = self.embed_tokens(input_ids)` and the hidden states the layers start
    /// from: (the local `inputs_embeds`, hidden_states).
    fn embed_ids(&self, e: &mut Engine, weight: usize, idx: T) -> (Option<V>, V) {
        let lookup = input_embeddings(
            e,
            weight,
            idx,
            self.c,
            Name::top("embed_tokens", "out"),
            self.lora && self.checkpoint.any(),
        );
        // Gemma: hidden_states = inputs_embeds * normalizer (inputs_embeds stays a local);
        // Gemma 2/3: the embedding module scales, and its unscaled lookup goes at once.
        let (inputs_embeds, x) = match self.d.var.embed_scale {
            EmbedScale::None => {
                e.retain(lookup.t);
                (lookup, lookup)
            }
            EmbedScale::Local => {
                let x = ops::scale(e, lookup, Name::top("embed", "scaled"));
                (lookup, x)
            }
            EmbedScale::InModule => {
                let x = ops::scale(e, lookup, Name::top("embed", "scaled"));
                e.drop_value(lookup);
                e.retain(x.t);
                (x, x)
            }
        };
        (Some(inputs_embeds), x)
    }
}

/// One decoder layer's parameters, in its modules' order: self_attn (q, k, v, o, then
/// q_norm and k_norm), mlp, the layer's norms.
fn build_layer(e: &mut Engine, cfg: &TrainConfig, ps: &Params, var: Variant, l: u32) -> Layer {
    let c = cfg.n_embd;
    let (nh, nkv, hd, i) = (cfg.n_head, cfg.kv_heads(), cfg.head_size(), cfg.mlp_width());
    // attention_bias: q, k, v and o; Qwen2 and Qwen2-MoE have q, k, v biases only.
    let qkv_bias = cfg.bias;
    let o_bias = cfg.bias && !cfg.model_type.qkv_bias_only();
    let q = ps.linear(e, l, "self_attn.q_proj", (nh * hd, c), qkv_bias);
    let k = ps.linear(e, l, "self_attn.k_proj", (nkv * hd, c), qkv_bias);
    let v = ps.linear(e, l, "self_attn.v_proj", (nkv * hd, c), qkv_bias);
    let o = ps.linear(e, l, "self_attn.o_proj", (c, nh * hd), o_bias);
    // Qwen3Attention / Gemma3Attention: q_norm, k_norm = RMSNorm(head_dim); Olmo2Attention:
    // RMSNorm(nh * hd) and RMSNorm(nkv * hd). Created after o_proj.
    let w = |e: &mut Engine, m, n| ps.weight(e, Name::layer_param(l, m, "weight"), &[n], false);
    let qk_norm = match var.qk_norm {
        QkNorm::None => None,
        QkNorm::PerHead => Some((w(e, "self_attn.q_norm", hd), w(e, "self_attn.k_norm", hd))),
        QkNorm::Whole => Some((
            w(e, "self_attn.q_norm", nh * hd),
            w(e, "self_attn.k_norm", nkv * hd),
        )),
    };
    let mlp = match (cfg.num_experts, cfg.experts_per_token) {
        (Some(experts), Some(top_k)) if cfg.moe_layer(u64::from(l)) => {
            let width = cfg.expert_width();
            Mlp::Moe(moe_weights(e, cfg, ps, (experts, top_k), (c, width), l))
        }
        _ => Mlp::Dense {
            gate: ps.linear(e, l, "mlp.gate_proj", (i, c), false),
            up: ps.linear(e, l, "mlp.up_proj", (i, c), false),
            down: ps.linear(e, l, "mlp.down_proj", (c, i), false),
        },
    };
    const NORMS: [&str; 4] = [
        "input_layernorm",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
    ];
    let mut norms = [None; 4];
    for (slot, (has, m)) in norms
        .iter_mut()
        .zip(var.layer_norms().into_iter().zip(NORMS))
    {
        *slot = has.then(|| w(e, m, c));
    }
    Layer {
        q,
        k,
        v,
        o,
        mlp,
        norms,
        qk_norm,
        sliding: cfg.layer_slides(l),
    }
}

/// The sparse MoE block's parameters in module order: the router's weight (E, C) and the
/// experts' gate_up_proj (E, 2I, C) and down_proj (E, C, I) — 3-D nn.Parameters in 5.x
/// (modeling_mixtral.py `MixtralExperts.__init__`). MixtralSparseMoeBlock creates `gate` then
/// `experts`, Qwen3MoeSparseMoeBlock `experts` then `gate`; Qwen2MoeSparseMoeBlock `gate`,
/// `experts`, then `shared_expert` (gate_proj, up_proj, down_proj) and `shared_expert_gate`.
fn moe_weights(
    e: &mut Engine,
    cfg: &TrainConfig,
    ps: &Params,
    (experts, top_k): (u64, u64),
    (c, i): (u64, u64),
    l: u32,
) -> MoeWeights {
    let mut w =
        |module, what, dims: &[u64]| ps.weight(e, Name::layer_param(l, module, what), dims, true);
    let qwen = cfg.model_type == ModelType::Qwen3Moe;
    let router_first = (!qwen).then(|| w("mlp.gate", "weight", &[experts, c]));
    // vLLM expert parallelism: this rank's share of the experts (src/plan/vllm/mod.rs).
    let held = cfg.rank_experts.unwrap_or(experts);
    let gate_up = w("mlp.experts", "gate_up_proj", &[held, 2 * i, c]);
    let down = w("mlp.experts", "down_proj", &[held, c, i]);
    let router = router_first.unwrap_or_else(|| w("mlp.gate", "weight", &[experts, c]));
    let shared = cfg.shared_expert_intermediate_size.map(|s| SharedExpert {
        mlp: [
            ps.linear(e, l, "mlp.shared_expert.gate_proj", (s, c), false),
            ps.linear(e, l, "mlp.shared_expert.up_proj", (s, c), false),
            ps.linear(e, l, "mlp.shared_expert.down_proj", (c, s), false),
        ],
        gate: ps.linear(e, l, "mlp.shared_expert_gate", (1, c), false),
    });
    // Qwen2MoeTopKRouter.forward is Qwen3MoeTopKRouter.forward line for line.
    let router_kind = match cfg.model_type {
        ModelType::Mixtral => RouterKind::Mixtral,
        _ => RouterKind::Qwen3Moe {
            norm: cfg.norm_topk_prob,
        },
    };
    MoeWeights {
        router,
        gate_up,
        down,
        top_k,
        router_kind,
        keep_logits: cfg.output_router_logits,
        shared,
    }
}
