//! The probe's GPT (src/probe/model.rs) on shape-only tensors: candle-nn 0.11.1's Linear,
//! Embedding, softmax, dropout and cross_entropy written out as candle-nn does them, each
//! module running in its own scope so that what it allocates carries its name.

use super::record::{self, Scope};
use super::tensor::{Bin, Un, T};
use crate::sim::timeline::Category;
use crate::sim::DType;

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
    pub dropout: bool,
}

/// Enter `module` of `layer` with `category` for what follows.
fn at(layer: Option<u32>, module: &'static str, category: Category) {
    record::enter(Scope::new(layer, module, category));
}

/// The parameters as created, in order.
struct Params(Vec<T>, DType);

impl Params {
    fn get(
        &mut self,
        layer: Option<u32>,
        module: &'static str,
        what: &'static str,
        dims: &[usize],
    ) -> T {
        at(layer, module, Category::Parameters);
        let t = T::var(dims, self.1, what);
        self.0.push(t.clone());
        t
    }
    fn lin(&mut self, l: Option<u32>, m: &'static str, out: usize, inp: usize, bias: bool) -> Lin {
        let w = self.get(l, m, "weight", &[out, inp]);
        Lin(w, bias.then(|| self.get(l, m, "bias", &[out])))
    }
    fn ln(&mut self, l: Option<u32>, m: &'static str, c: usize, bias: bool) -> Ln {
        let w = self.get(l, m, "weight", &[c]);
        Ln(w, bias.then(|| self.get(l, m, "bias", &[c])))
    }
}

struct Ln(T, Option<T>);
struct Lin(T, Option<T>);
struct Block {
    ln_1: Ln,
    c_attn: Lin,
    attn_proj: Lin,
    ln_2: Ln,
    c_fc: Lin,
    mlp_proj: Lin,
}

pub struct Gpt {
    d: Dims,
    wte: T,
    blocks: Vec<Block>,
    wpe: T,
    ln_f: Ln,
    causal: T,
    positions: T,
    neg_inf: T,
    pub params: Vec<T>,
}

impl Gpt {
    /// Parameters in candle's VarMap order of creation, then the mask, positions and -inf.
    pub fn new(d: Dims) -> Gpt {
        let mut ps = Params(Vec::new(), d.dt);
        let (c, bias) = (d.c, d.bias);
        let wte = ps.get(None, "wte", "weight", &[d.v, c]);
        let wpe = ps.get(None, "wpe", "weight", &[d.t, c]);
        let mut blocks = Vec::new();
        for i in 0..d.l {
            let l = Some(i as u32);
            blocks.push(Block {
                ln_1: ps.ln(l, "ln_1", c, bias),
                c_attn: ps.lin(l, "attn.c_attn", 3 * c, c, bias),
                attn_proj: ps.lin(l, "attn.c_proj", c, c, bias),
                ln_2: ps.ln(l, "ln_2", c, bias),
                c_fc: ps.lin(l, "mlp.c_fc", 4 * c, c, bias),
                mlp_proj: ps.lin(l, "mlp.c_proj", c, 4 * c, bias),
            });
        }
        let ln_f = ps.ln(None, "ln_f", c, bias);
        let (params, dt) = (ps.0, ps.1);
        at(None, "attn", Category::Other);
        let causal = T::new(&[d.t, d.t], DType::U8, "causal_mask");
        let positions = T::new(&[d.t], DType::U32, "positions");
        let neg_inf = T::new(&[], DType::F32, "neg_inf").to_dtype(dt);
        Gpt {
            d,
            wte,
            blocks,
            wpe,
            ln_f,
            causal,
            positions,
            neg_inf,
            params,
        }
    }

    /// layer_norm_slow: statistics in f32, the affine part in the model's dtype.
    fn ln(&self, ln: &Ln, x: &T) -> T {
        let dtype = x.dt();
        let last = x.rank() - 1;
        let x = x.to_dtype(DType::F32);
        let mean = x.sum_keepdim(&[last]).affine(1.0);
        let xc = x.bcast(&mean, Bin::Sub);
        let var = xc.unary(Un::Sqr).sum_keepdim(&[last]).affine(1.0);
        let xn = xc.bcast(&var.affine(1.0).unary(Un::Sqrt), Bin::Div);
        let y = xn.to_dtype(dtype).bcast(&ln.0, Bin::Mul);
        match &ln.1 {
            Some(b) => y.bcast(b, Bin::Add),
            None => y,
        }
    }

    /// candle-nn Linear on a contiguous (B, T, K) input: reshape, matmul with w.t(), reshape.
    fn lin(&self, l: &Lin, x: &T) -> T {
        debug_assert!(x.is_contiguous());
        let (b, t, k) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let y = x.reshape(&[b * t, k]).matmul(&l.0.t());
        let n = y.dims()[1];
        let y = y.reshape(&[b, t, n]);
        match &l.1 {
            Some(bias) => y.bcast(bias, Bin::Add),
            None => y,
        }
    }

    /// candle_nn::ops::dropout: rand, ge, to_dtype, scale — none of it tracked — then xs * mask.
    fn drop(&self, x: T) -> T {
        if !self.d.dropout {
            return x;
        }
        let mask = {
            let rand = T::new(x.dims(), DType::F32, "dropout_rand");
            let _p = T::new(&[], DType::F32, "dropout_p").broadcast_as(x.dims());
            rand.cmp().to_dtype(x.dt()).affine(1.0)
        };
        x.mul(&mask)
    }

    fn emb(&self, w: &T, idx: &T) -> T {
        let mut dims = idx.dims().to_vec();
        dims.push(self.d.c);
        let flat = idx.reshape(&[idx.dims().iter().product()]);
        w.index_select(&flat).reshape(&dims)
    }

    fn attention(&self, layer: Option<u32>, blk: &Block, x: &T) -> T {
        let Dims { b, t, c, h, .. } = self.d;
        let hd = c / h;
        at(layer, "attn.c_attn", Category::Activations);
        let qkv = self.lin(&blk.c_attn, x);
        at(layer, "attn", Category::Activations);
        let head = |k: usize| {
            qkv.narrow(2, k * c, c)
                .reshape(&[b, t, h, hd])
                .transpose(1, 2)
                .contiguous()
        };
        let (q, k, v) = (head(0), head(1), head(2));
        let att = q.matmul(&k.t()).affine(1.0);
        let shape = att.dims().to_vec();
        let mask = self.causal.narrow(0, 0, t).narrow(1, 0, t);
        let att = mask
            .broadcast_as(&shape)
            .where_cond(&att, &self.neg_inf.broadcast_as(&shape));
        let max = att.max_keepdim(3);
        let num = att.bcast(&max, Bin::Sub).unary(Un::Exp);
        let att = num.bcast(&num.sum_keepdim(&[3]), Bin::Div);
        let att = self.drop(att);
        let y = att.matmul(&v).transpose(1, 2).reshape(&[b, t, c]);
        at(layer, "attn.c_proj", Category::Activations);
        self.drop(self.lin(&blk.attn_proj, &y))
    }

    /// The forward and the cross-entropy loss (a scalar that holds the whole graph).
    pub fn loss(&self, idx: &T, targets: &T) -> T {
        let Dims { b, t, v, .. } = self.d;
        at(None, "wte", Category::Activations);
        let tok = self.emb(&self.wte, idx);
        at(None, "wpe", Category::Activations);
        let pos = self.emb(&self.wpe, &self.positions.narrow(0, 0, t));
        at(None, "drop", Category::Activations);
        let mut x = self.drop(tok.bcast(&pos, Bin::Add));
        for (i, blk) in self.blocks.iter().enumerate() {
            let l = Some(i as u32);
            at(l, "ln_1", Category::Activations);
            let a = self.ln(&blk.ln_1, &x);
            let a = self.attention(l, blk, &a);
            at(l, "residual", Category::Activations);
            x = x.add(&a);
            at(l, "ln_2", Category::Activations);
            let n = self.ln(&blk.ln_2, &x);
            at(l, "mlp.c_fc", Category::Activations);
            let m = self.lin(&blk.c_fc, &n).unary(Un::GeluErf);
            at(l, "mlp.c_proj", Category::Activations);
            let m = self.drop(self.lin(&blk.mlp_proj, &m));
            at(l, "residual", Category::Activations);
            x = x.add(&m);
        }
        at(None, "ln_f", Category::Activations);
        let xf = self.ln(&self.ln_f, &x);
        at(None, "lm_head", Category::Logits);
        let logits = self.lin(&Lin(self.wte.clone(), None), &xf);
        at(None, "loss", Category::Logits);
        let logits = logits.reshape(&[b * t, v]).to_dtype(DType::F32);
        // log_softmax(logits, 1), then nll: gather, sum_all, affine.
        let diff = logits.bcast(&logits.max_keepdim(1), Bin::Sub);
        let sum_exp = diff.unary(Un::Exp).sum_keepdim(&[1]);
        let log_sm = diff.bcast(&sum_exp.unary(Un::Log), Bin::Sub);
        let tgt = targets.reshape(&[b * t]).unsqueeze(1);
        log_sm.gather(&tgt).sum_all().affine(-1.0)
    }
}
