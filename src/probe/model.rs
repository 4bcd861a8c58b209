//! The config's GPT in candle-nn: the model of src/sim/candle/nanogpt.rs (nanoGPT's model.py
//! op for op, written once for the probe and the simulator's candle runtime) on candle's
//! own tensors, with its parameters in a VarMap under nanoGPT's state_dict names
//! (`transformer.h.0.attn.c_attn.weight`, …; `lm_head.weight` is `wte`'s tensor).

use crate::sim::candle::nanogpt::{self, Bin, CandleTensor, Dims, Init, Un, Weights};
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

// The shape and the dtype rule are shared with the simulator's candle runtime, which owns
// them (sim/candle/shape.rs): the probe depends on the simulator, not the other way round.
use crate::sim::candle::{candle_dtype, sim_dtype};
pub use crate::sim::candle::{dtype_of, Shape};

/// nanoGPT's GPT on candle's tensors.
pub type Gpt = nanogpt::Gpt<Tensor>;

/// Build the model with its parameters registered in `varmap`.
pub fn gpt(
    shape: Shape,
    dropout: f32,
    dtype: DType,
    device: &Device,
    varmap: &VarMap,
) -> Result<Gpt> {
    let d = Dims::of(&shape, sim_dtype(dtype), dropout);
    let mut w = VarWeights {
        vb: VarBuilder::from_varmap(varmap, dtype, device),
        device: device.clone(),
    };
    nanogpt::Gpt::new(d, &mut w)
}

impl CandleTensor for Tensor {
    fn dims(&self) -> Vec<usize> {
        Tensor::dims(self).to_vec()
    }
    fn dtype(&self) -> crate::sim::DType {
        sim_dtype(Tensor::dtype(self))
    }
    fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        Tensor::narrow(self, dim, start, len)
    }
    fn reshape(&self, dims: &[usize]) -> Result<Tensor> {
        Tensor::reshape(self, dims.to_vec())
    }
    fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        Tensor::transpose(self, a, b)
    }
    fn t(&self) -> Result<Tensor> {
        Tensor::t(self)
    }
    fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        Tensor::unsqueeze(self, dim)
    }
    fn contiguous(&self) -> Result<Tensor> {
        Tensor::contiguous(self)
    }
    fn broadcast_as(&self, dims: &[usize]) -> Result<Tensor> {
        Tensor::broadcast_as(self, dims.to_vec())
    }
    fn matmul(&self, r: &Tensor) -> Result<Tensor> {
        Tensor::matmul(self, r)
    }
    fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        Tensor::affine(self, mul, add)
    }
    fn binary(&self, r: &Tensor, op: Bin) -> Result<Tensor> {
        match op {
            Bin::Add => self.add(r),
            Bin::Sub => self.sub(r),
            Bin::Mul => self.mul(r),
            Bin::Div => self.div(r),
        }
    }
    fn broadcast(&self, r: &Tensor, op: Bin) -> Result<Tensor> {
        match op {
            Bin::Add => self.broadcast_add(r),
            Bin::Sub => self.broadcast_sub(r),
            Bin::Mul => self.broadcast_mul(r),
            Bin::Div => self.broadcast_div(r),
        }
    }
    fn unary(&self, op: Un) -> Result<Tensor> {
        match op {
            Un::Sqr => self.sqr(),
            Un::Sqrt => self.sqrt(),
            Un::Exp => self.exp(),
            Un::Log => self.log(),
            Un::Neg => self.neg(),
            Un::Erf => self.erf(),
            Un::GeluErf => self.gelu_erf(),
        }
    }
    fn sum_keepdim(&self, dim: usize) -> Result<Tensor> {
        Tensor::sum_keepdim(self, dim)
    }
    fn max_keepdim(&self, dim: usize) -> Result<Tensor> {
        Tensor::max_keepdim(self, dim)
    }
    fn sum_all(&self) -> Result<Tensor> {
        Tensor::sum_all(self)
    }
    fn to_dtype(&self, dt: crate::sim::DType) -> Result<Tensor> {
        Tensor::to_dtype(self, candle_dtype(dt))
    }
    fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        Tensor::where_cond(self, on_true, on_false)
    }
    fn index_select0(&self, idx: &Tensor) -> Result<Tensor> {
        self.index_select(idx, 0)
    }
    fn gather1(&self, idx: &Tensor) -> Result<Tensor> {
        self.gather(idx, 1)
    }
    fn dropout(&self, p: f32) -> Result<Tensor> {
        candle_nn::ops::dropout(self, p)
    }
}

/// The parameters from a VarMap, under nanoGPT's names and with its init.
struct VarWeights<'a> {
    vb: VarBuilder<'a>,
    device: Device,
}

impl Weights<Tensor> for VarWeights<'_> {
    fn weight(
        &mut self,
        layer: Option<u32>,
        module: &'static str,
        what: &'static str,
        dims: &[usize],
        init: Init,
    ) -> Result<Tensor> {
        let path = match layer {
            Some(i) => format!("transformer.h.{i}.{module}"),
            None => format!("transformer.{module}"),
        };
        let init = match init {
            Init::Normal => candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            Init::Ones => candle_nn::Init::Const(1.0),
            Init::Zeros => candle_nn::Init::Const(0.0),
        };
        self.vb.pp(path).get_with_hints(dims.to_vec(), what, init)
    }

    fn buffers(&mut self, t: usize, dt: crate::sim::DType) -> Result<[Tensor; 3]> {
        let causal: Vec<u8> = (0..t * t).map(|k| u8::from(k % t <= k / t)).collect();
        let causal = Tensor::from_vec(causal, (t, t), &self.device)?;
        let positions = Tensor::arange(0u32, t as u32, &self.device)?;
        let neg_inf = Tensor::new(f32::NEG_INFINITY, &self.device)?.to_dtype(candle_dtype(dt))?;
        Ok([causal, positions, neg_inf])
    }
}

/// Random token ids (B, T) u32 in [0, V), as the probe's batch.
pub fn random_tokens(shape: &Shape, device: &Device) -> Result<Tensor> {
    let (b, t, v) = (shape.batch_size, shape.block_size, shape.vocab_size);
    let r = Tensor::rand(0f32, v as f32, (b, t), device)?;
    r.floor()?.clamp(0f32, (v - 1) as f32)?.to_dtype(DType::U32)
}

/// Every parameter of the model with its name, sorted by name.
pub fn named_params(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
