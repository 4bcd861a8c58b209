//! Sharded parameters gathered unit by unit, rank 0: PyTorch FSDP (FullyShardedDataParallel
//! with FlatParameters, use_orig_params=False), and DeepSpeed's ZeRO-3, whose partitions and
//! buffers are zero3.rs's and whose gathers follow the same unit schedule.
//!
//! Wrap policy: one unit per transformer block (transformer_auto_wrap_policy) and the root for
//! the rest (embeddings, final norm, the tied lm_head). Each unit's parameters are one flat
//! parameter padded to a multiple of world_size; rank 0 keeps its fp32 shard (padded /
//! world_size), the optimizer's state on that shard (torch AdamW: `step` tensor and two
//! moments, created at the first step) and an fp32 sharded gradient.
//!
//! Mixed precision (the policy chosen here): with a half-precision run, `MixedPrecision(
//! param_dtype=bf16, reduce_dtype=bf16)` — the all-gathered parameters are bf16, so autocast
//! has no weight copies to make; with fp32 runs everything is fp32.
//!
//! Forward, per unit: the pre-forward hook casts the local shard to bf16 (a temporary), all-
//! gathers the padded unit, and the parameters are views into it. FULL_SHARD frees it after
//! the unit's forward (except the root's, which the backward needs first); SHARD_GRAD_OP
//! keeps it to the unit's backward. Backward: the unit's pre-backward hook (met on the tape at
//! the unit's output) gathers it again if needed and prefetches the next unit in backward order
//! (BACKWARD_PRE, the default): two units gathered at once. When every parameter of the unit
//! has its gradient, autograd's flat gradient (the unit's padded size, bf16) is reduce-scattered
//! into a bf16 shard, cast to fp32 and added into the sharded gradient; the gathered
//! parameters go (post-backward reshard).
//!
//! LoRA / QLoRA (fsdp_units.rs): a block's frozen FlatParameter is gathered and resharded on
//! the same schedule but has no gradient; its reshard after the backward comes from the
//! reshard-only hook (`_register_post_backward_reshard_only_hook`, at the end of the unit's
//! backward, here with the adapters' post-backward) or the final callback's catch-all.
//! CPU offload: the shards are moved to the device for each gather, the reduced gradient
//! shard goes to the host, and the optimizer runs there.

use super::fsdp_units::{self, Unit, Wrap};
use super::zero3::Zero3;
use crate::config::OptimizerKind;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::optim::state_for;
use crate::sim::timeline::{Category, Name, Shape};

/// Whose sharding this is.
#[derive(Debug, Clone)]
pub(super) enum Layout {
    Fsdp,
    Zero3(Zero3),
}

#[derive(Debug, Clone)]
pub(super) struct Fsdp {
    layout: Layout,
    reshard_after_forward: bool,
    /// MixedPrecision's param_dtype (= reduce_dtype).
    dtype: DType,
    kind: OptimizerKind,
    /// FSDP's CPUOffload(offload_params=True): shards, sharded gradients and the optimizer on
    /// the host.
    offload: bool,
    /// The trainable flat parameters' dtype (fsdp_units.rs, `Wrap::shard_dtype`).
    shard_dtype: DType,
    /// Blocks 0..n_layer, then the root.
    units: Vec<Unit>,
    /// The unit of each parameter index (None: frozen): the gradient hook's lookup, which
    /// scanned every unit's parameters once per gradient, quadratic in the layers.
    unit_of: Vec<Option<usize>>,
}

impl Fsdp {
    /// Wrapping (fsdp_units.rs): each unit flattened and sharded.
    pub(super) fn build(e: &mut Engine, full_shard: bool, kind: OptimizerKind, wrap: Wrap) -> Fsdp {
        let units = fsdp_units::build(e, wrap);
        Fsdp {
            layout: Layout::Fsdp,
            reshard_after_forward: full_shard,
            dtype: super::module_dtype(e),
            kind,
            offload: wrap.offload,
            shard_dtype: wrap.shard_dtype,
            unit_of: unit_of(e, &units),
            units,
        }
    }

    /// DeepSpeed ZeRO-3: its partitions and buffers, and the same units to gather (each
    /// unit's non-persistent parameters, frozen ones too, released after the unit's forward).
    pub(super) fn build_zero3(e: &mut Engine, kind: OptimizerKind, z: Zero3) -> Fsdp {
        let units: Vec<Unit> = fsdp_units::members(e)
            .into_iter()
            .map(|(params, frozen)| {
                let gathered = params
                    .iter()
                    .chain(&frozen)
                    .map(|&p| z.gathered_numel(e, p))
                    .sum();
                Unit::new(params, gathered, Vec::new())
            })
            .collect();
        Fsdp {
            layout: Layout::Zero3(z),
            reshard_after_forward: true,
            dtype: super::module_dtype(e),
            kind,
            offload: false,
            shard_dtype: DType::F32,
            unit_of: unit_of(e, &units),
            units,
        }
    }
}

/// The index of each parameter's unit.
fn unit_of(e: &Engine, units: &[Unit]) -> Vec<Option<usize>> {
    let mut of = vec![None; e.params.len()];
    for (u, unit) in units.iter().enumerate() {
        for &p in &unit.params {
            of[p] = Some(u);
        }
    }
    of
}

impl Fsdp {
    fn index(&self, layer: Option<u32>) -> usize {
        let root = self.units.len() - 1;
        layer.map_or(root, |l| (l as usize).min(root))
    }

    /// All-gather a unit (no-op if it is gathered): its trainable flat parameter in
    /// param_dtype, its frozen one in the storage dtype.
    fn unshard(&mut self, e: &mut Engine, u: usize) {
        let unit = &self.units[u];
        if !unit.gathered.is_empty() || unit.padded + unit.frozen_padded == 0 {
            return;
        }
        let (shard, padded) = (unit.shard, unit.padded);
        let (frozen_shard, frozen_padded, frozen_dtype) =
            (unit.frozen_shard, unit.frozen_padded, unit.frozen_dtype);
        let fsdp = matches!(self.layout, Layout::Fsdp);
        let mut kept = Vec::new();
        // The block's frozen FlatParameter first (its pre-forward hook runs before those of
        // the adapter units inside it).
        let parts = [
            (
                frozen_padded,
                frozen_shard,
                frozen_dtype,
                "gathered_frozen_params",
            ),
            (padded, shard, self.shard_dtype, "gathered_params"),
        ];
        for (padded, shard, stored, what) in parts {
            if padded == 0 {
                continue;
            }
            let (temp, keep) = if fsdp {
                self.stage_shard(e, shard, stored)
            } else {
                (None, None)
            };
            kept.extend(keep);
            // ZeRO-3's partitions are in the module's dtype; FSDP's frozen flat parameter
            // gathers in its storage dtype (param_dtype equals it: no cast).
            let dtype = if stored == DType::F32 {
                self.dtype
            } else {
                stored
            };
            kept.push(e.alloc(
                Name::top("fsdp", what),
                Shape::new(&[padded]),
                dtype,
                Category::Communication,
            ));
            if let Some(t) = temp {
                e.release(t);
            }
        }
        self.units[u].gathered = kept;
    }

    /// What FSDP's all-gather reads on the device (`FlatParamHandle.pre_unshard`): the local
    /// shard cast to param_dtype (`_use_low_precision_shard`: `_mp_shard.copy_(_local_shard
    /// .to(device))`, the `.to` an fp32 device copy when the shard is offloaded), a temporary
    /// freed after the all-gather (`_free_low_precision_sharded_param`); without a cast and
    /// with CPU offload, the shard moved to the device (`flat_param_to(device)`), the flat
    /// parameter's data until the reshard. Returns (temporary, kept).
    fn stage_shard(&self, e: &mut Engine, shard: u64, stored: DType) -> (Option<T>, Option<T>) {
        let shape = Shape::new(&[shard]);
        let to_device = self.offload.then(|| {
            e.alloc(
                Name::top("fsdp", "offloaded_shard_on_device"),
                shape,
                stored,
                Category::Communication,
            )
        });
        if stored == self.dtype {
            return (None, to_device);
        }
        let mp = e.alloc(
            Name::top("fsdp", "mp_shard"),
            shape,
            self.dtype,
            Category::Communication,
        );
        if let Some(t) = to_device {
            e.release(t);
        }
        (Some(mp), None)
    }

    fn reshard(&mut self, e: &mut Engine, u: usize) {
        for g in std::mem::take(&mut self.units[u].gathered) {
            e.release(g);
        }
    }

    pub(super) fn enter(&mut self, e: &mut Engine, layer: Option<u32>) {
        let u = self.index(layer);
        self.unshard(e, u);
    }

    /// After a block's forward: FULL_SHARD frees its parameters (the root is never a block).
    pub(super) fn exit(&mut self, e: &mut Engine, layer: u32) {
        let u = self.index(Some(layer));
        if self.reshard_after_forward {
            self.reshard(e, u);
        }
    }

    /// The root's pre-backward (the loss's backward starts in it): prefetch the last block.
    pub(super) fn root_pre_backward(&mut self, e: &mut Engine) {
        let root = self.units.len() - 1;
        self.unshard(e, root);
        if root > 0 {
            self.unshard(e, root - 1);
        }
    }

    /// A block's pre-backward: gather it if needed, prefetch the block before it.
    pub(super) fn pre_backward(&mut self, e: &mut Engine, layer: u32) {
        let u = self.index(Some(layer));
        self.unshard(e, u);
        if u > 0 {
            self.unshard(e, u - 1);
        }
    }

    /// AccumulateGrad of one of the unit's parameters has run.
    pub(super) fn grad_ready(&mut self, e: &mut Engine, p: usize) {
        let Some(u) = self.unit_of.get(p).copied().flatten() else {
            return;
        };
        let Some(g) = e.params[p].grad.take() else {
            return;
        };
        self.units[u].arrivals += 1;
        let done = self.units[u].arrivals == self.units[u].params.len();
        if let Layout::Zero3(z) = &mut self.layout {
            // Copied into the reduce bucket and reduce-scattered into the persistent gradient
            // partition; the unit is released once all its gradients are out.
            z.grad_ready(e, g);
            if done {
                self.units[u].arrivals = 0;
                self.reshard(e, u);
            }
            return;
        }
        self.units[u].arrived.push(g);
        if done {
            self.units[u].arrivals = 0;
            self.post_backward(e, u);
        }
    }

    fn post_backward(&mut self, e: &mut Engine, u: usize) {
        let (shard, padded) = (self.units[u].shard, self.units[u].padded);
        // The flat parameter's gradient: the views' gradients concatenated.
        let flat = e.alloc(
            Name::top("fsdp", "unsharded_grad"),
            Shape::new(&[padded]),
            self.dtype,
            Category::Gradients,
        );
        for g in std::mem::take(&mut self.units[u].arrived) {
            e.release(g);
        }
        let reduced = e.alloc(
            Name::top("fsdp", "reduced_grad_shard"),
            Shape::new(&[shard]),
            self.dtype,
            Category::Gradients,
        );
        e.release(flat);
        // Cast to the parameter's dtype (`_cast_grad_to_param_dtype`: fp32, a new tensor unless
        // it is that dtype already), kept or added in.
        let fp32 = if self.dtype == self.shard_dtype {
            reduced
        } else {
            let t = e.alloc(
                Name::top("fsdp", "grad_shard"),
                Shape::new(&[shard]),
                self.shard_dtype,
                Category::Gradients,
            );
            e.release(reduced);
            t
        };
        match self.units[u].grad_shard {
            // CPUOffload: `_post_reduce_grad` copies the shard into the pinned `_cpu_grad`,
            // and the device gradient goes.
            _ if self.offload => e.release(fp32),
            None => self.units[u].grad_shard = Some(fp32),
            Some(_) => e.release(fp32),
        }
        self.reshard(e, u);
    }

    /// The end of the backward (`_post_backward_final_callback` → `_catch_all_reshard`):
    /// units whose post-backward hook never ran — frozen ones, whose reshard-only hook waits
    /// on inputs that need no gradient, like the root's token ids — are resharded.
    pub(super) fn end_of_backward(&mut self, e: &mut Engine) {
        for u in 0..self.units.len() {
            self.reshard(e, u);
        }
    }

    /// The optimizer on the shards (state at the first step), then zero_grad(set_to_none).
    pub(super) fn step(&mut self, e: &mut Engine) {
        if let Layout::Zero3(z) = &self.layout {
            z.step(e);
            return;
        }
        // CPUOffload: the optimizer steps on the host shards; its state is there too.
        for unit in self.units.iter_mut().filter(|_| !self.offload) {
            if unit.grad_shard.is_some() && unit.state.is_empty() {
                for &shard in &unit.flat_shards {
                    let shape = Shape::new(&[shard]);
                    let name = Name::top("fsdp", "");
                    let state = state_for(e, name, shape, self.shard_dtype, self.kind, true);
                    unit.state.extend(state);
                }
            }
        }
        for unit in &mut self.units {
            if let Some(g) = unit.grad_shard.take() {
                e.release(g);
            }
        }
    }
}
