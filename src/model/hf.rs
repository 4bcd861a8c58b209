//! What the Hugging Face causal-LM classes share: the position ids and rotary tables of
//! `*Model.forward`, and `*ForCausalLM.forward`'s lm_head + `ForCausalLMLoss`.

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
}

impl Shared {
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

    fn tensors(&self) -> impl Iterator<Item = T> {
        [Some(self.cos), Some(self.sin), self.mask]
            .into_iter()
            .flatten()
    }
}

/// `logits = self.lm_head(hidden_states)`, then `ForCausalLMLoss`:
/// ```python
/// logits = logits.float()                                  # fp32 copy of the bf16 logits
/// labels = nn.functional.pad(labels, (0, 1), value=ignore_index)
/// shift_labels = labels[..., 1:].contiguous()
/// loss = nn.functional.cross_entropy(logits.view(-1, V), shift_labels.view(-1), ...)
/// ```
/// The fp32 log-probs are what cross-entropy keeps; the fp32 copy goes when the loss function
/// returns. Returns the (bf16) logits the output holds, and the loss.
pub fn lm_head_and_loss(
    e: &mut Engine,
    x: V,
    weight: usize,
    targets: T,
    loss: LossKind,
) -> (Option<V>, V) {
    if loss == LossKind::Chunked {
        return (None, ops::chunked_cross_entropy(e, x, weight, targets));
    }
    let logits = ops::linear(e, x, weight, None, None, "lm_head");
    let lf = ops::to_dtype(e, logits, DType::F32, Name::top("loss", "logits_fp32"));
    let s = e.shape(targets);
    let (b, t) = (s.dims()[0], s.dims()[1]);
    let padded = e.alloc(
        Name::top("loss", "labels_padded"),
        Shape::new(&[b, t + 1]),
        DType::I64,
        Category::Other,
    );
    let shift = e.alloc(
        Name::top("loss", "shift_labels"),
        Shape::new(&[b, t]),
        DType::I64,
        Category::Other,
    );
    let l = ops::cross_entropy(e, lf, shift);
    // ForCausalLMLoss returns: its locals logits (the fp32 copy), labels, shift_labels go.
    e.drop_value(lf);
    e.release(padded);
    e.release(shift);
    (Some(logits), l)
}
