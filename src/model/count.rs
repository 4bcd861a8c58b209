//! Parameter counts from a config's shape alone, for what needs a size before simulating
//! (suggest's step-time ranking, the "model states alone" message). The simulator builds the
//! same parameters as tensors; a test checks the two agree, and both against the published
//! counts of the presets.

use crate::config::{ModelType, TrainConfig};

/// Parameters as PyTorch counts them (`sum(p.numel() for p in model.parameters())`): a tied
/// lm_head once, buffers (nanoGPT's causal mask, rotary's inv_freq) not at all.
pub fn n_params(cfg: &TrainConfig) -> u64 {
    base_params(cfg) + lora_params(cfg)
}

/// LoRA's adapters: r × (in + out) for each targeted Linear of each layer. A sparse layer's
/// gate_proj, up_proj and down_proj are its shared expert's (Qwen2-MoE; the routed experts
/// are 3-D parameters PEFT does not wrap), a dense layer's its MLP's.
pub fn lora_params(cfg: &TrainConfig) -> u64 {
    let (c, r) = (cfg.n_embd, cfg.lora_rank);
    let (q, kv) = (
        cfg.n_head * cfg.head_size(),
        cfg.kv_heads() * cfg.head_size(),
    );
    let targets = cfg.lora_target_list();
    let layer = |sparse: bool| -> u64 {
        let i = match cfg.shared_expert_intermediate_size {
            Some(s) if sparse => s,
            _ => cfg.mlp_width(),
        };
        let shared_gate = if sparse { (c, 1) } else { (0, 0) };
        targets
            .iter()
            .map(|t| {
                let (inp, out) = match *t {
                    "q_proj" => (c, q),
                    "k_proj" | "v_proj" => (c, kv),
                    "o_proj" => (q, c),
                    "gate_proj" | "up_proj" | "dense_h_to_4h" => (c, i),
                    "down_proj" | "dense_4h_to_h" => (i, c),
                    "query_key_value" => (c, 3 * c),
                    "qkv_proj" => (c, q + 2 * kv),
                    "gate_up_proj" => (c, 2 * i),
                    "dense" => (c, c),
                    "shared_expert_gate" => shared_gate,
                    _ => (0, 0),
                };
                r * (inp + out)
            })
            .sum()
    };
    let sparse = cfg.moe_layer_count();
    sparse * layer(true) + (cfg.n_layer - sparse) * layer(false)
}

/// The model's own weights (frozen under LoRA).
pub fn base_params(cfg: &TrainConfig) -> u64 {
    let (c, l, v) = (cfg.n_embd, cfg.n_layer, cfg.vocab_size);
    let embeddings = if cfg.tie_word_embeddings {
        v * c
    } else {
        2 * v * c
    };
    match cfg.model_type {
        ModelType::Gpt2 => {
            let bias = u64::from(cfg.bias);
            // ln_1, ln_2 (weight, bias); c_attn, c_proj, c_fc, mlp.c_proj (and their biases).
            let per_layer = 12 * c * c + 2 * c + bias * (2 * c + 3 * c + c + 4 * c + c);
            v * c + cfg.block_size * c + l * per_layer + c * (1 + bias)
        }
        ModelType::Phi3 => {
            let (hd, nh, kv, i) = (cfg.head_size(), cfg.n_head, cfg.kv_heads(), cfg.mlp_width());
            // qkv_proj, o_proj, gate_up_proj (2·I), down_proj, two RMSNorms; no biases.
            let per_layer = c * (nh * hd + 2 * kv * hd) + nh * hd * c + 2 * c * i + i * c + 2 * c;
            embeddings + l * per_layer + c
        }
        ModelType::GptNeox => {
            let i = cfg.mlp_width();
            // Two LayerNorms, query_key_value and dense, dense_h_to_4h and dense_4h_to_h, each
            // with a bias.
            let per_layer = 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * i + i) + (i * c + c);
            embeddings + l * per_layer + 2 * c
        }
        ModelType::Llama
        | ModelType::Mistral
        | ModelType::Qwen2
        | ModelType::Gemma
        | ModelType::Gemma2
        | ModelType::Gemma3
        | ModelType::Olmo2
        | ModelType::Mixtral
        | ModelType::Qwen3Moe
        | ModelType::Qwen2Moe
        | ModelType::Qwen3 => {
            let (hd, nh, kv, i) = (cfg.head_size(), cfg.n_head, cfg.kv_heads(), cfg.mlp_width());
            let q = c * nh * hd;
            let kvp = 2 * c * kv * hd;
            let o = nh * hd * c;
            // A dense layer's gate, up and down; a sparse layer's E experts' gate, up and
            // down, the router's (E, C), and Qwen2-MoE's shared expert (gate, up, down of
            // shared_expert_intermediate_size) and shared_expert_gate (1, C).
            let dense = 3 * c * i;
            let shared = cfg
                .shared_expert_intermediate_size
                .map_or(0, |s| 3 * c * s + c);
            let sparse = match cfg.num_experts {
                Some(experts) => experts * 3 * c * cfg.expert_width() + experts * c + shared,
                None => dense,
            };
            let moe_layers = cfg.moe_layer_count();
            let mlps = moe_layers * sparse + (l - moe_layers) * dense;
            let bias = if !cfg.bias {
                0
            } else if cfg.model_type.qkv_bias_only() {
                nh * hd + 2 * kv * hd
            } else {
                nh * hd + 2 * kv * hd + c
            };
            // q_norm and k_norm: one weight of head_dim each (Qwen3, Gemma 3), or of the whole
            // q and k projections (Olmo2).
            let qk_norms = match cfg.model_type {
                ModelType::Qwen3 | ModelType::Qwen3Moe | ModelType::Gemma3 => 2 * hd,
                ModelType::Olmo2 => nh * hd + kv * hd,
                _ => 0,
            };
            // RMSNorms per layer: Llama's two; Gemma 2/3's four (pre/post attention and
            // feed-forward); Olmo2's two after the sublayers.
            let norms = match cfg.model_type {
                ModelType::Gemma2 | ModelType::Gemma3 => 4 * c,
                _ => 2 * c,
            };
            let per_layer = q + kvp + o + norms + bias + qk_norms;
            embeddings + l * per_layer + mlps + c
        }
    }
}
