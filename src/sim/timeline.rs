//! The simulator's output: every tensor with a name, shape, dtype, bytes and category, and the
//! ordered alloc/free events of the run, each tagged with the phase it happened in.

use super::dtype::DType;
use serde::Serialize;
use std::fmt;

/// What a tensor is for, as the report groups memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Parameters,
    Gradients,
    Optimizer,
    Activations,
    /// The loss chain: logits, log-probs, their fp32 copy and their gradients.
    Logits,
    /// Half-precision copies of weights: autocast's per-region cache of casts, and the
    /// copies bitsandbytes dequantizes for each matmul.
    AutocastCopies,
    /// cuBLAS / cuBLASLt workspaces, attention scratch.
    Workspace,
    /// Input batches, scalars, norms.
    Other,
    /// Inference: the keys and values every layer keeps for the tokens seen so far.
    KvCache,
    /// Multi-GPU buffers in PyTorch's allocator: DDP's gradient buckets, ZeRO's reduce
    /// bucket, FSDP/ZeRO-3's all-gathered parameters and unsharded gradients.
    Communication,
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::Parameters,
        Category::Gradients,
        Category::Optimizer,
        Category::Activations,
        Category::Logits,
        Category::AutocastCopies,
        Category::Workspace,
        Category::Other,
        Category::KvCache,
        Category::Communication,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Category::Parameters => "parameters",
            Category::Gradients => "gradients",
            Category::Optimizer => "optimizer",
            Category::Activations => "activations",
            Category::Logits => "logits",
            Category::AutocastCopies => "autocast_copies",
            Category::Workspace => "workspace",
            Category::Other => "other",
            Category::KvCache => "kv_cache",
            Category::Communication => "communication",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Category::Parameters => "parameters",
            Category::Gradients => "gradients",
            Category::Optimizer => "optimizer state",
            Category::Activations => "activations",
            Category::Logits => "logits and loss",
            Category::AutocastCopies => "half weight copies",
            Category::Workspace => "cuBLAS workspaces",
            Category::Other => "batches and scalars",
            Category::KvCache => "KV cache",
            Category::Communication => "communication buffers",
        }
    }
}

/// The phases of nanoGPT's train.py, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Model moved to the device, first batch fetched.
    Init,
    /// estimate_loss() at iteration 0, before any step.
    Eval,
    Forward,
    Backward,
    /// clip_grad_norm_ + AdamW step + zero_grad(set_to_none=True).
    Optimizer,
    /// A later estimate_loss(): AdamW state alive, last micro-step's logits still referenced.
    EvalAfterStep,
    /// Inference: the forward over the prompt, filling the KV cache.
    Prefill,
    /// Inference: one new token per sequence, attending to the whole cache.
    Decode,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Init,
        Phase::Eval,
        Phase::Forward,
        Phase::Backward,
        Phase::Optimizer,
        Phase::EvalAfterStep,
        Phase::Prefill,
        Phase::Decode,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::Eval => "eval",
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
            Phase::EvalAfterStep => "eval_after_step",
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A tensor shape; transformers never need more than four dimensions here.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    dims: [u64; 4],
    rank: u8,
}

impl Shape {
    pub fn new(dims: &[u64]) -> Shape {
        assert!(dims.len() <= 4, "shapes have at most 4 dimensions");
        let mut d = [0; 4];
        d[..dims.len()].copy_from_slice(dims);
        Shape {
            dims: d,
            rank: dims.len() as u8,
        }
    }

    pub fn scalar() -> Shape {
        Shape::new(&[])
    }

    pub fn dims(&self) -> &[u64] {
        &self.dims[..self.rank as usize]
    }

    /// Number of elements; None on overflow.
    pub fn numel(&self) -> Option<u64> {
        self.dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.dims().iter().map(|d| d.to_string()).collect();
        write!(f, "({})", parts.join(", "))
    }
}

/// A tensor's name: `layer3.mlp.c_fc.out` is `Name { layer: Some(3), module: "mlp.c_fc",
/// what: "out" }`. Static parts plus a layer index, so the simulator never formats strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    pub layer: Option<u32>,
    pub module: &'static str,
    pub what: &'static str,
}

impl Name {
    pub const fn top(module: &'static str, what: &'static str) -> Name {
        Name {
            layer: None,
            module,
            what,
        }
    }

    pub const fn at(layer: Option<u32>, module: &'static str, what: &'static str) -> Name {
        Name {
            layer,
            module,
            what,
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.layer {
            write!(f, "layer{l}.")?;
        }
        if self.what.is_empty() {
            f.write_str(self.module)
        } else {
            write!(f, "{}.{}", self.module, self.what)
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TensorRecord {
    pub name: Name,
    pub shape: Shape,
    pub dtype: DType,
    /// Storage bytes (elements x element size), before the allocator's rounding.
    pub bytes: u64,
    pub category: Category,
    /// The phase the tensor was born in.
    pub phase: Phase,
    /// How the value exists on the device: eager PyTorch materialises every value; under
    /// torch.compile inductor fuses pointwise chains into their consumers' kernels.
    pub residency: Residency,
}

/// Whether a value ever occupies memory of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Residency {
    /// A buffer of its own (every eager tensor; compiled kernels' outputs).
    Buffer,
    /// Computed inside the kernel that consumes it (inductor's fused pointwise ops): no
    /// allocation, no events; it keeps its inputs alive until it is consumed.
    Fused,
    /// A fused value that an extern kernel needs as a real operand (a matmul's input): a
    /// buffer written for that kernel; freed after it, unless the backward saves it.
    Operand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Alloc,
    Free,
}

#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub tensor: u32,
    pub kind: EventKind,
    pub phase: Phase,
    /// The tensor's storage bytes (its record's `bytes`): the allocator replay reads the events
    /// in order and never the tensor table, whose random reads (a 96-byte record per event)
    /// were most of its cache misses on deep models.
    pub bytes: u64,
}

/// Everything the run allocated and freed, in order.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub tensors: Vec<TensorRecord>,
    pub events: Vec<Event>,
    /// Host (pinned CPU) memory rank 0's offloading engine holds for the run: ZeRO-Offload's
    /// master weights, optimizer state and gradient partitions, FSDP's CPU shards. Not GPU
    /// memory: no event, no share of any peak.
    pub host_bytes: u64,
}

impl Timeline {
    /// Tensors alive just after event `at` (inclusive), in birth order.
    pub fn live_after(&self, at: usize) -> Vec<u32> {
        let mut alive = vec![false; self.tensors.len()];
        for e in &self.events[..=at.min(self.events.len().saturating_sub(1))] {
            alive[e.tensor as usize] = e.kind == EventKind::Alloc;
        }
        alive
            .iter()
            .enumerate()
            .filter(|(_, &a)| a)
            .map(|(i, _)| i as u32)
            .collect()
    }
}

impl Name {
    /// `layer3.ln_1.out` from "ln_1.out".
    pub const fn layer(layer: u32, label: &'static str) -> Name {
        Name::at(Some(layer), label, "")
    }

    pub const fn layer_param(layer: u32, module: &'static str, what: &'static str) -> Name {
        Name::at(Some(layer), module, what)
    }
}
