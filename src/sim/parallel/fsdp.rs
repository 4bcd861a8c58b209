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

use super::zero::FLAT_MODULE;
use super::zero3::Zero3;
use crate::config::OptimizerKind;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::timeline::{Category, Name, Shape};
use crate::sim::train::optimizer_state;

#[derive(Debug, Clone)]
struct Unit {
    /// Trainable parameters in it.
    params: Vec<usize>,
    /// Elements all-gathered for it: FSDP's padded flat parameter; ZeRO-3's parameters that
    /// are not persistent.
    padded: u64,
    shard: u64,
    /// Gradients arrived (ZeRO-3 copies them out at once).
    arrivals: usize,
    gathered: Option<T>,
    /// Gradients of its parameters arrived in this backward.
    arrived: Vec<T>,
    grad_shard: Option<T>,
    state: Vec<T>,
}

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
    /// Blocks 0..n_layer, then the root.
    units: Vec<Unit>,
}

impl Fsdp {
    /// Wrapping: each unit flattened and sharded; rank 0 keeps its fp32 shard.
    pub(super) fn build(e: &mut Engine, full_shard: bool, kind: OptimizerKind) -> Fsdp {
        let world = e.dist.world;
        let units = units(e)
            .into_iter()
            .map(|params| {
                let numel: u64 = params
                    .iter()
                    .map(|&p| e.params[p].shape.numel().unwrap_or(0))
                    .sum();
                let padded = numel.div_ceil(world) * world;
                let shard = padded / world;
                e.alloc(
                    Name::top(FLAT_MODULE, "fsdp_shard"),
                    Shape::new(&[shard]),
                    DType::F32,
                    Category::Parameters,
                );
                Unit::new(params, padded, shard)
            })
            .collect();
        Fsdp {
            layout: Layout::Fsdp,
            reshard_after_forward: full_shard,
            dtype: super::module_dtype(e),
            kind,
            units,
        }
    }

    /// DeepSpeed ZeRO-3: its partitions and buffers, and the same units to gather (each
    /// unit's non-persistent parameters, released after the unit's forward).
    pub(super) fn build_zero3(e: &mut Engine, kind: OptimizerKind) -> Fsdp {
        let z = Zero3::build(e, kind);
        let units = units(e)
            .into_iter()
            .map(|params| {
                let gathered = params.iter().map(|&p| z.gathered_numel(e, p)).sum();
                Unit::new(params, gathered, 0)
            })
            .collect();
        Fsdp {
            layout: Layout::Zero3(z),
            reshard_after_forward: true,
            dtype: super::module_dtype(e),
            kind,
            units,
        }
    }
}

/// Trainable parameters per unit: blocks 0..n_layer (by their layer), then the root.
fn units(e: &Engine) -> Vec<Vec<usize>> {
    let layers = e
        .params
        .iter()
        .filter_map(|p| p.name.layer)
        .max()
        .map_or(0, |l| l as usize + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); layers + 1];
    for (p, param) in e.params.iter().enumerate() {
        if param.requires_grad {
            members[param.name.layer.map_or(layers, |l| l as usize)].push(p);
        }
    }
    members
}

impl Unit {
    fn new(params: Vec<usize>, padded: u64, shard: u64) -> Unit {
        Unit {
            params,
            padded,
            shard,
            arrivals: 0,
            gathered: None,
            arrived: Vec::new(),
            grad_shard: None,
            state: Vec::new(),
        }
    }
}

impl Fsdp {
    fn index(&self, layer: Option<u32>) -> usize {
        let root = self.units.len() - 1;
        layer.map_or(root, |l| (l as usize).min(root))
    }

    /// All-gather a unit (no-op if it is gathered).
    fn unshard(&mut self, e: &mut Engine, u: usize) {
        if self.units[u].gathered.is_some() || self.units[u].padded == 0 {
            return;
        }
        let (shard, padded) = (self.units[u].shard, self.units[u].padded);
        // FSDP casts the local fp32 shard to param_dtype for the all-gather, freed once it is
        // done; ZeRO-3's partitions are bf16 already.
        let fsdp_mp = matches!(self.layout, Layout::Fsdp) && self.dtype != DType::F32;
        let mp_shard = fsdp_mp.then(|| {
            e.alloc(
                Name::top("fsdp", "mp_shard"),
                Shape::new(&[shard]),
                self.dtype,
                Category::Communication,
            )
        });
        self.units[u].gathered = Some(e.alloc(
            Name::top("fsdp", "gathered_params"),
            Shape::new(&[padded]),
            self.dtype,
            Category::Communication,
        ));
        if let Some(m) = mp_shard {
            e.release(m);
        }
    }

    fn reshard(&mut self, e: &mut Engine, u: usize) {
        if let Some(g) = self.units[u].gathered.take() {
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
        let Some(u) = self.units.iter().position(|u| u.params.contains(&p)) else {
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
        // Upcast to fp32 (a new tensor unless it is fp32 already), kept or added in.
        let fp32 = if self.dtype == DType::F32 {
            reduced
        } else {
            let t = e.alloc(
                Name::top("fsdp", "grad_shard"),
                Shape::new(&[shard]),
                DType::F32,
                Category::Gradients,
            );
            e.release(reduced);
            t
        };
        match self.units[u].grad_shard {
            None => self.units[u].grad_shard = Some(fp32),
            Some(_) => e.release(fp32),
        }
        self.reshard(e, u);
    }

    /// The optimizer on the shards (state at the first step), then zero_grad(set_to_none).
    pub(super) fn step(&mut self, e: &mut Engine) {
        if let Layout::Zero3(z) = &self.layout {
            z.step(e);
            return;
        }
        for u in 0..self.units.len() {
            if self.units[u].grad_shard.is_some() && self.units[u].state.is_empty() {
                let shape = Shape::new(&[self.units[u].shard]);
                self.units[u].state =
                    optimizer_state(e, Name::top("fsdp", ""), shape, self.kind, true);
            }
        }
        for unit in &mut self.units {
            if let Some(g) = unit.grad_shard.take() {
                e.release(g);
            }
        }
    }
}
