//! The diagnosis as data. Field names are the `--json` contract of issue 4: keep them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Who printed the message. Named by the message (DeepSpeed and Lightning print PyTorch's),
/// except `vllm`: a serving engine's own budget (gpu_memory_utilization) changes the diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pytorch2,
    Pytorch1,
    Jax,
    Tensorflow,
    Candle,
    Llamacpp,
    Vllm,
    Other,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pytorch2 => "pytorch2",
            Format::Pytorch1 => "pytorch1",
            Format::Jax => "jax",
            Format::Tensorflow => "tensorflow",
            Format::Candle => "candle",
            Format::Llamacpp => "llamacpp",
            Format::Vllm => "vllm",
            Format::Other => "other",
        }
    }

    /// What a person would call it in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Pytorch2 => "PyTorch 2.x caching allocator",
            Format::Pytorch1 => "PyTorch 1.x caching allocator",
            Format::Jax => "JAX/XLA",
            Format::Tensorflow => "TensorFlow",
            Format::Candle => "candle/cudarc",
            Format::Llamacpp => "llama.cpp/ggml",
            Format::Vllm => "vLLM",
            Format::Other => "a CUDA library (cuBLAS/NCCL/…)",
        }
    }
}

/// Where in a run the failure happened; the same names as `check`'s phases where they overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Init,
    ModelLoad,
    Eval,
    Forward,
    Backward,
    Optimizer,
    EvalAfterStep,
    Compile,
    KvCache,
    #[default]
    Unknown,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::ModelLoad => "model_load",
            Phase::Eval => "eval",
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
            Phase::EvalAfterStep => "eval_after_step",
            Phase::Compile => "compile",
            Phase::KvCache => "kv_cache",
            Phase::Unknown => "unknown",
        }
    }

    /// Parse a phase name as the simulator spells it (`"eval"`, `"model_load"`, …).
    pub fn from_name(s: &str) -> Phase {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "init" => Phase::Init,
            "model_load" | "load" => Phase::ModelLoad,
            "eval" | "evaluation" => Phase::Eval,
            "forward" | "fwd" => Phase::Forward,
            "backward" | "bwd" => Phase::Backward,
            "optimizer" | "optim" | "optimizer_step" => Phase::Optimizer,
            "eval_after_step" => Phase::EvalAfterStep,
            "compile" => Phase::Compile,
            "kv_cache" => Phase::KvCache,
            _ => Phase::Unknown,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process the log names with its memory (`Process 1856718 has 1.23 GiB memory in use`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherProcess {
    pub pid: u64,
    /// `None` when the printed figure was absurd (does not fit in u64).
    pub bytes: Option<u64>,
}

/// What the log states, in bytes. Absent means "not stated" — never 0 for that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub tried_to_allocate_bytes: Option<u64>,
    pub total_capacity_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    /// This process, non-PyTorch memory (CUDA context, NCCL, cuDNN) included.
    pub process_in_use_bytes: Option<u64>,
    pub allocated_by_framework_bytes: Option<u64>,
    pub reserved_unallocated_bytes: Option<u64>,
    /// PyTorch 1.x's "reserved in total". (1.0's "X cached" is reserved-but-unallocated: the
    /// allocator printed `amount_cached - amount_allocated` there.)
    pub reserved_total_bytes: Option<u64>,
    pub private_pools_bytes: Option<u64>,
    #[serde(default)]
    pub other_processes: Vec<OtherProcess>,
    /// Format-specific figures with the sidecar corpus's names (`buffer_assignment_total_bytes`,
    /// `parameter_allocation_bytes`, `allowed_bytes`, …), flattened into `facts`.
    #[serde(flatten)]
    pub extra: BTreeMap<String, u64>,
}

impl Facts {
    /// total − free − this process: memory held by other processes, the display or the driver.
    /// (The seed case: 11.69 − 2.68 − 7.04 = 1.97 GiB.) `None` unless all three are stated.
    pub fn outside_process_bytes(&self) -> Option<u64> {
        let used = self.total_capacity_bytes?.checked_sub(self.free_bytes?)?;
        Some(used.saturating_sub(self.process_in_use_bytes?))
    }

    /// this process − (allocated + reserved-but-unallocated): what this process holds outside
    /// the framework's allocator (CUDA context, cuBLAS/NCCL/cuDNN buffers, other libraries).
    pub fn non_framework_in_process_bytes(&self) -> Option<u64> {
        let framework = self
            .allocated_by_framework_bytes?
            .checked_add(self.reserved_unallocated_bytes.unwrap_or(0))?;
        Some(self.process_in_use_bytes?.saturating_sub(framework))
    }

    /// Reserved but not handed to tensors: stated (2.x, 1.0's "cached"), or derived from 1.x's
    /// "reserved in total" − "already allocated".
    pub fn unallocated_in_cache_bytes(&self) -> Option<u64> {
        self.reserved_unallocated_bytes.or_else(|| {
            self.reserved_total_bytes?
                .checked_sub(self.allocated_by_framework_bytes?)
        })
    }

    /// True when the log stated nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == Facts::default()
    }
}

/// The tensor the failed request was, with its shape and dtype.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Culprit {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
    pub bytes: u64,
    /// The simulator's allocated bytes just before it asked for this tensor (null without a
    /// config, or for a tensor read from the log): compare with the log's "allocated by
    /// PyTorch".
    pub simulated_allocated_before_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    OversizedTensor,
    OtherProcesses,
    Fragmentation,
    UnexplainedMemory,
    PrivatePools,
    ModelTooLarge,
    BogusFigure,
    NotVram,
}

impl CauseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::OversizedTensor => "oversized_tensor",
            CauseKind::OtherProcesses => "other_processes",
            CauseKind::Fragmentation => "fragmentation",
            CauseKind::UnexplainedMemory => "unexplained_memory",
            CauseKind::PrivatePools => "private_pools",
            CauseKind::ModelTooLarge => "model_too_large",
            CauseKind::BogusFigure => "bogus_figure",
            CauseKind::NotVram => "not_vram",
        }
    }
}

/// One cause with the numbers that support it. `causes` is ranked, most likely first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub kind: CauseKind,
    pub evidence: String,
}

/// A change to make. `predicted_peak_bytes` is the device peak (as in `check`) after the fix;
/// both it and `fits` are null for generic fixes given without a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fix {
    pub change: String,
    pub command: Option<String>,
    /// What the command cannot carry: the code to change (model.py, train.py, the Trainer's
    /// loading), each to make along with the command.
    #[serde(default)]
    pub code_changes: Vec<String>,
    pub predicted_peak_bytes: Option<u64>,
    pub fits: Option<bool>,
}

/// A further report in the same log (another rank or GPU), beyond the one diagnosed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherReport {
    pub format: Format,
    pub device: Option<String>,
    pub facts: Facts,
}
