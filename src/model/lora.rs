//! Parameters of the Hugging Face models, full fine-tuning or LoRA, and PEFT's LoRA Linear.
//!
//! Full fine-tuning: every weight is an fp32 master weight with a gradient and AdamW state.
//! LoRA (`lora_rank > 0`): the base weights are frozen in the run's `dtype` (bf16: the model
//! loaded with `torch_dtype=torch.bfloat16`) with no gradient and no optimizer state; each
//! targeted Linear gets fp32 adapters A (r × in) and B (out × r) — PEFT upcasts adapters to
//! fp32 (`autocast_adapter_dtype=True`) — that do get both. PEFT's forward:
//!
//! ```python
//! result = self.base_layer(x)                       # frozen: mm keeps only its weight
//! x = self._cast_input_dtype(x, lora_A.weight.dtype)    # bf16 -> fp32 copy
//! result = result + lora_B(lora_A(dropout(x))) * scaling
//! ```
//! Autocast then casts that fp32 x back to bf16 for lora_A, and A's matmul keeps the cast (A
//! needs its input for its gradient). The frozen matmuls keep no input: the gradient of their
//! input needs only the weight. What else a layer keeps (norms, attention, the MLP's
//! activations) is unchanged: those ops need their inputs for the input gradients.

use crate::config::{Mode, Precision, TrainConfig};
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, V};
use crate::sim::ops;
use crate::sim::timeline::Name;

/// A Linear layer: its weight and bias, and its LoRA adapters (A, B) if it is a target.
#[derive(Debug, Clone, Copy)]
pub struct Proj {
    pub w: usize,
    pub b: Option<usize>,
    pub lora: Option<(usize, usize)>,
    /// `lora_dropout` (0.0 = `nn.Identity`).
    pub dropout: f64,
}

/// Makes the model's parameters, frozen or trainable as the run asks.
pub struct Params {
    /// Inference: every weight frozen in `base`, no adapters (the model loaded with
    /// `torch_dtype=...` and put in eval mode).
    all_frozen: bool,
    lora_rank: u64,
    lora_dropout: f64,
    targets: Vec<&'static str>,
    /// The dtype of frozen base weights.
    base: DType,
}

impl Params {
    pub fn new(cfg: &TrainConfig) -> Params {
        Params {
            all_frozen: cfg.mode == Mode::Inference,
            lora_rank: cfg.lora_rank,
            lora_dropout: cfg.lora_dropout,
            targets: cfg.lora_target_list(),
            base: match cfg.dtype {
                Precision::Float32 => DType::F32,
                Precision::BFloat16 => DType::BF16,
                Precision::Float16 => DType::F16,
            },
        }
    }

    /// A non-Linear weight (embeddings, norms, lm_head): trainable fp32, or frozen under LoRA
    /// and in inference.
    pub fn weight(&self, e: &mut Engine, name: Name, dims: &[u64], decay: bool) -> usize {
        if self.all_frozen || self.lora_rank > 0 {
            e.add_param_as(name, dims, decay, self.base, false)
        } else {
            e.add_param(name, dims, decay)
        }
    }

    /// A Linear (out × in) named `layer{l}.{module}`, with its adapters after it when its last
    /// name component is a LoRA target.
    pub fn linear(
        &self,
        e: &mut Engine,
        l: u32,
        module: &'static str,
        (out, inp): (u64, u64),
        bias: bool,
    ) -> Proj {
        let w = self.weight(e, Name::layer_param(l, module, "weight"), &[out, inp], true);
        let b = bias.then(|| self.weight(e, Name::layer_param(l, module, "bias"), &[out], false));
        let short = module.rsplit('.').next().unwrap_or(module);
        let lora = self.targets.contains(&short).then(|| {
            let r = self.lora_rank;
            let a = e.add_param(
                Name::layer_param(l, module, "lora_A.weight"),
                &[r, inp],
                true,
            );
            let b = e.add_param(
                Name::layer_param(l, module, "lora_B.weight"),
                &[out, r],
                true,
            );
            (a, b)
        });
        Proj {
            w,
            b,
            lora,
            dropout: self.lora_dropout,
        }
    }
}

/// `layer(x)`: nn.Linear, or PEFT's LoRA Linear when the layer has adapters.
pub fn forward(e: &mut Engine, x: V, p: Proj, layer: Option<u32>, module: &'static str) -> V {
    let result = ops::linear(e, x, p.w, p.b, layer, module);
    let Some((a, b)) = p.lora else {
        return result;
    };
    let name = |what| Name::at(layer, module, what);
    let x32 = ops::to_dtype(e, x, DType::F32, name("lora_input_fp32"));
    let xd = ops::dropout(e, x32, p.dropout, name("lora_dropout"));
    e.drop_value(x32);
    let (ma, mb) = adapter_modules(module);
    let ha = ops::linear(e, xd, a, None, layer, ma);
    e.drop_value(xd);
    let hb = ops::linear(e, ha, b, None, layer, mb);
    e.drop_value(ha);
    let scaled = ops::mul_scalar(e, hb, name("lora_scaled"));
    e.drop_value(hb);
    let out = ops::add(e, result, scaled, name("lora_out"));
    e.drop_value(result);
    e.drop_value(scaled);
    out
}

/// Tensor names for a target's adapters (names are static: no formatting in the simulator).
fn adapter_modules(module: &str) -> (&'static str, &'static str) {
    macro_rules! table {
        ($($m:literal),*) => {
            match module {
                $($m => (concat!($m, ".lora_A"), concat!($m, ".lora_B")),)*
                _ => ("lora_A", "lora_B"),
            }
        };
    }
    table!(
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
        "attention.query_key_value",
        "attention.dense",
        "mlp.dense_h_to_4h",
        "mlp.dense_4h_to_h"
    )
}
