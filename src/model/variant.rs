//! Where the decoders built on Llama's layers (llama.rs, llama_layer.rs) differ, as flags read
//! once from the config: which norm, which activation, where the norms sit, how q and k are
//! normalised, the embedding scale, soft-capping and sliding-window layers. Each flag names
//! the modeling file that sets it.

use super::hf::Hybrid;
use crate::config::{ModelType, TrainConfig};
use crate::sim::ops::RmsStyle;

/// Where a decoder layer's RMSNorms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norms {
    /// LlamaDecoderLayer: input_layernorm before attention, post_attention_layernorm before
    /// the MLP.
    Pre,
    /// Gemma2DecoderLayer / Gemma3DecoderLayer: input_layernorm before attention,
    /// post_attention_layernorm on its output, pre_feedforward_layernorm before the MLP,
    /// post_feedforward_layernorm on its output — four per layer.
    Sandwich,
    /// Olmo2DecoderLayer: no input norm; post_attention_layernorm on the attention's output,
    /// post_feedforward_layernorm on the MLP's.
    Post,
}

/// How q and k are normalised before rotary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Qwen3Attention (`q_norm(q.view(B, T, nh, hd))`) and Gemma3Attention
    /// (`q_norm(q.view(...).transpose(1, 2))`): an RMSNorm of head_dim over each head.
    PerHead,
    /// Olmo2Attention: `q_norm(q_proj(h))` over all nh·hd channels, `k_norm` over nkv·hd,
    /// before the head view.
    Whole,
}

/// The embedding scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedScale {
    None,
    /// GemmaModel/Gemma2Model.forward before transformers 5.4: `hidden_states = inputs_embeds
    /// * normalizer`; the unscaled `inputs_embeds` stays a local until the forward returns.
    Local,
    /// Gemma*TextScaledWordEmbedding.forward (Gemma 3; Gemma and Gemma 2 from 5.4):
    /// `super().forward(ids) * embed_scale` inside the embedding: the unscaled lookup is a
    /// temporary.
    InModule,
}

#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub style: RmsStyle,
    /// GELU (tanh) gated MLP (Gemma's `gelu_pytorch_tanh`) instead of SiLU.
    pub gelu: bool,
    pub norms: Norms,
    pub qk_norm: QkNorm,
    pub embed_scale: EmbedScale,
    pub eager: bool,
    /// Gemma 2's attention soft-capping under eager attention. Gemma3Attention.forward does
    /// not pass `softcap` to its attention function, so Gemma 3 never caps there.
    pub attn_softcap: bool,
    /// Gemma2/Gemma3ForCausalLM's `final_logit_softcapping`.
    pub final_softcap: bool,
    pub hybrid: Hybrid,
    /// The sliding layers' window (Gemma 2/3's sliding_window).
    pub window: Option<u64>,
}

impl Variant {
    pub fn of(cfg: &TrainConfig) -> Variant {
        use ModelType as M;
        let m = cfg.model_type;
        let gemma_like = matches!(m, M::Gemma | M::Gemma2 | M::Gemma3);
        let eager = cfg.hf_eager_attention();
        let sliding = matches!(m, M::Gemma2 | M::Gemma3) && cfg.sliding_window.is_some();
        Variant {
            style: match m {
                _ if gemma_like => RmsStyle::Gemma,
                M::Olmo2 => RmsStyle::Olmo2,
                _ => RmsStyle::Llama,
            },
            gelu: gemma_like,
            norms: match m {
                M::Gemma2 | M::Gemma3 => Norms::Sandwich,
                M::Olmo2 => Norms::Post,
                _ => Norms::Pre,
            },
            qk_norm: match m {
                M::Qwen3 | M::Qwen3Moe | M::Gemma3 => QkNorm::PerHead,
                M::Olmo2 => QkNorm::Whole,
                _ => QkNorm::None,
            },
            embed_scale: match m {
                // Gemma and Gemma 2 moved the scale into the embedding module in transformers
                // 5.4 (GemmaTextScaledWordEmbedding; read in 5.3.0 and 5.4.0); Gemma 3 had it
                // from its first release (4.50).
                M::Gemma | M::Gemma2 if cfg.transformers_version.at_least((5, 4)) => {
                    EmbedScale::InModule
                }
                M::Gemma | M::Gemma2 => EmbedScale::Local,
                M::Gemma3 => EmbedScale::InModule,
                _ => EmbedScale::None,
            },
            eager,
            attn_softcap: m == M::Gemma2 && cfg.attn_softcap.is_some(),
            final_softcap: matches!(m, M::Gemma2 | M::Gemma3) && cfg.final_softcap.is_some(),
            hybrid: Hybrid {
                // Both masks exist whenever the model has a sliding window (the mapping is
                // built whole); eager materialises each.
                sliding_mask: sliding,
                local_rope: m == M::Gemma3 && cfg.mixed_layers(),
                sdpa_window: cfg.sliding_window.filter(|_| sliding && !eager),
            },
            window: cfg.sliding_window.filter(|_| sliding),
        }
    }

    /// Layer norms of a layer: input, post-attention, pre- and post-feedforward.
    pub fn layer_norms(&self) -> [bool; 4] {
        match self.norms {
            Norms::Pre => [true, true, false, false],
            Norms::Sandwich => [true, true, true, true],
            Norms::Post => [false, true, false, true],
        }
    }
}
