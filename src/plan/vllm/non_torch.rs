//! Device memory vLLM finds outside PyTorch's allocator at start-up, as a model with parts,
//! sources and a band (the verdict uses the high end).
//!
//! What counts differs by version:
//!
//! - **V1** (vLLM 0.10): `Worker.init_device` (vllm/v1/worker/gpu_worker.py) takes
//!   `init_snapshot = MemorySnapshot()` after `torch.cuda.set_device`, when the CUDA context
//!   already exists; `memory_profiling` (vllm/utils/__init__.py) counts `non_torch_increase =
//!   (after_profile − before_create).non_torch_memory`. The context is therefore *not* in the
//!   budget (it must fit in the `1 − gpu_memory_utilization` left over); what is: kernels and
//!   library state loaded after the snapshot, NCCL's buffers and vLLM's custom all-reduce
//!   buffers under tensor parallelism.
//! - **V0** (vLLM 0.6, vllm/worker/worker.py `determine_num_available_blocks`): after the
//!   profile run `non_torch_allocations = (total − free) − torch allocated`, i.e. everything
//!   outside torch, the CUDA context included: the card profile's calibrated context.
//!
//! NCCL (tensor parallelism, both versions): per channel and connected peer NCCL keeps one
//! buffer per protocol: Simple `NCCL_BUFFSIZE` = 4 MiB (NCCL's documented default), LL 512 KiB
//! (8 lines/thread × 512 threads × 8 steps × 16 B) and LL128 4,915,200 B (120 elements/thread ×
//! 640 threads × 8 steps × 8 B), NCCL's src/include/device.h: 9,633,792 B. The band runs from
//! one communicator with 2 channels and one ring peer to two communicators (torch's process
//! group and vLLM's PyNccl) with 32 channels and both ring peers. vLLM's custom all-reduce
//! (vllm/distributed/device_communicators/custom_all_reduce.py, `max_size` 8 MiB) adds a data
//! buffer and a meta buffer of 8 MiB each per rank for 2, 4, 6 or 8 ranks. None of this has been
//! measured by this project.
//!
//! Pipeline parallelism (vLLM 0.10.1): the pipeline group gets its own communicators
//! (vllm/distributed/device_communicators/cuda_communicator.py `CudaCommunicator.__init__`:
//! a `PyNcclCommunicator` for every group of more than one rank but expert parallelism,
//! whose `__init__` warms up with a small all_reduce; custom all-reduce only for "tp"), and
//! `GroupCoordinator.send_tensor_dict` sends the hidden states with `torch.distributed.send`
//! on the group's device group, whose NCCL communicator torch creates at the first send.
//! V1 creates the PyNccl one after its `init_snapshot` (gpu_worker.py `init_device`:
//! `init_worker_distributed_environment` follows the snapshot), so it counts; the first send
//! comes after the start-up, so the band's high end (torch's communicator too, 32 channels,
//! both ring peers of a middle rank) is pessimistic. Same band as the tensor-parallel group.

use crate::budget::{context_stack_bytes, default_context_bytes, GpuProfile};
use crate::config::{TrainConfig, VllmVersion};
use serde::Serialize;

const MIB: u64 = 1 << 20;
/// NCCL's Simple + LL + LL128 buffers of one connection on one channel.
pub const NCCL_CONNECTION_BYTES: u64 = 4 * MIB + 524_288 + 4_915_200;
/// vLLM's custom all-reduce: an 8 MiB data buffer and an 8 MiB (+ signal) meta buffer.
pub const CUSTOM_ALL_REDUCE_BYTES: u64 = 16 * MIB;

/// One named part of the non-torch memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NonTorchPart {
    pub what: &'static str,
    pub low_bytes: u64,
    pub high_bytes: u64,
    pub source: &'static str,
}

/// The non-torch memory vLLM subtracts, as a band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NonTorch {
    pub low_bytes: u64,
    pub high_bytes: u64,
    pub parts: Vec<NonTorchPart>,
}

impl NonTorch {
    /// A known figure (a measurement, or a test's own number).
    pub fn fixed(bytes: u64) -> Self {
        Self::from_parts(vec![NonTorchPart {
            what: "given",
            low_bytes: bytes,
            high_bytes: bytes,
            source: "given",
        }])
    }

    fn from_parts(parts: Vec<NonTorchPart>) -> Self {
        NonTorch {
            low_bytes: parts.iter().map(|p| p.low_bytes).sum(),
            high_bytes: parts.iter().map(|p| p.high_bytes).sum(),
            parts,
        }
    }
}

/// The model for `cfg` (version, tensor parallelism) on `gpu`.
pub fn non_torch(cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> NonTorch {
    let context = gpu.map_or(default_context_bytes((0, 0), 0), |g| g.context_bytes);
    let stack = gpu.map_or(0, |g| context_stack_bytes(g.compute_capability, g.sm_count));
    let mut parts = match cfg.vllm_version {
        VllmVersion::V1 => vec![
            NonTorchPart {
                what: "CUDA context before vLLM's first snapshot (not counted)",
                low_bytes: 0,
                high_bytes: 0,
                source: "gpu_worker.py Worker.init_device: init_snapshot after set_device",
            },
            NonTorchPart {
                what: "kernels and library state loaded after it",
                low_bytes: 0,
                high_bytes: context.saturating_sub(stack),
                source: "unmeasured: up to the card's context less its stack reservation",
            },
        ],
        VllmVersion::V0 => vec![NonTorchPart {
            what: "CUDA context and loaded kernels",
            low_bytes: context,
            high_bytes: context,
            source: "the card profile's calibrated context (worker.py counts total - free - torch)",
        }],
    };
    let tp = cfg.tensor_parallel_size;
    if tp > 1 {
        parts.push(NonTorchPart {
            what: "NCCL buffers",
            low_bytes: 2 * NCCL_CONNECTION_BYTES,
            high_bytes: 2 * 32 * 2 * NCCL_CONNECTION_BYTES,
            source: "NCCL's default buffer sizes, 2-32 channels, 1-2 communicators; unmeasured",
        });
        if matches!(tp, 2 | 4 | 6 | 8) {
            parts.push(NonTorchPart {
                what: "vLLM custom all-reduce buffers",
                low_bytes: CUSTOM_ALL_REDUCE_BYTES,
                high_bytes: CUSTOM_ALL_REDUCE_BYTES,
                source: "custom_all_reduce.py CustomAllreduce(max_size=8 MiB)",
            });
        }
    }
    if cfg.pipeline_parallel_size > 1 {
        parts.push(NonTorchPart {
            what: "NCCL buffers of the pipeline group",
            low_bytes: 2 * NCCL_CONNECTION_BYTES,
            high_bytes: 2 * 32 * 2 * NCCL_CONNECTION_BYTES,
            source: "the pipeline group's PyNccl (warm-up all_reduce at init) and torch's send/recv communicator; NCCL's default buffer sizes as for tensor parallelism; unmeasured",
        });
    }
    NonTorch::from_parts(parts)
}
