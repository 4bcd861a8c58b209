//! DeepSpeed ZeRO-3 (`DeepSpeedZeroOptimizer_Stage3`) on rank 0, with DeepSpeed's defaults.
//!
//! Every trainable parameter is partitioned: rank 0 holds `ceil(numel / world_size)` elements
//! of it in the half dtype, flattened per optimizer group (2Ψ/N); parameters of at most
//! `stage3_param_persistence_threshold` (1e5) elements are also kept whole on every rank (they
//! are never released after being gathered). The optimizer holds the fp32 copy of the
//! partitions and Adam's moments (12Ψ/N, FusedAdam: no step tensor), created at
//! initialisation; the gradients are reduce-scattered into one persistent half-precision
//! buffer of the partitions' size (2Ψ/N) through a reduce bucket of `reduce_bucket_size` (5e8)
//! elements, allocated at initialisation too. At the step each group's partitioned gradient is
//! copied to fp32 for the optimizer and dropped after it.
//!
//! Gathering (fsdp.rs's schedule): a unit's non-persistent parameters are all-gathered before
//! its forward and released after it, gathered again in the backward with the next unit
//! prefetched. DeepSpeed fetches per submodule with a prefetch window of
//! `stage3_prefetch_bucket_size` (5e7) elements; gathering a whole transformer block at once is
//! coarser — an upper bound when a block is larger than the window.

use super::zero::{numel, param_groups, FLAT_MODULE, REDUCE_BUCKET_ELEMENTS};
use crate::config::OptimizerKind;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::timeline::{Category, Name, Shape};
use crate::sim::train::optimizer_state;

/// `stage3_param_persistence_threshold` default, in elements.
pub const PERSISTENCE_THRESHOLD: u64 = 100_000;

#[derive(Debug, Clone)]
pub(super) struct Zero3 {
    /// Rank 0's partition of each optimizer group, in elements.
    groups: Vec<u64>,
}

impl Zero3 {
    pub(super) fn build(e: &mut Engine, kind: OptimizerKind) -> Zero3 {
        let world = e.dist.world;
        let dtype = super::module_dtype(e);
        let mut groups = Vec::new();
        for params in param_groups(e) {
            let part: u64 = params.iter().map(|&p| numel(e, p).div_ceil(world)).sum();
            e.alloc(
                Name::top(FLAT_MODULE, "ds_partitions"),
                Shape::new(&[part]),
                dtype,
                Category::Parameters,
            );
            groups.push(part);
        }
        // Persistent parameters: whole on every rank.
        for p in 0..e.params.len() {
            let n = numel(e, p);
            if e.params[p].requires_grad && n <= PERSISTENCE_THRESHOLD {
                let layer = e.params[p].name.layer;
                e.alloc(
                    Name::at(layer, FLAT_MODULE, "ds_persistent"),
                    e.params[p].shape,
                    dtype,
                    Category::Parameters,
                );
            }
        }
        for &part in &groups {
            e.alloc(
                Name::top("zero", "fp32_partition"),
                Shape::new(&[part]),
                DType::F32,
                Category::Optimizer,
            );
        }
        let total: u64 = groups.iter().sum();
        e.alloc(
            Name::top("zero", "ipg_bucket_flat_buffer"),
            Shape::new(&[REDUCE_BUCKET_ELEMENTS]),
            dtype,
            Category::Communication,
        );
        e.alloc(
            Name::top("zero", "grad_partitions_flat_buffer"),
            Shape::new(&[total]),
            dtype,
            Category::Gradients,
        );
        // initialize_optimizer_states: an fp32 zero gradient per group, one step, dropped.
        for &part in &groups {
            let shape = Shape::new(&[part]);
            let g = e.alloc(
                Name::top("zero", "fp32_grad_partition"),
                shape,
                DType::F32,
                Category::Gradients,
            );
            optimizer_state(e, Name::top("zero", ""), shape, kind, false);
            e.release(g);
        }
        Zero3 { groups }
    }

    /// Elements all-gathered for `p` when its unit runs (0 for a persistent parameter).
    pub(super) fn gathered_numel(&self, e: &Engine, p: usize) -> u64 {
        let n = numel(e, p);
        if n <= PERSISTENCE_THRESHOLD {
            0
        } else {
            n
        }
    }

    /// A gradient is copied into the reduce bucket: its own storage goes.
    pub(super) fn grad_ready(&mut self, e: &mut Engine, g: T) {
        e.release(g);
    }

    /// Per group: the partitioned gradient as fp32 for the optimizer, dropped after its step.
    pub(super) fn step(&self, e: &mut Engine) {
        for &part in &self.groups {
            let g = e.alloc(
                Name::top("zero", "fp32_grad_partition"),
                Shape::new(&[part]),
                DType::F32,
                Category::Gradients,
            );
            e.release(g);
        }
    }
}
