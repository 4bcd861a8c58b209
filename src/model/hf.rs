//! What the Hugging Face causal-LM classes share: the position ids and rotary tables of
//! `*Model.forward`, and `*ForCausalLM.forward`'s lm_head + `ForCausalLMLoss`.

use super::hf_loss::HfLoss;
use super::{logits_head, Head, Output};
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
}

impl Shared {
    /// The attention of a Hugging Face decoder once q and k are rotated: a decode step over the
    /// KV cache, `attn_implementation="eager"` (`eager`), or SDPA with the kernel its
    /// dispatcher picks on this card (math when none fits). Returns attn_output.
    pub fn attend(&self, e: &mut Engine, q: V, k: V, v: V, heads: ops::Heads, eager: bool) -> V {
        if let Some(ctx) = ops::decode_context(e) {
            ops::decode_attention(e, q, heads, ctx, eager)
        } else if eager {
            ops::scores_attention(e, q, k, v, self.mask, ops::ScoresKind::Eager, heads)
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
        let positions = e.alloc(
            Name::top("cache_position", ""),
            Shape::new(&[t]),
            DType::I64,
            Category::Other,
        );
        // create_causal_mask: None for SDPA without padding (is_causal=True); eager attention
        // gets a (B, 1, T, T) additive mask in the embeddings' dtype.
        let mask = eager.then(|| {
            e.alloc(
                Name::top("causal_mask", ""),
                Shape::new(&[b, 1, t, t]),
                dtype,
                Category::Activations,
            )
        });
        let (cos, sin) = ops::rotary_tables(e, t, rot_dim, dtype);
        Shared {
            cos,
            sin,
            mask,
            positions,
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

    fn tensors(&self) -> impl Iterator<Item = T> {
        [Some(self.cos), Some(self.sin), self.mask]
            .into_iter()
            .flatten()
    }
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
/// as a view).
pub fn causal_lm_head(e: &mut Engine, xf: V, weight: usize, head: Head, loss: HfLoss) -> Output {
    match head {
        Head::Loss(targets) => {
            let (logits, l) = super::hf_loss::lm_head_and_loss(e, xf, weight, targets, loss);
            Output::Loss(logits, l)
        }
        Head::Logits { all } => Output::Logits(logits_head(e, xf, weight, all, false)),
    }
}
