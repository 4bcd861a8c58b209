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
//!
//! LoRA / QLoRA: frozen parameters are partitioned and gathered like the others but have no
//! gradient, fp32 copy or optimizer state (see `Zero3::build`). Offload (ZeRO-Infinity's CPU
//! tier): `offload_optimizer` moves the fp32 partitions, the optimizer state and the gradient
//! partitions to the host; `offload_param` moves the half-precision partitions there, which
//! are then gathered straight to the device per unit.

use super::zero::{numel, param_groups, FLAT_MODULE, REDUCE_BUCKET_ELEMENTS};
use crate::config::OptimizerKind;
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::optim::optimizer_state;
use crate::sim::timeline::{Category, Name, Shape};

/// `stage3_param_persistence_threshold` default, in elements.
pub const PERSISTENCE_THRESHOLD: u64 = 100_000;

#[derive(Debug, Clone)]
pub(super) struct Zero3 {
    /// Rank 0's partition of each optimizer group, in elements.
    groups: Vec<u64>,
    /// `offload_optimizer.device = 'cpu'`: fp32 partitions, optimizer state and the gradient
    /// partitions are host memory.
    offload_optimizer: bool,
}

impl Zero3 {
    pub(super) fn build(e: &mut Engine, kind: OptimizerKind, offload: (bool, bool)) -> Zero3 {
        let (offload_optimizer, offload_params) = offload;
        let world = e.dist.world;
        let dtype = super::module_dtype(e);
        let mut groups = Vec::new();
        for params in param_groups(e) {
            let part: u64 = params.iter().map(|&p| numel(e, p).div_ceil(world)).sum();
            // offload_param: `_create_param_groups_fp16_flat_cpu_memory` holds them.
            if offload_params {
                e.host(part, dtype);
            } else {
                partition(e, "ds_partitions", part, dtype);
            }
            groups.push(part);
        }
        // Frozen parameters (LoRA's base) are partitioned too — `DeepSpeedZeRoOffload`
        // converts every module parameter (parameter_offload.py, `_convert_to_zero_parameters`)
        // — but are in no optimizer group (stage3.py, `_get_trainable_parameter_groups`: only
        // `requires_grad`): their partitions are each parameter's own `ds_tensor`, in its dtype.
        let frozen: Vec<usize> = (0..e.params.len())
            .filter(|&p| !e.params[p].requires_grad)
            .collect();
        if let Some(&first) = frozen.first() {
            let part = frozen.iter().map(|&p| numel(e, p).div_ceil(world)).sum();
            let stored = e.dtype(e.params[first].t);
            if offload_params {
                e.host(part, stored);
            } else {
                partition(e, "ds_frozen_partitions", part, stored);
            }
        }
        // Persistent parameters: whole on every rank (on the device even with offload_param).
        for p in 0..e.params.len() {
            if numel(e, p) <= PERSISTENCE_THRESHOLD {
                let layer = e.params[p].name.layer;
                let stored = if e.params[p].requires_grad {
                    dtype
                } else {
                    e.dtype(e.params[p].t)
                };
                e.alloc(
                    Name::at(layer, FLAT_MODULE, "ds_persistent"),
                    e.params[p].shape,
                    stored,
                    Category::Parameters,
                );
            }
        }
        let z = Zero3 {
            groups,
            offload_optimizer,
        };
        z.optimizer_init(e, kind, dtype);
        z
    }

    /// The fp32 partitions, the reduce bucket, the gradient partitions and
    /// `initialize_optimizer_states` (an fp32 zero gradient per group, one step, dropped).
    /// With offload_optimizer only the bucket is on the device (stage3.py: `self.device` is
    /// the CPU for the fp32 partitions and `grad_partitions_flat_buffer`; the IPG bucket is
    /// on the accelerator).
    fn optimizer_init(&self, e: &mut Engine, kind: OptimizerKind, dtype: DType) {
        let on_device = !self.offload_optimizer;
        for &part in self.groups.iter().filter(|_| on_device) {
            e.alloc(
                Name::top("zero", "fp32_partition"),
                Shape::new(&[part]),
                DType::F32,
                Category::Optimizer,
            );
        }
        let total: u64 = self.groups.iter().sum();
        e.alloc(
            Name::top("zero", "ipg_bucket_flat_buffer"),
            Shape::new(&[REDUCE_BUCKET_ELEMENTS]),
            dtype,
            Category::Communication,
        );
        if !on_device {
            // On the host: per group the fp32 partition, its fp32 gradient (the optimizer's
            // `subgroup_gradient_buffer`) and DeepSpeedCPUAdam's two fp32 moments; the
            // gradient partitions in the gradient-accumulation dtype, which is the model's
            // under ZeRO (engine.py, `get_data_types`).
            e.host(total.saturating_mul(4), DType::F32);
            e.host(total, dtype);
            return;
        }
        e.alloc(
            Name::top("zero", "grad_partitions_flat_buffer"),
            Shape::new(&[total]),
            dtype,
            Category::Gradients,
        );
        for &part in &self.groups {
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
        // offload_optimizer: the gradient partitions are on the host already; the updated
        // fp32 partition is copied into the bf16 one (`_reassign_or_swap_out_partitioned_
        // parameters`), cast on the host side (aten's copy_ from CPU to CUDA converts
        // before the transfer, Copy.cu `copy_kernel_cuda`).
        for &part in self.groups.iter().filter(|_| !self.offload_optimizer) {
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

/// A partition buffer on the device.
fn partition(e: &mut Engine, what: &'static str, elements: u64, dtype: DType) {
    e.alloc(
        Name::top(FLAT_MODULE, what),
        Shape::new(&[elements]),
        dtype,
        Category::Parameters,
    );
}
