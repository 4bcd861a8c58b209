//! torchtitan's per-op selective activation checkpointing (SAC), as torch.utils.checkpoint
//! runs a policy.
//!
//! torchtitan/distributed/activation_checkpoint.py (`SelectiveAC._wrap_block`, read at commit
//! b5bcd76 of 2026-08) wraps each block in `ptd_checkpoint_wrapper` (non-reentrant) with
//! `context_fn = create_selective_checkpoint_contexts(policy)`. The policy, per aten op:
//! - `aten.mm` (and `aten.linear` where a backend keeps it whole) counts the block's matmuls;
//!   the odd-numbered ones (1st, 3rd, ...) are MUST_SAVE, the even ones PREFER_RECOMPUTE
//!   ("Save all compute/comm ops, except every second mm/linear");
//! - every other op in the save set is MUST_SAVE: torch/_functorch/partitioners.py
//!   `get_default_op_list().compute_intensive_ops` (mm, bmm, addmm, the SDPA flash and
//!   memory-efficient kernels, convolution, `_scaled_mm`, ...) plus torchtitan's own list;
//! - everything else (casts, norms, rotary, activations, views) is PREFER_RECOMPUTE.
//!
//! `meta = {"forward_mm_count": 0, "recompute_mm_count": 0}` is made per `context_fn()` call,
//! i.e. per block invocation, so the count starts again in every block and in its
//! recomputation.
//!
//! What the memory sees (torch/utils/checkpoint.py): in the forward, `_CachingTorchDispatchMode`
//! appends a MUST_SAVE op's outputs (all of them: SDPA's output, logsumexp and Philox
//! seed/offset) to the checkpoint's storage, which holds them until the backward; the
//! recomputation runs the block again under `_CachedTorchDispatchMode`, which does not execute
//! a MUST_SAVE op but pops its stored outputs (`storage[func].pop(0)`), so the recomputed graph
//! holds them from then on and nothing new is allocated for them. The forward runs with autograd
//! on (non-reentrant), so a kernel computes what its backward would need (the memory-efficient
//! kernel's logsumexp) even though the pack hook then discards the saved tensors.

use super::engine::{Engine, T};

/// How the policy sees an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SacOp {
    /// `aten.mm`: every second one is recomputed.
    Mm,
    /// Another op of the save set: addmm, bmm, the SDPA kernels. Always kept.
    ComputeIntensive,
}

/// The checkpointed block being run under the policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SacFrame {
    /// Index of the checkpoint (into `Engine::recompute`): whose storage the outputs go to.
    pub checkpoint: u32,
    /// The backward's recomputation (`ctx.is_recompute`), else the forward.
    pub recompute: bool,
    /// `meta[f"{mode}_mm_count"]`.
    pub mm_count: u32,
}

impl Engine {
    /// Whether the current block runs under the policy, in its forward: the kernels compute
    /// what autograd would save (the forward runs with grad on).
    pub fn sac_forward(&self) -> bool {
        self.sac.is_some_and(|f| !f.recompute)
    }

    /// The outputs of one op of kind `op`: made by `make` unless the policy keeps them, in
    /// which case the forward stores them (one reference more each) and the recomputation
    /// takes them back (the storage's references pass to the caller) instead of making them.
    pub fn sac_outputs<const N: usize>(
        &mut self,
        op: SacOp,
        make: impl FnOnce(&mut Engine) -> [Option<T>; N],
    ) -> [Option<T>; N] {
        let Some(frame) = self.sac.as_mut() else {
            return make(self);
        };
        let keep = match op {
            SacOp::Mm => {
                frame.mm_count += 1;
                frame.mm_count % 2 == 1
            }
            SacOp::ComputeIntensive => true,
        };
        let frame = *frame;
        if !keep {
            return make(self);
        }
        if frame.recompute {
            let storage = self.sac_storage.get_mut(&frame.checkpoint);
            if let Some(kept) = storage.and_then(|s| s.pop_front()) {
                let mut out = [None; N];
                for (o, t) in out.iter_mut().zip(kept) {
                    *o = t;
                }
                return out;
            }
            return make(self);
        }
        let out = make(self);
        for t in out.iter().flatten() {
            self.retain(*t);
        }
        self.sac_storage
            .entry(frame.checkpoint)
            .or_default()
            .push_back(out.to_vec());
        out
    }

    /// [`Engine::sac_outputs`] for an op with one output.
    pub fn sac_output(&mut self, op: SacOp, make: impl FnOnce(&mut Engine) -> T) -> T {
        let [out] = self.sac_outputs(op, |e| [Some(make(e))]);
        out.expect("a one-output op stores its one output")
    }

    /// Enter a checkpointed block's forward (`recompute` false) or its recomputation.
    pub(crate) fn sac_enter(&mut self, checkpoint: u32, recompute: bool) {
        if self.checkpoint_policy == crate::config::CheckpointPolicy::Op {
            self.sac = Some(SacFrame {
                checkpoint,
                recompute,
                mm_count: 0,
            });
        }
    }

    /// Leave the block; after its recomputation nothing of its storage can be used again.
    pub(crate) fn sac_leave(&mut self) {
        if let Some(f) = self.sac.take() {
            if f.recompute {
                let left = self.sac_storage.remove(&f.checkpoint).unwrap_or_default();
                for t in left.into_iter().flatten().flatten() {
                    self.release(t);
                }
            }
        }
    }
}
