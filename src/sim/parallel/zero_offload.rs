//! ZeRO-Offload for stage 2 (`zero_optimization.offload_optimizer.device = 'cpu'`),
//! DeepSpeed's runtime/zero/stage_1_and_2.py with `cpu_offload = True`, on rank 0.
//!
//! On the host (pinned): the fp32 master partition of each group (`single_partition_of_
//! fp32_groups`, `.to('cpu')` before `.clone().float()`: no device copy), its fp32 gradient
//! (`initialize_optimizer_states` keeps it), DeepSpeedCPUAdam's moments, and
//! `temp_grad_buffer_for_cpu_offload`. `grads_in_partition` is never made
//! (`copy_grads_in_partition` returns early).
//!
//! On the device: the bf16 groups (the module), the reduce bucket (`ipg_buffer`, made by
//! `backward` as without offload), and `temp_grad_buffer_for_gpu_offload`, the module dtype ×
//! the largest trainable parameter, made in `__init__`. At the accumulation boundary each
//! reduced gradient's slice in rank 0's partition is upcast on the device for the copy to the
//! host (`async_inplace_copy_grad_to_fp32_buffer_from_gpu`: `src_tensor.float()`), a
//! temporary; at the step the updated fp32 partition comes back as a device copy
//! (`fp32_partition.to(device)`) before `copy_` into the bf16 partition.

use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::timeline::{Category, Name, Shape};

#[derive(Debug, Clone)]
pub(super) struct Offload {
    /// `temp_grad_buffer_for_gpu_offload`, alive for the run.
    _temp: T,
    /// Each trainable parameter, its elements in rank 0's partition (`grad_position`) and
    /// its whole size.
    pieces: Vec<(usize, u64, u64)>,
    /// Parameters whose gradients are in the reduce bucket.
    bucket: Vec<usize>,
    /// This backward ends the accumulation (`is_gradient_accumulation_boundary`).
    pub boundary: bool,
    dtype: DType,
    /// `accumulated_grads_in_cpu` has been made (the first accumulating micro-step).
    accumulating: bool,
}

impl Offload {
    /// `pieces`: (parameter, its elements in rank 0's partition, its elements);
    /// `partitions`: each group's partition; `dtype`: the module's. The host keeps per group
    /// the fp32 partition, its fp32 gradient and DeepSpeedCPUAdam's two fp32 moments, and
    /// `temp_grad_buffer_for_cpu_offload` (the largest parameter in `dtype`).
    pub(super) fn build(
        e: &mut Engine,
        pieces: Vec<(usize, u64, u64)>,
        partitions: &[u64],
        dtype: DType,
    ) -> Self {
        let largest = pieces.iter().map(|p| p.2).max().unwrap_or(0);
        for &part in partitions {
            e.host(part.saturating_mul(4), DType::F32);
        }
        e.host(largest, dtype);
        let temp = e.alloc(
            Name::top("zero", "temp_grad_buffer_for_gpu_offload"),
            Shape::new(&[largest]),
            dtype,
            Category::Communication,
        );
        Offload {
            _temp: temp,
            pieces,
            bucket: Vec::new(),
            boundary: true,
            dtype,
            accumulating: false,
        }
    }

    /// A gradient went into the reduce bucket.
    pub(super) fn add(&mut self, p: usize) {
        self.bucket.push(p);
    }

    /// `reduce_ipg_grads` → `copy_grads_in_partition`: at the boundary, each slice in rank
    /// 0's partition upcast to fp32 on the device and copied to the host.
    /// Before the boundary, `async_accumulate_grad_in_cpu_via_gpu` keeps a host buffer of the
    /// whole parameter (`buffer_to_accumulate_to_in_cpu`) for each one in the partition.
    pub(super) fn copy_out(&mut self, e: &mut Engine) {
        if !self.boundary && !self.accumulating {
            self.accumulating = true;
            let whole: u64 = self.pieces.iter().filter(|p| p.1 > 0).map(|p| p.2).sum();
            e.host(whole, self.dtype);
        }
        for p in std::mem::take(&mut self.bucket) {
            let Some(&(_, n, _)) = self.pieces.iter().find(|q| q.0 == p) else {
                continue;
            };
            if self.boundary && n > 0 {
                let t = e.alloc(
                    Name::top("zero", "grad_slice_fp32"),
                    Shape::new(&[n]),
                    DType::F32,
                    Category::Gradients,
                );
                e.release(t);
            }
        }
    }

    /// The step, per group: DeepSpeedCPUAdam on the host, then `fp32_partition.to(device)`
    /// copied into the bf16 partition and dropped.
    pub(super) fn step(e: &mut Engine, partition: u64) {
        let t = e.alloc(
            Name::top("zero", "fp32_partition_on_device"),
            Shape::new(&[partition]),
            DType::F32,
            Category::Optimizer,
        );
        e.release(t);
    }
}
