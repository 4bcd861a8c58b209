//! The keys of a mixture-of-experts decoder (Mixtral): how many experts a layer has
//! (`num_experts`, config.json's `num_local_experts`) and how many each token is routed to
//! (`experts_per_token`, `num_experts_per_tok`). Mixtral's experts are as wide as its
//! `intermediate_size`, so it has no `moe_intermediate_size`. Qwen2-MoE adds a shared expert
//! (`shared_expert_intermediate_size`); Qwen2- and Qwen3-MoE can make layers dense
//! (`decoder_sparse_step`, `mlp_only_layers`: Qwen2MoeDecoderLayer.__init__ and
//! Qwen3MoeDecoderLayer.__init__ build a sparse block where `layer_idx not in mlp_only_layers
//! and (layer_idx + 1) % decoder_sparse_step == 0`, else a dense MLP of intermediate_size).
//!
//! What the simulation of an MoE layer (src/model/moe.rs) covers, and what it refuses with
//! one line rather than guess: transformers 4.x's per-expert loop (its buffers depend on the
//! routing). LoRA runs: PEFT's targets are attention's Linear layers only, the router and the
//! experts stay frozen (src/config/lora.rs `lora_modules`); so does QLoRA, with only the
//! nn.Linear layers quantized (`refuse_unsimulated`).

use super::blame::Blame;
use super::model_keys::ModelType;
use super::value::{opt_count, opt_int, Origin, Value};
use super::TrainConfig;
use crate::error::Result;
use std::collections::HashMap;

/// The current value of one of these keys.
pub(crate) fn get(cfg: &TrainConfig, name: &str) -> Option<Value> {
    Some(match name {
        "num_experts" => opt_int(cfg.num_experts),
        "experts_per_token" => opt_int(cfg.experts_per_token),
        "moe_intermediate_size" => opt_int(cfg.moe_intermediate_size),
        "norm_topk_prob" => Value::Bool(cfg.norm_topk_prob),
        "output_router_logits" => Value::Bool(cfg.output_router_logits),
        "shared_expert_intermediate_size" => opt_int(cfg.shared_expert_intermediate_size),
        "decoder_sparse_step" => opt_int(cfg.decoder_sparse_step),
        "mlp_only_layers" => Value::Str(cfg.mlp_only_layers.clone()),
        _ => return None,
    })
}

/// Set one of these keys (its type already checked); None when the key is not one of them.
pub(crate) fn set(
    cfg: &mut TrainConfig,
    name: &str,
    v: &Value,
) -> Option<std::result::Result<(), String>> {
    Some(match name {
        "num_experts" => opt_count(v, true).map(|x| cfg.num_experts = x),
        "experts_per_token" => opt_count(v, true).map(|x| cfg.experts_per_token = x),
        "moe_intermediate_size" => opt_count(v, true).map(|x| cfg.moe_intermediate_size = x),
        "norm_topk_prob" => {
            cfg.norm_topk_prob = matches!(v, Value::Bool(true));
            Ok(())
        }
        "output_router_logits" => {
            cfg.output_router_logits = matches!(v, Value::Bool(true));
            Ok(())
        }
        "shared_expert_intermediate_size" => {
            opt_count(v, true).map(|x| cfg.shared_expert_intermediate_size = x)
        }
        "decoder_sparse_step" => opt_count(v, true).map(|x| cfg.decoder_sparse_step = x),
        "mlp_only_layers" => match v {
            Value::Str(s) => {
                cfg.mlp_only_layers = s.clone();
                Ok(())
            }
            other => Err(format!(
                "expected a str of comma-separated layer indices, got {}",
                other.type_name()
            )),
        },
        _ => return None,
    })
}

/// Both keys on an MoE model (1 <= experts_per_token <= num_experts), none of the MoE keys
/// elsewhere, Mixtral's renormalisation unconditional, the shared expert on Qwen2-MoE alone,
/// and none of the modes the MoE layer is not simulated under.
pub(crate) fn validate(cfg: &TrainConfig, origins: &HashMap<&'static str, Origin>) -> Result<()> {
    let blame = &Blame(origins);
    let keys = [
        ("num_experts", cfg.num_experts),
        ("experts_per_token", cfg.experts_per_token),
    ];
    if !cfg.model_type.is_moe() {
        let only = "None (only model_type = 'mixtral', 'qwen3_moe' and 'qwen2_moe' read it)";
        let set = [
            ("moe_intermediate_size", cfg.moe_intermediate_size),
            (
                "shared_expert_intermediate_size",
                cfg.shared_expert_intermediate_size,
            ),
            ("decoder_sparse_step", cfg.decoder_sparse_step),
        ];
        if cfg.output_router_logits {
            return blame.fail("output_router_logits", "True", format!("False: {only}"));
        }
        return match keys.iter().chain(&set).find_map(|(k, v)| v.map(|v| (k, v))) {
            Some((key, v)) => blame.fail(key, v, only),
            None => dense_layers(cfg, blame),
        };
    }
    if cfg.model_type == ModelType::Mixtral {
        mixtral_only(cfg, blame)?;
    }
    shared_expert(cfg, blame)?;
    for (key, v) in [
        ("moe_intermediate_size", cfg.moe_intermediate_size),
        ("decoder_sparse_step", cfg.decoder_sparse_step),
    ] {
        if v == Some(0) {
            return blame.fail(key, "0", "a positive integer or None");
        }
    }
    for (key, v) in keys {
        match v {
            None => {
                let why = format!(
                    "a positive integer for model_type = '{}'",
                    cfg.model_type.as_str()
                );
                return blame.fail(key, "None", why);
            }
            Some(0) => return blame.fail(key, "0", "a positive integer"),
            Some(_) => {}
        }
    }
    let (e, k) = (
        cfg.num_experts.unwrap_or(0),
        cfg.experts_per_token.unwrap_or(0),
    );
    if k > e {
        return blame.fail(
            "experts_per_token",
            k,
            format!("at most num_experts = {e} (torch.topk over the experts)"),
        );
    }
    dense_layers(cfg, blame)?;
    refuse_unsimulated(cfg, blame)
}

/// Mixtral: experts of intermediate_size, always renormalised, every layer sparse.
fn mixtral_only(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    if let Some(w) = cfg.moe_intermediate_size {
        let why = "None with model_type = 'mixtral' (its experts are intermediate_size wide)";
        return blame.fail("moe_intermediate_size", w, why);
    }
    if !cfg.norm_topk_prob {
        let why = "True with model_type = 'mixtral' (MixtralTopKRouter always renormalises)";
        return blame.fail("norm_topk_prob", "False", why);
    }
    if let Some(s) = cfg.decoder_sparse_step {
        let why = "None with model_type = 'mixtral' (every MixtralDecoderLayer is sparse)";
        return blame.fail("decoder_sparse_step", s, why);
    }
    Ok(())
}

/// Qwen2MoeSparseMoeBlock always has its shared expert (a Qwen2MoeMLP of
/// shared_expert_intermediate_size); the other MoE blocks have none.
fn shared_expert(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    let key = "shared_expert_intermediate_size";
    match (cfg.model_type, cfg.shared_expert_intermediate_size) {
        (ModelType::Qwen2Moe, None) => blame.fail(
            key,
            "None",
            "a positive integer for model_type = 'qwen2_moe'",
        ),
        (ModelType::Qwen2Moe, Some(0)) => blame.fail(key, "0", "a positive integer"),
        (ModelType::Qwen2Moe, Some(_)) => Ok(()),
        (m, Some(w)) => blame.fail(
            key,
            w,
            format!(
                "None with model_type = '{}' (only Qwen2MoeSparseMoeBlock has a shared expert)",
                m.as_str()
            ),
        ),
        (_, None) => Ok(()),
    }
}

/// mlp_only_layers: layer indices below n_layer, on a model whose layers can be dense.
/// (transformers ignores an index past the last layer; here it is more likely a typo.)
fn dense_layers(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    let list = cfg.mlp_only_layers.trim();
    if list.is_empty() {
        return Ok(());
    }
    let shown = super::value::str_repr(&cfg.mlp_only_layers.chars().take(80).collect::<String>());
    if !matches!(cfg.model_type, ModelType::Qwen2Moe | ModelType::Qwen3Moe) {
        let why = "'' (only model_type = 'qwen2_moe' and 'qwen3_moe' read it)";
        return blame.fail("mlp_only_layers", shown, why);
    }
    let n = cfg.n_layer;
    let ok = cfg.mlp_only_indices().all(|x| x.is_ok_and(|l| l < n));
    if ok {
        return Ok(());
    }
    blame.fail(
        "mlp_only_layers",
        shown,
        format!(
            "comma-separated layer indices from 0 to n_layer - 1 = {}",
            n.saturating_sub(1)
        ),
    )
}

/// The modes an MoE layer is not simulated under: one line each.
fn refuse_unsimulated(cfg: &TrainConfig, blame: &Blame) -> Result<()> {
    // QLoRA runs: bitsandbytes replaces only `type(module) is nn.Linear` (transformers 5.25
    // integrations/bitsandbytes.py `replace_with_bnb_linear`; the 4-bit quantizer's
    // `param_needs_quantization` asks for a Linear4bit), so the router's weight and the 3-D
    // expert parameters stay in the load dtype, and PEFT's `prepare_model_for_kbit_training`
    // then casts every bf16/fp16 parameter that is not a Params4bit to fp32 (src/model/lora.rs
    // `Params::weight`).
    // Tensor parallelism (validate.rs) and torch.compile (runtime.rs `compile_fallback`:
    // simulated eager) are handled for every Hugging Face model already.
    if let Some((major, minor)) = cfg.transformers_version.0.filter(|v| v.0 < 5) {
        return blame.fail(
            "transformers_version",
            format!("'{major}.{minor}'"),
            "5.0 or later (or None) for an MoE model: 4.x's sparse MoE blocks loop over the experts a batch hits, so its buffers depend on the routing; 5.x's default grouped_mm path is simulated",
        );
    }
    Ok(())
}

impl TrainConfig {
    /// Whether layer `l` (0-based) has the sparse MoE block: an MoE model's layer that
    /// decoder_sparse_step selects and mlp_only_layers does not list
    /// (Qwen2MoeDecoderLayer.__init__, modeling_qwen2_moe.py).
    pub fn moe_layer(&self, l: u64) -> bool {
        if self.num_experts.is_none() || self.experts_per_token.is_none() {
            return false;
        }
        let step = self.decoder_sparse_step.unwrap_or(1).max(1);
        let dense = self.mlp_only_indices().any(|x| x == Ok(l));
        (l + 1).is_multiple_of(step) && !dense
    }

    /// `mlp_only_layers` read as the comma-separated layer indices it lists (validation
    /// refuses any entry that is not one).
    fn mlp_only_indices(
        &self,
    ) -> impl Iterator<Item = std::result::Result<u64, std::num::ParseIntError>> + '_ {
        self.mlp_only_layers
            .split(',')
            .map(|x| x.trim().parse::<u64>())
    }

    /// Each expert's hidden width: Qwen3-MoE's moe_intermediate_size, else intermediate_size.
    pub fn expert_width(&self) -> u64 {
        self.moe_intermediate_size.unwrap_or(self.mlp_width())
    }

    /// What the run's figures mean for an MoE model: no routing band (every buffer of the
    /// grouped_mm path has tokens × experts_per_token rows), and, when serving, that vLLM's
    /// own fused_moe kernel is not what was simulated.
    pub fn moe_notes(&self) -> Vec<String> {
        let (Some(e), Some(k)) = (self.num_experts, self.experts_per_token) else {
            return Vec::new();
        };
        let mut notes = vec![format!(
            "MoE layers as transformers 5.x runs them by default (integrations/moe.py grouped_mm_experts_forward): every expert buffer has tokens x {k} rows over the {e} experts together, so the figure is the same for balanced and skewed routing (4.x's per-expert loop, whose buffers follow the routing, is not simulated)"
        )];
        if self.mode == super::Mode::Inference
            && self.enable_expert_parallel
            && self.tensor_parallel_size > 1
        {
            let tp = self.tensor_parallel_size.max(1);
            notes.push(format!(
                "vLLM expert parallelism (--enable-expert-parallel) over {tp} ranks: each holds {} or {} whole experts of the {e} (fused_moe/layer.py determine_expert_map: the first {} ranks one more); the rank simulated holds {}, attention and the router split or replicated as without it",
                e / tp,
                e.div_ceil(tp),
                e % tp,
                e.div_ceil(tp)
            ));
        }
        if self.mode == super::Mode::Inference {
            notes.push(
                "vLLM start-up: its profile run's MoE layers are simulated with transformers' grouped_mm buffers, not vLLM's fused_moe kernel's (not modelled); the weights and KV cache per rank are vLLM's sharding".to_string(),
            );
        }
        notes
    }
}
