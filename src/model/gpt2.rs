//! nanoGPT's GPT (model.py), written as the ops it runs, top to bottom.
//!
//! Python's variable lifetimes matter for memory, so each `drop_value` below is where the
//! corresponding Python name is rebound or goes out of scope.

use super::lora::Params;
use super::{logits_head, Head, Output};
use crate::config::{LossKind, TrainConfig};
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops::{self, AttnKind, Heads};
use crate::sim::parallel;
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone, Copy)]
struct Block {
    ln_1: (usize, Option<usize>),
    c_attn: (usize, Option<usize>),
    c_proj: (usize, Option<usize>),
    ln_2: (usize, Option<usize>),
    c_fc: (usize, Option<usize>),
    mlp_proj: (usize, Option<usize>),
}

/// What one block's forward needs: its parameters and the model's hyper-parameters.
#[derive(Debug, Clone, Copy)]
struct BlockCall {
    p: Block,
    /// Heads on this rank (n_head / tensor-parallel degree).
    n_head: u64,
    head_size: u64,
    dropout: f64,
    flash: bool,
    layer: u32,
}

pub struct Gpt2 {
    /// Tensor-parallel degree: heads, MLP width and vocabulary are split over this many ranks.
    tp: u64,
    n_head: u64,
    n_embd: u64,
    dropout: f64,
    flash: bool,
    checkpoint: super::Checkpointing,
    loss: LossKind,
    wte: usize,
    wpe: usize,
    blocks: Vec<Block>,
    ln_f: (usize, Option<usize>),
}

impl Gpt2 {
    /// `model.to(device)`: parameters in module order (children first, then buffers).
    pub fn build(e: &mut Engine, cfg: &TrainConfig) -> Gpt2 {
        // Megatron's split for tensor parallelism (tp = 1: the whole model): q/k/v and c_fc
        // are column-parallel (out / tp), the projections row-parallel (in / tp, bias whole),
        // the embedding vocab-parallel; norms and wpe are replicated.
        let tp = parallel::tp_degree(cfg);
        let (c, v) = (cfg.n_embd, parallel::vocab_per_rank(cfg));
        let bias = cfg.bias;
        // Trainable fp32 master weights, or frozen in `dtype` for inference.
        let ps = Params::new(cfg);
        let linear = |e: &mut Engine, l: u32, m: &'static str, w: &'static str, out, inp| {
            let wp = ps.weight(e, Name::layer_param(l, m, w), &[out, inp], true);
            let bp = bias.then(|| ps.weight(e, Name::layer_param(l, m, "bias"), &[out], false));
            (wp, bp)
        };
        let norm = |e: &mut Engine, l: Option<u32>, m: &'static str| {
            let wp = ps.weight(e, Name::at(l, m, "weight"), &[c], false);
            let bp = bias.then(|| ps.weight(e, Name::at(l, m, "bias"), &[c], false));
            (wp, bp)
        };
        let wte = ps.weight(e, Name::top("wte", "weight"), &[v, c], true);
        let wpe = ps.weight(e, Name::top("wpe", "weight"), &[cfg.block_size, c], true);
        let mut blocks = Vec::with_capacity(cfg.n_layer as usize);
        for l in 0..cfg.n_layer as u32 {
            let ln_1 = norm(e, Some(l), "ln_1");
            let c_attn = linear(e, l, "attn.c_attn", "weight", 3 * c / tp, c);
            let c_proj = linear(e, l, "attn.c_proj", "weight", c, c / tp);
            if !cfg.flash {
                // The manual path's causal mask: a (1, 1, block_size, block_size) fp32 buffer.
                let t = cfg.block_size;
                e.alloc(
                    Name::layer(l, "attn.bias"),
                    Shape::new(&[1, 1, t, t]),
                    DType::F32,
                    Category::Parameters,
                );
            }
            let ln_2 = norm(e, Some(l), "ln_2");
            let c_fc = linear(e, l, "mlp.c_fc", "weight", 4 * c / tp, c);
            let mlp_proj = linear(e, l, "mlp.c_proj", "weight", c, 4 * c / tp);
            blocks.push(Block {
                ln_1,
                c_attn,
                c_proj,
                ln_2,
                c_fc,
                mlp_proj,
            });
        }
        let ln_f = norm(e, None, "ln_f");
        Gpt2 {
            tp,
            n_head: cfg.n_head,
            n_embd: c,
            dropout: cfg.dropout,
            flash: cfg.flash,
            checkpoint: super::Checkpointing::new(cfg),
            loss: cfg.loss,
            wte,
            wpe,
            blocks,
            ln_f,
        }
    }

    /// `logits, loss = model(idx, targets)`; with `loss = 'chunked'` no full logits exist.
    /// Without targets (inference), `logits = self.lm_head(x[:, [-1], :])`.
    pub fn forward(&self, e: &mut Engine, idx: T, head: Head) -> Output {
        let t = e.shape(idx).dims()[1];
        let pos = e.alloc(
            Name::top("pos", ""),
            Shape::new(&[t]),
            DType::I64,
            Category::Other,
        );
        let mut x = self.embed(e, idx, pos);
        for (l, block) in self.blocks.iter().enumerate() {
            let call = BlockCall {
                p: *block,
                n_head: self.n_head / self.tp,
                head_size: self.n_embd / self.n_head,
                dropout: self.dropout,
                flash: self.flash,
                layer: l as u32,
            };
            parallel::unit_enter(e, Some(l as u32));
            let next = if self.checkpoint.wraps(l as u32) && e.grad_mode {
                // x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                e.checkpoint(
                    std::rc::Rc::new(move |e: &mut Engine, x| call.forward(e, x)),
                    x,
                )
            } else {
                call.forward(e, x)
            };
            let next = parallel::unit_exit(e, l as u32, next);
            e.drop_value(x);
            x = next;
        }
        let (w, bias) = self.ln_f;
        let xf = ops::layer_norm(e, x, w, bias, Name::top("ln_f", "out"));
        e.drop_value(x);
        let out = self.head(e, xf, head);
        e.release(pos);
        e.drop_value(xf);
        out
    }

    /// `tok_emb = self.transformer.wte(idx)` (vocabulary-parallel under TP), `pos_emb`, their
    /// sum and dropout.
    fn embed(&self, e: &mut Engine, idx: T, pos: T) -> V {
        let bt = e.shape(idx);
        let (b, t) = (bt.dims()[0], bt.dims()[1]);
        let c = self.n_embd;
        let tok_emb = if self.tp > 1 {
            ops::vocab_parallel_embedding(
                e,
                self.wte,
                idx,
                Shape::new(&[b, t, c]),
                Name::top("wte", "out"),
            )
        } else {
            ops::embedding(
                e,
                self.wte,
                idx,
                Shape::new(&[b, t, c]),
                Name::top("wte", "out"),
            )
        };
        let pos_emb = ops::embedding(
            e,
            self.wpe,
            pos,
            Shape::new(&[t, c]),
            Name::top("wpe", "out"),
        );
        let sum = ops::add_broadcast(e, tok_emb, pos_emb, Name::top("embed", "sum"));
        e.drop_value(tok_emb);
        e.drop_value(pos_emb);
        let x = ops::dropout(e, sum, self.dropout, Name::top("drop", "out"));
        e.drop_value(sum);
        x
    }

    /// After ln_f: lm_head and the loss (standard, chunked or Liger's fused), or the logits.
    fn head(&self, e: &mut Engine, xf: V, head: Head) -> Output {
        match (head, self.loss) {
            (Head::Loss(targets), LossKind::Standard) => {
                let logits = ops::lm_head(e, xf, self.wte);
                let loss = if self.tp > 1 {
                    ops::vocab_parallel_cross_entropy(e, logits, targets)
                } else {
                    ops::cross_entropy(e, logits, targets)
                };
                Output::Loss(Some(logits), loss)
            }
            (Head::Loss(targets), LossKind::Chunked) => {
                Output::Loss(None, ops::chunked_cross_entropy(e, xf, self.wte, targets))
            }
            // `LigerFusedLinearCrossEntropyLoss()(self.lm_head.weight, x, targets)` in place of
            // lm_head and F.cross_entropy.
            (Head::Loss(_), LossKind::Liger) => {
                Output::Loss(None, ops::fused_linear_cross_entropy(e, xf, self.wte))
            }
            (Head::Logits { all }, _) => Output::Logits(logits_head(e, xf, self.wte, all, true)),
        }
    }
}

impl BlockCall {
    /// `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.
    fn forward(&self, e: &mut Engine, x: V) -> V {
        let (p, l) = (&self.p, self.layer);
        let h = ops::layer_norm(e, x, p.ln_1.0, p.ln_1.1, Name::layer(l, "ln_1.out"));
        let a = self.attn(e, p, h, l);
        e.drop_value(h);
        let x1 = ops::add(e, x, a, Name::layer(l, "resid_attn"));
        e.drop_value(a);
        let h2 = ops::layer_norm(e, x1, p.ln_2.0, p.ln_2.1, Name::layer(l, "ln_2.out"));
        let m = self.mlp(e, p, h2, l);
        e.drop_value(h2);
        let x2 = ops::add(e, x1, m, Name::layer(l, "resid_mlp"));
        e.drop_value(m);
        e.drop_value(x1);
        x2
    }

    fn attn(&self, e: &mut Engine, p: &Block, h: V, l: u32) -> V {
        let hd = e.shape(h.t);
        let (b, t) = (hd.dims()[0], hd.dims()[1]);
        let qkv = ops::linear(e, h, p.c_attn.0, p.c_attn.1, Some(l), "attn.c_attn");
        let kind = if !self.flash {
            AttnKind::Manual
        } else if e.dtype(qkv.t) == DType::F32 || !e.rt.flash_attention {
            AttnKind::Efficient
        } else {
            AttnKind::Flash
        };
        let hs = self.head_size;
        let (y, att) = match ops::decode_context(e) {
            // Decode: the new token's q (a view of qkv) over the cached keys and values.
            Some(ctx) => {
                let heads = Heads {
                    b,
                    t,
                    nh: self.n_head,
                    nkv: self.n_head,
                    hd: hs,
                    layer: Some(l),
                    module: "attn",
                };
                (ops::decode_attention(e, qkv, heads, ctx, !self.flash), None)
            }
            None => ops::attention(e, qkv, kind, b, t, self.n_head, hs, self.dropout, Some(l)),
        };
        let out = ops::linear(e, y, p.c_proj.0, p.c_proj.1, Some(l), "attn.c_proj");
        let d = ops::dropout(e, out, self.dropout, Name::layer(l, "attn.resid_dropout"));
        e.drop_value(out);
        // q, k, v (views of qkv), att and y are locals of CausalSelfAttention.forward.
        e.drop_value(qkv);
        if let Some(att) = att {
            e.release(att);
        }
        e.drop_value(y);
        d
    }

    fn mlp(&self, e: &mut Engine, p: &Block, h: V, l: u32) -> V {
        let f = ops::linear(e, h, p.c_fc.0, p.c_fc.1, Some(l), "mlp.c_fc");
        let g = ops::gelu(e, f, Name::layer(l, "mlp.gelu"));
        e.drop_value(f);
        let o = ops::linear(e, g, p.mlp_proj.0, p.mlp_proj.1, Some(l), "mlp.c_proj");
        e.drop_value(g);
        let d = ops::dropout(e, o, self.dropout, Name::layer(l, "mlp.dropout"));
        e.drop_value(o);
        d
    }
}
