//! src/probe/model.rs replayed on shape-only tensors (candle-nn's Linear, Embedding, softmax,
//! dropout and cross_entropy written out as candle-nn 0.11.1 does them), and one training step
//! measured phase by phase as src/probe/run.rs measures it.

use super::backward::{backward, AdamW};
use super::tensor::{live, peak, reset_peak, Bin, Un, DT, T};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub h: usize,
    pub v: usize,
    pub l: usize,
    pub bias: bool,
    pub bf16: bool,
    pub dropout: bool,
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

struct Gpt {
    d: Dims,
    dt: DT,
    wte: T,
    wpe: T,
    blocks: Vec<Block>,
    ln_f: Ln,
    causal: T,
    positions: T,
    neg_inf: T,
    params: Vec<T>,
}

impl Gpt {
    fn new(d: Dims) -> Gpt {
        let dt = if d.bf16 { DT::BF16 } else { DT::F32 };
        let mut params = Vec::new();
        let mut p = |dims: &[usize]| {
            let t = T::var(dims, dt);
            params.push(t.clone());
            t
        };
        let (c, bias) = (d.c, d.bias);
        let wte = p(&[d.v, c]);
        let wpe = p(&[d.t, c]);
        let mut blocks = Vec::new();
        for _ in 0..d.l {
            let ln_1 = Ln(p(&[c]), bias.then(|| p(&[c])));
            let c_attn = Lin(p(&[3 * c, c]), bias.then(|| p(&[3 * c])));
            let attn_proj = Lin(p(&[c, c]), bias.then(|| p(&[c])));
            let ln_2 = Ln(p(&[c]), bias.then(|| p(&[c])));
            let c_fc = Lin(p(&[4 * c, c]), bias.then(|| p(&[4 * c])));
            let mlp_proj = Lin(p(&[c, 4 * c]), bias.then(|| p(&[c])));
            blocks.push(Block {
                ln_1,
                c_attn,
                attn_proj,
                ln_2,
                c_fc,
                mlp_proj,
            });
        }
        let ln_f = Ln(p(&[c]), bias.then(|| p(&[c])));
        let causal = T::new(&[d.t, d.t], DT::U8);
        let positions = T::new(&[d.t], DT::U32);
        let neg_inf = T::new(&[], DT::F32).to_dtype(dt);
        Gpt {
            d,
            dt,
            wte,
            wpe,
            blocks,
            ln_f,
            causal,
            positions,
            neg_inf,
            params,
        }
    }

    fn ln(&self, ln: &Ln, x: &T) -> T {
        let dtype = x.dt();
        let last = x.rank() - 1;
        let x = x.to_dtype(DT::F32);
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
        assert!(x.is_contiguous());
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
            let rand = T::new(x.dims(), DT::F32);
            let p = T::new(&[], DT::F32).broadcast_as(x.dims());
            rand.cmp_with(&p).to_dtype(x.dt()).affine(1.0)
        };
        x.mul(&mask)
    }

    fn emb(&self, w: &T, idx: &T) -> T {
        let mut dims = idx.dims().to_vec();
        dims.push(self.d.c);
        let flat = idx.reshape(&[idx.dims().iter().product()]);
        w.index_select(&flat).reshape(&dims)
    }

    fn attention(&self, blk: &Block, x: &T) -> T {
        let Dims { b, t, c, h, .. } = self.d;
        let hd = c / h;
        let qkv = self.lin(&blk.c_attn, x);
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
        self.drop(self.lin(&blk.attn_proj, &y))
    }

    fn loss(&self, idx: &T, targets: &T) -> T {
        let Dims { b, t, v, .. } = self.d;
        let tok = self.emb(&self.wte, idx);
        let pos = self.emb(&self.wpe, &self.positions.narrow(0, 0, t));
        let mut x = self.drop(tok.bcast(&pos, Bin::Add));
        for blk in &self.blocks {
            x = x.add(&self.attention(blk, &self.ln(&blk.ln_1, &x)));
            let m = self
                .lin(&blk.c_fc, &self.ln(&blk.ln_2, &x))
                .unary(Un::GeluErf);
            x = x.add(&self.drop(self.lin(&blk.mlp_proj, &m)));
        }
        let logits = self.lin(&Lin(self.wte.clone(), None), &self.ln(&self.ln_f, &x));
        let logits = logits.reshape(&[b * t, v]).to_dtype(DT::F32);
        // log_softmax(logits, 1), then nll: gather, sum_all, affine.
        let diff = logits.bcast(&logits.max_keepdim(1), Bin::Sub);
        let sum_exp = diff.unary(Un::Exp).sum_keepdim(&[1]);
        let log_sm = diff.bcast(&sum_exp.unary(Un::Log), Bin::Sub);
        let tgt = targets.reshape(&[b * t]).unsqueeze(1);
        log_sm.gather(&tgt).sum_all().affine(-1.0)
    }
}

impl T {
    /// `ge` against a tensor: a u8 tensor recording only `self`.
    fn cmp_with(&self, _r: &T) -> T {
        self.cmp()
    }
}

/// One phase: bytes at its start, its high-water mark, bytes at its end — all above what was
/// live before the model was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    pub start: u64,
    pub peak: u64,
    pub end: u64,
}

/// Build the model and AdamW, make a batch, and run forward, backward (loss kept alive) and
/// AdamW's step: the replay's [forward, backward, optimizer].
pub fn replay(d: Dims) -> [Phase; 3] {
    let base = live();
    let model = Gpt::new(d);
    let opt = AdamW::new(&model.params);
    let x = T::new(&[d.b, d.t], DT::U32);
    let y = T::new(&[d.b, d.t], DT::U32);
    let rel = |v: u64| v - base;
    let mut phases = Vec::new();
    let mut mark = |start: u64| {
        let p = Phase {
            start: rel(start),
            peak: rel(peak()),
            end: rel(live()),
        };
        phases.push(p);
        reset_peak();
        live()
    };
    let start = live();
    reset_peak();
    let loss = model.loss(&x, &y);
    let s = mark(start);
    let grads = backward(&loss);
    let s = mark(s);
    opt.step(&grads);
    mark(s);
    drop((grads, loss));
    let _ = model.dt;
    [phases[0], phases[1], phases[2]]
}
