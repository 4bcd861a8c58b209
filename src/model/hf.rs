//! What the Hugging Face causal-LM classes share: the position ids and rotary tables of
//! `*Model.forward`, and `*ForCausalLM.forward`'s lm_head + `ForCausalLMLoss`.

use super::hf_loss::HfLoss;
use super::{logits_head, Head, Output};
use crate::config::LossKind;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T, V};
use crate::sim::ops;
use crate::sim::timeline::{Category, Name, Shape};

/// The per-forward tensors every layer reads: the rotary tables and, for eager attention, the
/// additive causal mask. Held by `*Model.forward`'s locals until it returns.
#[derive(Debug, Clone, Copy)]
pub struct Shared {
    pub cos: T,
    pub sin: T,
    pub mask: Option<T>,
    /// `cache_position = torch.arange(T)` (position_ids is a view of it).
    pub positions: T,
    /// Gemma 2/3: the sliding layers' own mask — additive (B, 1, T, T) under eager attention,
    /// boolean (1, 1, T, T) under SDPA once T reaches the window (`Hybrid`).
    pub sliding_mask: Option<T>,
    /// Gemma 3: the sliding layers' rotary tables (rope_local_base_freq), (cos, sin).
    pub local: Option<(T, T)>,
}

/// What a model with sliding-window layers adds to the shared tensors (src/model/variant.rs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hybrid {
    /// Gemma2Model / Gemma3TextModel build `causal_mask_mapping` with both a full and a
    /// sliding-window mask; eager attention materialises each.
    pub sliding_mask: bool,
    /// Gemma3TextModel computes `position_embeddings` once per layer type.
    pub local_rope: bool,
    /// Under SDPA, the window: at T >= it, create_sliding_window_causal_mask materialises a
    /// boolean (1, 1, T, T) mask (masking_utils.py `sdpa_mask`: `_ignore_causal_mask_sdpa`
    /// no longer skips it, and the batch dimension is an `expand`).
    pub sdpa_window: Option<u64>,
}

impl Shared {
    /// The attention of a Hugging Face decoder once q and k are rotated: a decode step over the
    /// KV cache, `attn_implementation="eager"` (`eager`), or SDPA with the kernel its
    /// dispatcher picks on this card (math when none fits). Returns attn_output.
    pub fn attend(&self, e: &mut Engine, q: V, k: V, v: V, heads: ops::Heads, eager: bool) -> V {
        let how = Attend {
            eager,
            ..Attend::default()
        };
        self.attend_with(e, [q, k, v], heads, how)
    }

    /// `attend` for a layer of a model with sliding-window layers or soft-capping: a sliding
    /// layer's eager attention reads the sliding mask; Gemma 2's eager attention soft-caps.
    pub fn attend_with(
        &self,
        e: &mut Engine,
        [q, k, v]: [V; 3],
        heads: ops::Heads,
        how: Attend,
    ) -> V {
        let mask = match self.sliding_mask {
            Some(m) if how.sliding => Some(m),
            _ => self.mask,
        };
        let eager = how.eager;
        if let Some(ctx) = ops::decode_context(e) {
            // A sliding layer's cache holds (and its decode step reads) at most the window.
            let ctx = match how.window {
                Some(w) if how.sliding => ctx.min(w),
                _ => ctx,
            };
            ops::decode_attention(e, q, heads, ctx, eager)
        } else if eager && how.softcap {
            ops::softcapped_eager_attention(e, q, k, v, mask, heads)
        } else if eager {
            ops::scores_attention(e, q, k, v, mask, ops::ScoresKind::Eager, heads)
        } else if how.sliding && self.sliding_mask.is_some() {
            sdpa_with_mask(e, [q, k, v], heads)
        } else {
            let half = e.autocast.unwrap_or(e.dtype(q.t));
            match ops::kernel_for(half, &heads, e.rt.flash_attention) {
                Some(kernel) => ops::sdpa(e, q, k, v, kernel, heads),
                None => ops::scores_attention(e, q, k, v, None, ops::ScoresKind::Math, heads),
            }
        }
    }

    /// `cache_position`, `position_ids`, `causal_mask`, `position_embeddings`, in the order
    /// the model's forward creates them. `dtype` is the embeddings' (the hidden states').
    pub fn new(e: &mut Engine, b: u64, t: u64, rot_dim: u64, dtype: DType, eager: bool) -> Shared {
        Shared::new_hybrid(e, (b, t, rot_dim), dtype, eager, Hybrid::default())
    }

    /// `new` for a model with sliding-window layers: the masks in `causal_mask_mapping`'s
    /// order (full, then sliding), the rotary tables once per layer type.
    pub fn new_hybrid(
        e: &mut Engine,
        (b, t, rot_dim): (u64, u64, u64),
        dtype: DType,
        eager: bool,
        hybrid: Hybrid,
    ) -> Shared {
        let positions = e.alloc(
            Name::top("cache_position", ""),
            Shape::new(&[t]),
            DType::I64,
            Category::Other,
        );
        // create_causal_mask: None for SDPA without padding (is_causal=True); eager attention
        // gets a (B, 1, T, T) additive mask in the embeddings' dtype.
        let eager_mask = |e: &mut Engine, name| {
            e.alloc(
                Name::top(name, ""),
                Shape::new(&[b, 1, t, t]),
                dtype,
                Category::Activations,
            )
        };
        let mask = eager.then(|| eager_mask(e, "causal_mask"));
        let past_window = hybrid.sdpa_window.is_some_and(|w| t >= w);
        let sliding_mask = if eager && hybrid.sliding_mask {
            Some(eager_mask(e, "sliding_mask"))
        } else if !eager && hybrid.sliding_mask && past_window {
            let shape = Shape::new(&[1, 1, t, t]);
            let name = Name::top("sliding_mask", "");
            Some(e.alloc(name, shape, DType::Bool, Category::Activations))
        } else {
            None
        };
        let (cos, sin) = ops::rotary_tables(e, t, rot_dim, dtype);
        let local = hybrid
            .local_rope
            .then(|| ops::rotary_tables_of(e, "local_rotary_emb", t, rot_dim, dtype));
        Shared {
            cos,
            sin,
            mask,
            positions,
            sliding_mask,
            local,
        }
    }

    /// The (cos, sin) a layer rotates with: Gemma 3's sliding layers have their own.
    pub fn rope_tables(&self, sliding: bool) -> (T, T) {
        match self.local {
            Some(local) if sliding => local,
            _ => (self.cos, self.sin),
        }
    }

    /// The checkpoint of a layer keeps its inputs (position_embeddings, the mask) until the
    /// layer is recomputed.
    pub fn retain(&self, e: &mut Engine) {
        for t in self.tensors() {
            e.retain(t);
        }
    }

    pub fn release(&self, e: &mut Engine) {
        for t in self.tensors() {
            e.release(t);
        }
    }

    /// One decoder layer, as HF's GradientCheckpointingLayer runs it: with activation
    /// checkpointing under torch.utils.checkpoint, keeping these shared tables (the layer's
    /// inputs besides `x`) until its recomputation in the backward is done.
    pub fn run_layer<C: Copy + 'static>(
        self,
        e: &mut Engine,
        x: V,
        checkpoint: bool,
        call: C,
        forward: fn(&C, &mut Engine, V) -> V,
    ) -> V {
        if !(checkpoint && e.grad_mode) {
            return forward(&call, e, x);
        }
        self.retain(e);
        let shared = self;
        e.checkpoint(
            std::rc::Rc::new(move |e: &mut Engine, x| {
                let y = forward(&call, e, x);
                if e.grad_mode {
                    // The recomputation has run: the checkpoint lets go of its inputs.
                    shared.release(e);
                }
                y
            }),
            x,
        )
    }

    /// `for decoder_layer in self.layers`: each layer an FSDP unit (a no-op on one GPU), run
    /// by `run_layer`; consumes `x` and returns the last layer's output.
    pub fn run_layers<C: Copy + 'static>(
        self,
        e: &mut Engine,
        mut x: V,
        checkpoint: super::Checkpointing,
        calls: impl IntoIterator<Item = C>,
        forward: fn(&C, &mut Engine, V) -> V,
    ) -> V {
        for (l, call) in calls.into_iter().enumerate() {
            let l = l as u32;
            crate::sim::parallel::unit_enter(e, Some(l));
            let next = self.run_layer(e, x, checkpoint.wraps(l), call, forward);
            let next = crate::sim::parallel::unit_exit(e, l, next);
            e.drop_value(x);
            x = next;
        }
        x
    }

    /// `*Model.forward` returns (its rotary tables, masks and cache_position go), then
    /// `*ForCausalLM.forward` runs its head on the final norm's output `xf`, which then goes.
    /// `how`: the loss, and whether Gemma's final soft-capping runs.
    pub fn finish(
        self,
        e: &mut Engine,
        xf: V,
        lm_head: usize,
        head: Head,
        how: (HfLoss, bool),
    ) -> Output {
        self.done(e);
        let out = causal_lm_head(e, xf, lm_head, head, how);
        e.drop_value(xf);
        out
    }

    /// `*Model.forward` returns: its rotary tables, masks and cache_position go.
    pub fn done(self, e: &mut Engine) {
        self.release(e);
        e.release(self.positions);
    }

    fn tensors(&self) -> impl Iterator<Item = T> {
        let (lc, ls) = (self.local.map(|l| l.0), self.local.map(|l| l.1));
        [
            Some(self.cos),
            Some(self.sin),
            self.mask,
            self.sliding_mask,
            lc,
            ls,
        ]
        .into_iter()
        .flatten()
    }
}

/// A sliding layer's SDPA past the window, where the model passes its boolean sliding mask:
/// transformers' sdpa_attention.py then `repeat_kv`s k and v (no `enable_gqa` with a mask)
/// and SDPA runs the memory-efficient kernel on an additive copy of the mask
/// (`ops::sdpa_masked`). Returns attn_output.
fn sdpa_with_mask(e: &mut Engine, [q, k, v]: [V; 3], heads: ops::Heads) -> V {
    let full = heads.bhtd(heads.nh);
    let repeat = |e: &mut Engine, x: V, module| {
        if heads.nkv == heads.nh {
            e.retain(x.t);
            x
        } else {
            ops::repeat_kv(e, x, full, Name::at(heads.layer, module, "out"))
        }
    };
    let kx = repeat(e, k, "self_attn.k_repeat");
    let vx = repeat(e, v, "self_attn.v_repeat");
    let y = ops::sdpa_masked(
        e,
        q,
        kx,
        vx,
        ops::Heads {
            nkv: heads.nh,
            ..heads
        },
    );
    e.drop_value(kx);
    e.drop_value(vx);
    y
}

/// How one layer attends (`Shared::attend_with`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Attend {
    /// attn_implementation="eager" (else SDPA).
    pub eager: bool,
    /// Gemma 2's attention soft-capping (eager only: modeling_gemma2.py passes `softcap` to
    /// the attention function, and the sdpa one refuses it).
    pub softcap: bool,
    /// A sliding-window layer.
    pub sliding: bool,
    /// The sliding window, in tokens.
    pub window: Option<u64>,
}

/// `inputs_embeds = self.embed_tokens(input_ids)`, (B, T, C); made to require grad when a
/// frozen (PEFT) embedding feeds checkpointed layers, as `enable_input_require_grads()` does,
/// so that the layers recompute and their adapters get gradients.
pub fn input_embeddings(
    e: &mut Engine,
    weight: usize,
    idx: T,
    c: u64,
    name: Name,
    require_grad: bool,
) -> V {
    let bt = e.shape(idx);
    let shape = Shape::new(&[bt.dims()[0], bt.dims()[1], c]);
    let x = ops::embedding(e, weight, idx, shape, name);
    if require_grad {
        ops::requires_grad(e, x)
    } else {
        x
    }
}

/// `*ForCausalLM.forward` after the final norm: the loss against the targets (training and
/// eval), or the logits alone (inference; `logits_to_keep=1` slices `hidden_states[:, -1:, :]`
/// as a view). With `softcap`, Gemma 2's final soft-capping (Gemma2ForCausalLM.forward,
/// modeling_gemma2.py: `logits = logits / cap; logits = torch.tanh(logits); logits = logits *
/// cap` on the lm_head's output, before the release's loss chain): two more full (B, T, V)
/// tensors live while it runs and tanh's result saved until the backward. The chunked loss (a
/// model.py change of vramplan's own) is not capped.
fn causal_lm_head(
    e: &mut Engine,
    xf: V,
    weight: usize,
    head: Head,
    (loss, softcap): (HfLoss, bool),
) -> Output {
    match head {
        // The fused losses take the soft-capping into their kernels (Liger's `softcap`).
        Head::Loss(targets) if softcap && loss.kind == LossKind::Standard => {
            let logits = ops::lm_head(e, xf, weight);
            let capped = final_softcap(e, logits);
            let (logits, l) = super::hf_loss::loss_from_logits(e, capped, targets, loss.chain);
            Output::Loss(logits, l)
        }
        Head::Loss(targets) => {
            let (logits, l) = super::hf_loss::lm_head_and_loss(e, xf, weight, targets, loss);
            Output::Loss(logits, l)
        }
        Head::Logits { all } => {
            let logits = logits_head(e, xf, weight, all, false);
            if !softcap {
                return Output::Logits(logits);
            }
            Output::Logits(final_softcap(e, logits))
        }
    }
}

/// `cap * tanh(logits / cap)`: a Python-float divide and multiply (their backward keep
/// nothing) around a tanh that keeps its result. Each step rebinds `logits`, so the previous
/// tensor goes as soon as the next exists: consumes `logits`.
fn final_softcap(e: &mut Engine, logits: V) -> V {
    let div = ops::mul_scalar(e, logits, Name::top("lm_head", "softcap_div"));
    e.drop_value(logits);
    let th = ops::tanh(e, div, Name::top("lm_head", "softcap_tanh"));
    e.drop_value(div);
    let capped = ops::mul_scalar(e, th, Name::top("lm_head", "softcap_out"));
    e.drop_value(th);
    capped
}
