//! nanoGPT's GPT in candle, written once: the probe runs it on candle's tensors
//! (src/probe/model.rs) and the simulator's candle runtime on shape-only tensors (`T`), so the
//! op sequence both see is the same by construction.
//!
//! The structure is model.py's: token and position embedding, dropout, `n_layer` pre-LN blocks
//! (LayerNorm, causal self-attention with `c_attn`/`c_proj`, 4x GELU MLP with `c_fc`/`c_proj`),
//! final LayerNorm, `lm_head` tied to `wte`, cross-entropy. Only ops with a backward are used:
//! candle-nn's fused `LayerNorm`, `ops::layer_norm`, `rms_norm` and `softmax_last_dim` silently
//! stop gradients, so LayerNorm is written out as `ops::layer_norm_slow` does (with an optional
//! bias), and softmax, log_softmax and nll as candle-nn 0.11.1's `ops::softmax`,
//! `ops::log_softmax` and `loss::nll` do. docs/candle-runtime.md counts this op sequence.

use crate::sim::timeline::Category;
use crate::sim::DType;
use candle_core::Result;

/// The model's dimensions (validated by the caller).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub h: usize,
    pub v: usize,
    pub l: usize,
    pub bias: bool,
    /// Parameters, activations and optimizer state (candle has no autocast).
    pub dt: DType,
    /// Dropout probability (0: no dropout op at all).
    pub dropout: f32,
}

impl Dims {
    /// The dims of a checked candle shape, in `dt`, with dropout probability `dropout`.
    pub fn of(s: &super::Shape, dt: DType, dropout: f32) -> Dims {
        Dims {
            b: s.batch_size,
            t: s.block_size,
            c: s.n_embd,
            h: s.n_head,
            v: s.vocab_size,
            l: s.n_layer,
            bias: s.bias,
            dt,
            dropout,
        }
    }
}

/// Elementwise binary ops, with or without broadcasting.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Div,
}

/// Elementwise unary ops.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Un {
    Sqr,
    Sqrt,
    Exp,
    Log,
    Neg,
    Erf,
    GeluErf,
}

/// What the GPT asks of a tensor: candle's ops under their candle names.
pub trait CandleTensor: Clone + Sized {
    /// The module whose code runs from here on (names what the simulator allocates).
    fn enter(_layer: Option<u32>, _module: &'static str, _category: Category) {}
    fn dims(&self) -> Vec<usize>;
    fn dtype(&self) -> DType;
    fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self>;
    fn reshape(&self, dims: &[usize]) -> Result<Self>;
    fn transpose(&self, a: usize, b: usize) -> Result<Self>;
    /// The last two dims swapped.
    fn t(&self) -> Result<Self>;
    fn unsqueeze(&self, dim: usize) -> Result<Self>;
    fn contiguous(&self) -> Result<Self>;
    fn broadcast_as(&self, dims: &[usize]) -> Result<Self>;
    fn matmul(&self, r: &Self) -> Result<Self>;
    /// x · mul + add.
    fn affine(&self, mul: f64, add: f64) -> Result<Self>;
    /// Same-shape `+`, `-`, `*`, `/` (`add`, `mul`, ...).
    fn binary(&self, r: &Self, op: Bin) -> Result<Self>;
    /// `broadcast_add` and the like.
    fn broadcast(&self, r: &Self, op: Bin) -> Result<Self>;
    fn unary(&self, op: Un) -> Result<Self>;
    fn sum_keepdim(&self, dim: usize) -> Result<Self>;
    fn max_keepdim(&self, dim: usize) -> Result<Self>;
    fn sum_all(&self) -> Result<Self>;
    fn to_dtype(&self, dt: DType) -> Result<Self>;
    /// `self` is the u8 condition.
    fn where_cond(&self, on_true: &Self, on_false: &Self) -> Result<Self>;
    fn index_select0(&self, idx: &Self) -> Result<Self>;
    fn gather1(&self, idx: &Self) -> Result<Self>;
    /// candle_nn::ops::dropout (the caller skips it when p is 0).
    fn dropout(&self, p: f32) -> Result<Self>;
}

/// How a parameter starts (nanoGPT's init: normal(0, 0.02) weights, LayerNorm ones, zero
/// biases); only the probe's real tensors care.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Init {
    Normal,
    Ones,
    Zeros,
}

/// Where the parameters and buffers come from: candle-nn's VarMap (the probe), or shape-only
/// variables (the simulator).
pub trait Weights<X> {
    /// The parameter `what` of `module` (of block `layer`, or top-level), in creation order.
    fn weight(
        &mut self,
        layer: Option<u32>,
        module: &'static str,
        what: &'static str,
        dims: &[usize],
        init: Init,
    ) -> Result<X>;
    /// nanoGPT's `bias` buffer ((T, T) u8, 1 on and below the diagonal), `pos` (0..T as
    /// u32) and a scalar -inf in `dt` for masked_fill.
    fn buffers(&mut self, t: usize, dt: DType) -> Result<[X; 3]>;
}

struct LayerNorm<X>(X, Option<X>);
struct Linear<X>(X, Option<X>);

struct Block<X> {
    ln_1: LayerNorm<X>,
    c_attn: Linear<X>,
    attn_proj: Linear<X>,
    ln_2: LayerNorm<X>,
    c_fc: Linear<X>,
    mlp_proj: Linear<X>,
}

/// nanoGPT's GPT.
pub struct Gpt<X> {
    d: Dims,
    wte: X,
    wpe: X,
    blocks: Vec<Block<X>>,
    ln_f: LayerNorm<X>,
    /// `bias`, `pos` and -inf (see [`Weights::buffers`]).
    causal: X,
    positions: X,
    neg_inf: X,
}

impl<X: CandleTensor> Gpt<X> {
    /// The parameters in candle's VarMap order of creation (wte, wpe, each block's, ln_f),
    /// then the buffers.
    pub fn new(d: Dims, w: &mut impl Weights<X>) -> Result<Gpt<X>> {
        let (c, bias) = (d.c, d.bias);
        let wte = w.weight(None, "wte", "weight", &[d.v, c], Init::Normal)?;
        let wpe = w.weight(None, "wpe", "weight", &[d.t, c], Init::Normal)?;
        let mut blocks = Vec::with_capacity(d.l);
        for i in 0..d.l {
            let l = Some(i as u32);
            // Field by field: the order of creation is the VarMap's (and the Timeline's).
            blocks.push(Block {
                ln_1: layer_norm(w, l, "ln_1", c, bias)?,
                c_attn: linear(w, l, "attn.c_attn", 3 * c, c, bias)?,
                attn_proj: linear(w, l, "attn.c_proj", c, c, bias)?,
                ln_2: layer_norm(w, l, "ln_2", c, bias)?,
                c_fc: linear(w, l, "mlp.c_fc", 4 * c, c, bias)?,
                mlp_proj: linear(w, l, "mlp.c_proj", c, 4 * c, bias)?,
            });
        }
        let ln_f = layer_norm(w, None, "ln_f", c, bias)?;
        X::enter(None, "attn", Category::Other);
        let [causal, positions, neg_inf] = w.buffers(d.t, d.dt)?;
        Ok(Gpt {
            d,
            wte,
            wpe,
            blocks,
            ln_f,
            causal,
            positions,
            neg_inf,
        })
    }

    /// `ops::layer_norm_slow` with an optional bias: statistics in f32, the affine part in
    /// the model's dtype.
    fn ln(&self, ln: &LayerNorm<X>, x: &X) -> Result<X> {
        let dtype = x.dtype();
        let last = x.dims().len() - 1;
        let n = self.d.c as f64;
        let x = x.to_dtype(DType::F32)?;
        let mean = x.sum_keepdim(last)?.affine(1.0 / n, 0.0)?;
        let xc = x.broadcast(&mean, Bin::Sub)?;
        let var = xc.unary(Un::Sqr)?.sum_keepdim(last)?.affine(1.0 / n, 0.0)?;
        let std = var.affine(1.0, 1e-5)?.unary(Un::Sqrt)?;
        let xn = xc.broadcast(&std, Bin::Div)?;
        let y = xn.to_dtype(dtype)?.broadcast(&ln.0, Bin::Mul)?;
        match &ln.1 {
            Some(b) => y.broadcast(b, Bin::Add),
            None => Ok(y),
        }
    }

    /// candle-nn's Linear on a contiguous (B, T, K) input: reshape, matmul with w.t(),
    /// reshape, broadcast_add of the bias.
    fn lin(&self, l: &Linear<X>, x: &X) -> Result<X> {
        let d = x.dims();
        let (b, t, k) = (d[0], d[1], d[2]);
        let y = x.reshape(&[b * t, k])?.matmul(&l.0.t()?)?;
        let n = y.dims()[1];
        let y = y.reshape(&[b, t, n])?;
        match &l.1 {
            Some(bias) => y.broadcast(bias, Bin::Add),
            None => Ok(y),
        }
    }

    fn drop(&self, x: X) -> Result<X> {
        match self.d.dropout > 0.0 {
            true => x.dropout(self.d.dropout),
            false => Ok(x),
        }
    }

    /// candle-nn's Embedding: flatten the ids, index_select rows, reshape.
    fn emb(&self, w: &X, idx: &X) -> Result<X> {
        let mut dims = idx.dims();
        let flat = idx.reshape(&[dims.iter().product()])?;
        dims.push(self.d.c);
        w.index_select0(&flat)?.reshape(&dims)
    }

    /// candle-nn's `ops::softmax` over `dim`: max, subtract, exp, sum, divide.
    fn softmax(x: &X, dim: usize) -> Result<X> {
        let num = x
            .broadcast(&x.max_keepdim(dim)?, Bin::Sub)?
            .unary(Un::Exp)?;
        num.broadcast(&num.sum_keepdim(dim)?, Bin::Div)
    }

    fn attention(&self, layer: Option<u32>, blk: &Block<X>, x: &X) -> Result<X> {
        let Dims { b, t, c, h, .. } = self.d;
        let hd = c / h;
        X::enter(layer, "attn.c_attn", Category::Activations);
        let qkv = self.lin(&blk.c_attn, x)?;
        X::enter(layer, "attn", Category::Activations);
        let head = |k: usize| -> Result<X> {
            qkv.narrow(2, k * c, c)?
                .reshape(&[b, t, h, hd])?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let att = q.matmul(&k.t()?)?.affine(1.0 / (hd as f64).sqrt(), 0.0)?;
        // masked_fill(bias[:T, :T] == 0, -inf)
        let shape = att.dims();
        let mask = self.causal.narrow(0, 0, t)?.narrow(1, 0, t)?;
        let att = mask
            .broadcast_as(&shape)?
            .where_cond(&att, &self.neg_inf.broadcast_as(&shape)?)?;
        let att = self.drop(Self::softmax(&att, 3)?)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape(&[b, t, c])?;
        X::enter(layer, "attn.c_proj", Category::Activations);
        self.drop(self.lin(&blk.attn_proj, &y)?)
    }

    fn block(&self, layer: Option<u32>, blk: &Block<X>, x: X) -> Result<X> {
        X::enter(layer, "ln_1", Category::Activations);
        let a = self.ln(&blk.ln_1, &x)?;
        let a = self.attention(layer, blk, &a)?;
        X::enter(layer, "residual", Category::Activations);
        let x = x.binary(&a, Bin::Add)?;
        X::enter(layer, "ln_2", Category::Activations);
        let n = self.ln(&blk.ln_2, &x)?;
        X::enter(layer, "mlp.c_fc", Category::Activations);
        let m = self.lin(&blk.c_fc, &n)?.unary(Un::GeluErf)?;
        X::enter(layer, "mlp.c_proj", Category::Activations);
        let m = self.drop(self.lin(&blk.mlp_proj, &m)?)?;
        X::enter(layer, "residual", Category::Activations);
        x.binary(&m, Bin::Add)
    }

    /// Logits (B, T, V) for token ids `idx` (B, T) u32, in the model's dtype.
    pub fn logits(&self, idx: &X) -> Result<X> {
        let t = self.d.t;
        X::enter(None, "wte", Category::Activations);
        let tok = self.emb(&self.wte, idx)?;
        X::enter(None, "wpe", Category::Activations);
        let pos = self.emb(&self.wpe, &self.positions.narrow(0, 0, t)?)?;
        X::enter(None, "drop", Category::Activations);
        let mut x = self.drop(tok.broadcast(&pos, Bin::Add)?)?;
        for (i, blk) in self.blocks.iter().enumerate() {
            x = self.block(Some(i as u32), blk, x)?;
        }
        X::enter(None, "ln_f", Category::Activations);
        let xf = self.ln(&self.ln_f, &x)?;
        X::enter(None, "lm_head", Category::Logits);
        self.lin(&Linear(self.wte.clone(), None), &xf)
    }

    /// Mean cross-entropy of the next-token `targets` (B, T) u32, in f32 as
    /// `F.cross_entropy(logits.view(-1, V), targets.view(-1))`: candle-nn's `cross_entropy`,
    /// `nll(log_softmax(logits, 1), targets)` (a scalar that holds the whole graph).
    pub fn loss(&self, idx: &X, targets: &X) -> Result<X> {
        let Dims { b, t, v, .. } = self.d;
        let logits = self.logits(idx)?;
        X::enter(None, "loss", Category::Logits);
        let logits = logits.reshape(&[b * t, v])?.to_dtype(DType::F32)?;
        // log_softmax(logits, 1)
        let diff = logits.broadcast(&logits.max_keepdim(1)?, Bin::Sub)?;
        let sum_exp = diff.unary(Un::Exp)?.sum_keepdim(1)?;
        let log_sm = diff.broadcast(&sum_exp.unary(Un::Log)?, Bin::Sub)?;
        // nll: gather the targets' log-probabilities, sum, scale by -1/N.
        let tgt = targets.reshape(&[b * t])?.unsqueeze(1)?;
        log_sm
            .gather1(&tgt)?
            .sum_all()?
            .affine(-1.0 / (b * t) as f64, 0.0)
    }
}

fn layer_norm<X>(
    w: &mut impl Weights<X>,
    layer: Option<u32>,
    module: &'static str,
    c: usize,
    bias: bool,
) -> Result<LayerNorm<X>> {
    let weight = w.weight(layer, module, "weight", &[c], Init::Ones)?;
    let b = match bias {
        true => Some(w.weight(layer, module, "bias", &[c], Init::Zeros)?),
        false => None,
    };
    Ok(LayerNorm(weight, b))
}

fn linear<X>(
    w: &mut impl Weights<X>,
    layer: Option<u32>,
    module: &'static str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear<X>> {
    let weight = w.weight(layer, module, "weight", &[out, inp], Init::Normal)?;
    let b = match bias {
        true => Some(w.weight(layer, module, "bias", &[out], Init::Zeros)?),
        false => None,
    };
    Ok(Linear(weight, b))
}
