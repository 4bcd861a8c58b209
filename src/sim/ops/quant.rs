//! bitsandbytes' quantized Linear layers: the frozen base weights of QLoRA and of 4/8-bit
//! inference, what they keep on the device and the bf16 copies each matmul makes.
//!
//! Storage (`Params4bit` / `Int8Params`, one set of tensors per Linear):
//! - 4-bit (NF4 / FP4): the packed weight, uint8 of `ceil(out*in / 2)` elements; an absmax per
//!   block of 64 weights — fp32, or with double quantization uint8 plus an fp32 absmax per 256
//!   of those and a 0-dim fp32 offset; the 16-entry fp32 code of the 4-bit type.
//! - int8 (LLM.int8()): the int8 weight (out × in) and an fp32 scale per output row (SCB).
//!
//! Loading (`Params4bit.to(cuda)` → `quantize_4bit`): the weight comes to the device in the
//! half dtype, its fp32 absmax and packed data are made, then the half copy goes.
//!
//! Forward (`MatMul4Bit`): `F.linear(A, dequantize_4bit(B).t(), bias)` — the absmax is
//! dequantized to fp32 (double quant), the whole weight to the compute dtype (out × in), the
//! matmul runs, and the copy goes; the Function saves only the packed weight. Its backward
//! dequantizes again for `grad_A = grad_out @ W`. `MatMul8bitLt` quantizes the input row-wise
//! to int8, multiplies in int32 and dequantizes; its backward dequantizes the int8 weight
//! (`CB.to(dtype) * SCB / 127`) and, as the Function keeps it, needs the input saved.
//!
//! vLLM's pre-quantized checkpoints (inference only) load straight into their storage, no half
//! copy, with the tensors each method's `create_weights` registers (4 bits packed 8 per int32,
//! groups of 128 input channels):
//! - AWQ (vllm/model_executor/layers/quantization/awq.py `AWQLinearMethod`): `qweight` int32
//!   (in, out/8), `qzeros` int32 (in/128, out/8), `scales` (in/128, out) in the half dtype.
//!   Its forward for 256 tokens or more runs `awq_dequantize` and a plain matmul: a transient
//!   (out, in) half weight, as bitsandbytes' 4-bit path (the Marlin kernels vLLM picks on
//!   sm80+ make none: an upper bound there).
//! - GPTQ (gptq.py `GPTQLinearMethod`, desc_act off): `qweight` int32 (in/8, out), `g_idx`
//!   int32 (in), `qzeros` int32 (in/128, out/8), `scales` (in/128, out); forward as AWQ's.
//! - FP8 (fp8.py `Fp8LinearMethod`, a serialized fp8 checkpoint): `weight` e4m3 (out, in) and a
//!   per-tensor fp32 `weight_scale`; the forward quantizes the input to fp8 with one dynamic
//!   fp32 scale (`scaled_fp8_quant`) and `cutlass_scaled_mm` writes the half output.

use super::{save, Backward, Op};
use crate::config::Quantization;
use crate::sim::autograd::Edge;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::timeline::{Category, Name, Shape};

/// bitsandbytes' 4-bit block size (weights per absmax).
pub const BLOCK_4BIT: u64 = 64;
/// Double quantization's block size (absmax values per fp32 second-level absmax).
pub const BLOCK_NESTED: u64 = 256;

/// A quantized Linear's storage on the device and its shape.
#[derive(Debug, Clone, Copy)]
pub struct QuantWeight {
    pub kind: Quantization,
    pub out: u64,
    pub inp: u64,
    /// The packed (4-bit) or int8 weight: a frozen parameter.
    pub data: usize,
    /// 4-bit with double quantization: the absmax is stored in uint8.
    pub nested: bool,
}

/// `Params4bit(w).to(cuda)` / `Int8Params(w).to(cuda)`: the weight arrives in `half`, is
/// quantized, and the half copy is freed. Returns the storage; `name(what)` names its tensors.
pub fn quantize(
    e: &mut Engine,
    kind: Quantization,
    (out, inp): (u64, u64),
    nested: bool,
    half: DType,
    name: &dyn Fn(&'static str) -> Name,
) -> QuantWeight {
    if kind.is_prequantized() {
        return load_prequantized(e, kind, (out, inp), half, name);
    }
    let n = out * inp;
    let staged = e.alloc(
        name("weight.staged"),
        Shape::new(&[out, inp]),
        half,
        Category::Other,
    );
    let keep = |e: &mut Engine, what, dims: &[u64], dtype| {
        e.alloc(name(what), Shape::new(dims), dtype, Category::Parameters);
    };
    let data;
    if kind.is_4bit() {
        let blocks = n.div_ceil(BLOCK_4BIT);
        // quantize_4bit: absmax (fp32), then the packed output.
        let absmax = e.alloc(
            name("weight.absmax_fp32"),
            Shape::new(&[blocks]),
            DType::F32,
            if nested {
                Category::Other
            } else {
                Category::Parameters
            },
        );
        data = packed_4bit(e, n, half, name("weight"));
        keep(e, "weight.code", &[16], DType::F32);
        if nested {
            // offset = absmax.mean(); absmax -= offset; quantize_blockwise(absmax, 256).
            keep(e, "weight.offset", &[], DType::F32);
            keep(e, "weight.absmax", &[blocks], DType::U8);
            keep(
                e,
                "weight.absmax2",
                &[blocks.div_ceil(BLOCK_NESTED)],
                DType::F32,
            );
            e.release(absmax);
        }
    } else {
        data = e.add_param_as(name("weight"), &[out, inp], false, DType::I8, false);
        keep(e, "weight.SCB", &[out], DType::F32);
    }
    e.release(staged);
    QuantWeight {
        kind,
        out,
        inp,
        data,
        nested,
    }
}

/// The packed 4-bit weight: uint8, two weights a byte — or, where FSDP or ZeRO-3 shard it,
/// typed as `bnb_4bit_quant_storage` = the half dtype (transformers' fsdp_qlora guide): bnb's
/// `quantize_4bit` makes `torch.zeros(((n + 1) // mod, 1), dtype=quant_storage)` with
/// `mod = dtype2bytes[quant_storage] * 2` (bitsandbytes/functional.py) — the same bytes in a
/// float dtype that FlatParameter and ZeRO's partitioner flatten beside the bf16 weights.
fn packed_4bit(e: &mut Engine, n: u64, half: DType, name: Name) -> usize {
    let (dtype, rows) = if e.frozen_view {
        (half, (n + 1) / (half.size() * 2))
    } else {
        (DType::U8, n.div_ceil(2))
    };
    e.add_param_as(name, &[rows, 1], false, dtype, false)
}

/// vLLM's AWQ / GPTQ / FP8 storage, loaded as the checkpoint holds it.
fn load_prequantized(
    e: &mut Engine,
    kind: Quantization,
    (out, inp): (u64, u64),
    half: DType,
    name: &dyn Fn(&'static str) -> Name,
) -> QuantWeight {
    const GROUP: u64 = 128;
    const PACK: u64 = 8;
    let groups = inp.div_ceil(GROUP);
    let keep = |e: &mut Engine, what, dims: &[u64], dtype| {
        e.add_param_as(name(what), dims, false, dtype, false)
    };
    let data = match kind {
        Quantization::Awq => {
            let q = keep(e, "qweight", &[inp, out.div_ceil(PACK)], DType::I32);
            keep(e, "qzeros", &[groups, out.div_ceil(PACK)], DType::I32);
            keep(e, "scales", &[groups, out], half);
            q
        }
        Quantization::Gptq => {
            let q = keep(e, "qweight", &[inp.div_ceil(PACK), out], DType::I32);
            keep(e, "g_idx", &[inp], DType::I32);
            keep(e, "qzeros", &[groups, out.div_ceil(PACK)], DType::I32);
            keep(e, "scales", &[groups, out], half);
            q
        }
        _ => {
            let w = keep(e, "weight", &[out, inp], DType::F8);
            keep(e, "weight_scale", &[1], DType::F32);
            w
        }
    };
    QuantWeight {
        kind,
        out,
        inp,
        data,
        nested: false,
    }
}

/// What a quantized Linear's backward needs: the storage is a parameter (always alive).
#[derive(Debug, Clone, Copy)]
pub struct QuantSaved {
    pub q: QuantWeight,
    pub m: u64,
    /// The compute dtype the gradient arrives in.
    pub dtype: DType,
    /// int8: the input the Function keeps.
    pub x: Option<T>,
    pub name: Name,
}

/// The weight dequantized to `dtype` for one matmul (and, for double quantization, the fp32
/// absmax it needs first): allocated, then the absmax goes when dequantize returns. The
/// caller frees the weight after the matmul.
fn dequantize(e: &mut Engine, q: &QuantWeight, dtype: DType, name: Name) -> T {
    let absmax = (q.kind.is_4bit() && q.nested).then(|| {
        e.alloc(
            Name {
                what: "absmax_dequant",
                ..name
            },
            Shape::new(&[(q.out * q.inp).div_ceil(BLOCK_4BIT)]),
            DType::F32,
            Category::Activations,
        )
    });
    let w = e.alloc(
        Name {
            what: "weight_dequant",
            ..name
        },
        Shape::new(&[q.out, q.inp]),
        dtype,
        Category::AutocastCopies,
    );
    if let Some(a) = absmax {
        e.release(a);
    }
    w
}

/// `bnb.matmul_4bit(x, W.t(), bias)` / `bnb.matmul(x, W, state=...)` for x of compute dtype
/// `dtype` viewed as (M, in): the output (…, out) in `dtype`. A bias is added inside the
/// matmul (addmm): no tensor of its own.
pub fn quant_matmul(
    e: &mut Engine,
    x: V,
    q: QuantWeight,
    (layer, module): (Option<u32>, &'static str),
) -> V {
    let dtype = e.dtype(x.t);
    let xs = e.shape(x.t);
    let m = xs.numel().unwrap_or(0) / q.inp.max(1);
    let out_shape = match xs.dims() {
        [b, t, k] if *k == q.inp => Shape::new(&[*b, *t, q.out]),
        _ => Shape::new(&[m, q.out]),
    };
    let name = |what| Name::at(layer, module, what);
    let out;
    let mut saved_x = None;
    if q.kind == Quantization::Fp8 {
        let xq = e.alloc(
            name("input_fp8"),
            Shape::new(&[m, q.inp]),
            DType::F8,
            Category::Activations,
        );
        let scale = e.alloc(
            name("input_scale"),
            Shape::new(&[1]),
            DType::F32,
            Category::Activations,
        );
        out = e.alloc(name("out"), out_shape, dtype, Category::Activations);
        e.release(scale);
        e.release(xq);
    } else if q.kind.is_4bit() || q.kind.is_prequantized() {
        let w = dequantize(e, &q, dtype, name("grad"));
        out = e.alloc(name("out"), out_shape, dtype, Category::Activations);
        e.matmul_workspace();
        e.release(w);
    } else {
        // double_quant(A): int8 rows and their fp32 scales; igemmlt's int32 result; the
        // dequantized output.
        let ca = e.alloc(
            name("input_int8"),
            Shape::new(&[m, q.inp]),
            DType::I8,
            Category::Activations,
        );
        let sca = e.alloc(
            name("input_scale"),
            Shape::new(&[m]),
            DType::F32,
            Category::Activations,
        );
        let acc = e.alloc(
            name("out_int32"),
            Shape::new(&[m, q.out]),
            DType::I32,
            Category::Activations,
        );
        out = e.alloc(name("out"), out_shape, dtype, Category::Activations);
        for t in [acc, sca, ca] {
            e.release(t);
        }
        if x.edge != Edge::None {
            saved_x = Some(save(e, x.t));
        }
    }
    let edge = e.push_node(
        Op::QuantLinear(QuantSaved {
            q,
            m,
            dtype,
            x: saved_x,
            name: name("grad"),
        }),
        [x.edge, Edge::None, Edge::None],
    );
    V { t: out, edge }
}

impl Backward for QuantSaved {
    /// grad_A = grad_out @ dequantize(W): the weight dequantized again, the input's gradient.
    fn backward(self, e: &mut Engine, g: T) -> [Option<T>; 3] {
        let w = dequantize(e, &self.q, self.dtype, self.name);
        let gx = e.alloc(
            Name {
                what: "input.grad",
                ..self.name
            },
            Shape::new(&[self.m, self.q.inp]),
            self.dtype,
            Category::Activations,
        );
        e.release(w);
        e.release(g);
        if let Some(x) = self.x {
            e.release(x);
        }
        [Some(gx), None, None]
    }

    fn saved(&self) -> [Option<T>; 3] {
        [self.x, None, None]
    }
}
