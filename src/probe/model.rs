//! The config's GPT in candle-nn, op for op the structure of nanoGPT's model.py: token and
//! position embedding, dropout, `n_layer` pre-LN blocks (LayerNorm, causal self-attention with
//! `c_attn`/`c_proj`, 4x GELU MLP with `c_fc`/`c_proj`), final LayerNorm, `lm_head` tied to
//! `wte`, cross-entropy.
//!
//! Only ops with a backward are used: candle-nn's fused `LayerNorm`, `ops::layer_norm`,
//! `rms_norm` and `softmax_last_dim` silently stop gradients. LayerNorm is written out
//! (mean, variance, as `ops::layer_norm_slow` does, with an optional bias) and softmax is
//! `ops::softmax(x, D::Minus1)`. The op sequence here is what docs/candle-runtime.md counts: change
//! one and the document (and the simulator's `candle` runtime) must change with it.

use candle_core::{DType, Device, Module, Result, Tensor, Var, D};
use candle_nn::{Embedding, Init, Linear, VarBuilder, VarMap};

// The shape and the dtype rule are shared with the simulator's candle runtime, which owns
// them (sim/candle/shape.rs): the probe depends on the simulator, not the other way round.
pub use crate::sim::candle::{dtype_of, Shape};

/// LayerNorm weight and optional bias; eps 1e-5 as torch.
pub struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl LayerNorm {
    fn new(n: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(n, "weight", Init::Const(1.0))?;
        let bias = match bias {
            true => Some(vb.get_with_hints(n, "bias", Init::Const(0.0))?),
            false => None,
        };
        Ok(LayerNorm { weight, bias })
    }

    /// `ops::layer_norm_slow` with an optional bias: statistics in f32, then back to the dtype.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let n = x.dim(D::Minus1)? as f64;
        let x = x.to_dtype(DType::F32)?;
        let mean = (x.sum_keepdim(D::Minus1)? / n)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / n)?;
        let xn = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        let y = xn.to_dtype(dtype)?.broadcast_mul(&self.weight)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// nanoGPT's GPT.
pub struct Gpt {
    shape: Shape,
    dropout: f32,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    /// (T, T) u8, 1 on and below the diagonal: nanoGPT's `bias` buffer.
    causal: Tensor,
    /// 0..T as u32: nanoGPT's `pos`.
    positions: Tensor,
    /// A scalar -inf in the model's dtype, broadcast as masked_fill's fill value.
    neg_inf: Tensor,
}

fn linear(i: usize, o: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    // nanoGPT's init: normal(0, 0.02) weights, zero biases.
    let w = vb.get_with_hints(
        (o, i),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    let b = match bias {
        true => Some(vb.get_with_hints(o, "bias", Init::Const(0.0))?),
        false => None,
    };
    Ok(Linear::new(w, b))
}

impl Gpt {
    /// Build the model with its parameters registered in `varmap` under nanoGPT's state_dict
    /// names (`transformer.h.0.attn.c_attn.weight`, …; `lm_head.weight` is `wte`'s tensor).
    pub fn new(
        shape: Shape,
        dropout: f32,
        dtype: DType,
        device: &Device,
        varmap: &VarMap,
    ) -> Result<Gpt> {
        let vb = VarBuilder::from_varmap(varmap, dtype, device);
        let (c, b) = (shape.n_embd, shape.bias);
        let emb = |n, name: &str| -> Result<Embedding> {
            let init = Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            };
            let w = vb
                .pp("transformer")
                .pp(name)
                .get_with_hints((n, c), "weight", init)?;
            Ok(Embedding::new(w, c))
        };
        let wte = emb(shape.vocab_size, "wte")?;
        let wpe = emb(shape.block_size, "wpe")?;
        let mut blocks = Vec::with_capacity(shape.n_layer);
        for i in 0..shape.n_layer {
            let vb = vb.pp(format!("transformer.h.{i}"));
            blocks.push(Block {
                ln_1: LayerNorm::new(c, b, vb.pp("ln_1"))?,
                c_attn: linear(c, 3 * c, b, vb.pp("attn.c_attn"))?,
                attn_proj: linear(c, c, b, vb.pp("attn.c_proj"))?,
                ln_2: LayerNorm::new(c, b, vb.pp("ln_2"))?,
                c_fc: linear(c, 4 * c, b, vb.pp("mlp.c_fc"))?,
                mlp_proj: linear(4 * c, c, b, vb.pp("mlp.c_proj"))?,
            });
        }
        let ln_f = LayerNorm::new(c, b, vb.pp("transformer.ln_f"))?;
        let lm_head = Linear::new(wte.embeddings().clone(), None);
        let t = shape.block_size;
        let causal: Vec<u8> = (0..t * t).map(|k| u8::from(k % t <= k / t)).collect();
        let causal = Tensor::from_vec(causal, (t, t), device)?;
        let positions = Tensor::arange(0u32, t as u32, device)?;
        let neg_inf = Tensor::new(f32::NEG_INFINITY, device)?.to_dtype(dtype)?;
        Ok(Gpt {
            shape,
            dropout,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            causal,
            positions,
            neg_inf,
        })
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    fn drop(&self, x: Tensor) -> Result<Tensor> {
        match self.dropout > 0.0 {
            true => candle_nn::ops::dropout(&x, self.dropout),
            false => Ok(x),
        }
    }

    fn attention(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let h = self.shape.n_head;
        let hd = c / h;
        let qkv = blk.c_attn.forward(x)?;
        let head = |k: usize| -> Result<Tensor> {
            qkv.narrow(2, k * c, c)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        // masked_fill(bias == 0, -inf)
        let shape = att.shape().clone();
        let mask = self.causal.narrow(0, 0, t)?.narrow(1, 0, t)?;
        let att = mask
            .broadcast_as(&shape)?
            .where_cond(&att, &self.neg_inf.broadcast_as(&shape)?)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let att = self.drop(att)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
        self.drop(blk.attn_proj.forward(&y)?)
    }

    fn mlp(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        let x = blk.c_fc.forward(x)?.gelu_erf()?;
        self.drop(blk.mlp_proj.forward(&x)?)
    }

    /// Logits (B, T, V) for token ids `idx` (B, T) u32, in the model's dtype.
    pub fn logits(&self, idx: &Tensor) -> Result<Tensor> {
        let (_b, t) = idx.dims2()?;
        let tok = self.wte.forward(idx)?;
        let pos = self.wpe.forward(&self.positions.narrow(0, 0, t)?)?;
        let mut x = self.drop(tok.broadcast_add(&pos)?)?;
        for blk in &self.blocks {
            x = (&x + self.attention(blk, &blk.ln_1.forward(&x)?)?)?;
            x = (&x + self.mlp(blk, &blk.ln_2.forward(&x)?)?)?;
        }
        self.lm_head.forward(&self.ln_f.forward(&x)?)
    }

    /// Mean cross-entropy of the next-token `targets` (B, T) u32, computed in f32 as
    /// `F.cross_entropy(logits.view(-1, V), targets.view(-1))`.
    pub fn loss(&self, idx: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.logits(idx)?;
        let (b, t, v) = logits.dims3()?;
        let logits = logits.reshape((b * t, v))?.to_dtype(DType::F32)?;
        candle_nn::loss::cross_entropy(&logits, &targets.flatten_all()?)
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
