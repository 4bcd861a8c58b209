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
//!
//! QLoRA (`quantization = 'nf4'`, bitsandbytes): the targeted and untargeted Linear base
//! weights are stored quantized (sim/ops/quant.rs), every other weight — embeddings, norms,
//! lm_head, the Linear biases — is cast to fp32 by `prepare_model_for_kbit_training`, frozen.
//! bnb's `Linear4bit.forward` casts the input to the compute dtype, multiplies against a
//! freshly dequantized weight, and casts the result back to the input's dtype; PEFT's
//! bitsandbytes LoRA layer then clones that result ("defensively", as its comment says) and,
//! under autocast, feeds `x` to the adapters without its fp32 cast.

use crate::config::{Mode, Parallelism, Quantization, TrainConfig};
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, V};
use crate::sim::ops::{self, quant::QuantWeight};
use crate::sim::timeline::{Category, Name};

/// A Linear layer: its weight and bias, and its LoRA adapters (A, B) if it is a target.
#[derive(Debug, Clone, Copy)]
pub struct Proj {
    /// The weight parameter (for a quantized Linear, its packed data).
    pub w: usize,
    /// The bitsandbytes storage when the base weight is quantized.
    pub quant: Option<QuantWeight>,
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
    quantization: Quantization,
    double_quant: bool,
    /// Under ZeRO or FSDP the frozen weights bitsandbytes leaves unquantized stay in the
    /// half dtype (see `weight`).
    sharded: bool,
}

impl Params {
    pub fn new(cfg: &TrainConfig) -> Params {
        Params {
            all_frozen: cfg.mode == Mode::Inference,
            lora_rank: cfg.lora_rank,
            lora_dropout: cfg.lora_dropout,
            targets: cfg.lora_target_list(),
            base: DType::of_precision(cfg.dtype),
            quantization: cfg.quantization,
            double_quant: cfg.double_quant,
            sharded: !matches!(cfg.parallelism, Parallelism::Ddp | Parallelism::Tp),
        }
    }

    /// A non-Linear weight (embeddings, norms, lm_head): trainable fp32, or frozen under LoRA
    /// and in inference.
    pub fn weight(&self, e: &mut Engine, name: Name, dims: &[u64], decay: bool) -> usize {
        if self.all_frozen {
            // Inference: loaded with torch_dtype; bitsandbytes leaves the rest in that dtype.
            e.add_param_as(name, dims, decay, self.base, false)
        } else if self.quantization != Quantization::None && !self.sharded {
            // prepare_model_for_kbit_training: what bitsandbytes left unquantized goes fp32.
            // Not under ZeRO or FSDP: DeepSpeed's engine casts the whole module to the half
            // dtype (runtime/engine.py, `_configure_distributed_model`: `module.bfloat16()`),
            // FSDP flattens only tensors of one dtype (`_flat_param.py`,
            // `_validate_tensors_to_flatten`) and TRL skips the fp32 cast for sharded QLoRA
            // (trl/trainer/sft_trainer.py, `is_sharded_qlora`).
            e.add_param_as(name, dims, decay, DType::F32, false)
        } else if self.lora_rank > 0 {
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
        let quant = (self.quantization != Quantization::None).then(|| {
            let name = |what| Name::layer_param(l, module, what);
            let nested = self.double_quant;
            ops::quant::quantize(e, self.quantization, (out, inp), nested, self.base, &name)
        });
        let w = match quant {
            Some(q) => q.data,
            None => self.weight(e, Name::layer_param(l, module, "weight"), &[out, inp], true),
        };
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
            quant,
            b,
            lora,
            dropout: self.lora_dropout,
        }
    }
}

/// `layer(x)`: nn.Linear, or PEFT's LoRA Linear when the layer has adapters.
pub fn forward(e: &mut Engine, x: V, p: Proj, layer: Option<u32>, module: &'static str) -> V {
    if let Some(q) = p.quant {
        return quantized_forward(e, x, p, q, layer, module);
    }
    let result = ops::linear(e, x, p.w, p.b, layer, module);
    let Some(adapters) = p.lora else {
        return result;
    };
    let name = |what| Name::at(layer, module, what);
    // `_cast_input_dtype(x, lora_A.weight.dtype)`: fp32 for PEFT's upcast adapters; the half
    // dtype where ZeRO's module or FSDP's gathered flat parameters hold them (a no-op then).
    let to = e.dtype(e.params[adapters.0].t);
    let x32 = ops::to_dtype(e, x, to, name("lora_input_fp32"));
    adapters_forward(e, result, x32, adapters, p.dropout, (layer, module))
}

/// bitsandbytes' Linear4bit / Linear8bitLt forward, and PEFT's LoRA layer for them.
fn quantized_forward(
    e: &mut Engine,
    x: V,
    p: Proj,
    q: QuantWeight,
    layer: Option<u32>,
    module: &'static str,
) -> V {
    let name = |what| Name::at(layer, module, what);
    let inp = e.dtype(x.t);
    // compute_dtype = bnb_4bit_compute_dtype (the run's half dtype); int8 runs in fp16 on
    // bf16 inputs too, but returns the input's dtype: counted in the input's half dtype.
    let compute = e.autocast.unwrap_or(inp);
    let xc = ops::to_dtype(e, x, compute, name("input_compute"));
    // `self.bias.to(self.compute_dtype)`: a copy of the fp32 bias for each call.
    let bias = p.b.and_then(|b| {
        let (bt, shape) = (e.params[b].t, e.params[b].shape);
        (e.dtype(bt) != compute)
            .then(|| e.alloc(name("bias_compute"), shape, compute, Category::Activations))
    });
    let y = ops::quant::quant_matmul(e, xc, q, (layer, module));
    e.drop_value(xc);
    if let Some(b) = bias {
        e.release(b);
    }
    // `.to(inp_dtype)`
    let result = ops::to_dtype(e, y, inp, name("out_input_dtype"));
    e.drop_value(y);
    let Some(adapters) = p.lora else {
        return result;
    };
    let cloned = ops::clone(e, result, name("out_clone"));
    e.drop_value(result);
    // Under autocast PEFT leaves x as it is; without, it casts x to the adapters' fp32.
    let xa = if e.autocast.is_some() {
        e.retain(x.t);
        x
    } else {
        let to = e.dtype(e.params[adapters.0].t);
        ops::to_dtype(e, x, to, name("lora_input_fp32"))
    };
    adapters_forward(e, cloned, xa, adapters, p.dropout, (layer, module))
}

/// `result + lora_B(lora_A(dropout(x))) * scaling`; consumes `result` and `x` (a local of
/// the forward that goes once dropout has run).
fn adapters_forward(
    e: &mut Engine,
    result: V,
    x: V,
    (a, b): (usize, usize),
    dropout: f64,
    (layer, module): (Option<u32>, &'static str),
) -> V {
    let name = |what| Name::at(layer, module, what);
    let xd = ops::dropout(e, x, dropout, name("lora_dropout"));
    e.drop_value(x);
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
