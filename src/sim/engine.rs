//! Tensors with reference counts, the way PyTorch's storages live and die.
//!
//! Every holder of a tensor — a Python variable, autograd's saved tensors, autocast's cache,
//! a parameter's `.grad`, optimizer state — is one reference. A tensor is freed the moment
//! its last reference is released, which is exactly when PyTorch's caching allocator gets the
//! block back.

use super::autograd::{Edge, Node};
use super::dtype::DType;
use super::runtime::Runtime;
use super::timeline::{
    Category, Event, EventKind, Name, Phase, Residency, Shape, TensorRecord, Timeline,
};
use crate::config::CheckpointPolicy;
use std::collections::HashMap;

/// A tensor id: index into `Timeline::tensors`.
pub type T = u32;

/// A value in the forward pass: a tensor and where its gradient goes.
#[derive(Debug, Clone, Copy)]
pub struct V {
    pub t: T,
    pub edge: Edge,
}

/// A forward to re-run during the backward (a checkpointed block): input → output.
pub type Recompute = std::rc::Rc<dyn Fn(&mut Engine, V) -> V>;

/// A model parameter (an fp32 master weight, or a frozen weight) and its training state.
#[derive(Debug, Clone)]
pub struct Param {
    pub t: T,
    pub name: Name,
    pub shape: Shape,
    /// Weight decay group (2-D weights) — nanoGPT's configure_optimizers puts these first.
    pub decay: bool,
    /// False for frozen weights: never an edge, never a gradient.
    pub requires_grad: bool,
    pub grad: Option<T>,
    /// Gradients arrived in this backward but not yet accumulated (tied weights get two).
    pub pending: Option<T>,
    /// Edges into this parameter recorded in the current graph.
    pub uses: u32,
    pub state: Vec<T>,
}

pub struct Engine {
    pub tl: Timeline,
    rc: Vec<u32>,
    /// Fused values (torch.compile) and the buffers each keeps alive until it is consumed,
    /// keyed by the fused value's id: one lookup per release, however many are alive (a
    /// list scanned per release made deep models quadratic).
    pub(super) fused_inputs: HashMap<T, Vec<T>>,
    /// Gradient tensors that autograd cannot accumulate into in place (transposed views).
    no_inplace: Vec<bool>,
    pub phase: Phase,
    pub grad_mode: bool,
    /// model.train(): dropout is active (independent of grad mode: checkpointed blocks run
    /// their forward without saving but with dropout).
    pub training: bool,
    /// Block forwards that activation checkpointing re-runs in the backward.
    pub recompute: Vec<Recompute>,
    /// The gradient that reached a recomputed block's input (Edge::Capture).
    pub captured: Option<T>,
    /// Some(dtype) inside a CUDA autocast region.
    pub autocast: Option<DType>,
    /// Autocast's cache of weight casts for the current region: (param index, cast), in the
    /// order they were made (the order they are freed at the region's end).
    cache: Vec<(usize, T)>,
    /// The same casts by param index, for a lookup that does not scan the region's casts.
    cast_of: Vec<Option<T>>,
    pub tape: Vec<Node>,
    pub params: Vec<Param>,
    pub rt: Runtime,
    /// Which threads have created their cuBLAS workspaces: [python thread, autograd thread].
    workspaces: [bool; 2],
    /// Inference: the KV cache the attention layers write and decode steps read.
    pub kv: Option<super::ops::KvCache>,
    /// The rank's multi-GPU policy (world_size 1: nothing).
    pub dist: super::parallel::Dist,
    /// Some(dtype): parameters are views into flat buffers the multi-GPU policy owns
    /// (DeepSpeed's flattened bf16 groups, FSDP's flat parameters): no storage of their own.
    pub param_view: Option<DType>,
    /// Frozen parameters are views too (FSDP's flat parameters and ZeRO-3's partitions hold
    /// every module parameter, frozen or not): they keep their own dtype but no storage.
    pub frozen_view: bool,
    /// The dtype of trainable parameters (`add_param`): fp32 master weights under mixed
    /// precision, `dtype` itself under `precision_mode = 'pure'` (see `sim::amp`).
    pub param_dtype: DType,
    /// Activation checkpointing runs torch.utils.checkpoint with use_reentrant=True.
    pub reentrant_checkpoint: bool,
    /// Inside a checkpointed block's first forward (`Engine::checkpoint`), which torch runs
    /// with autograd on (non-reentrant) or under no_grad (reentrant) and the engine without a
    /// tape either way.
    pub(crate) in_checkpoint_forward: bool,
    /// What a checkpointed block keeps: its input (full), also torchtitan's per-op kept
    /// outputs (`sim::sac`), or its input in host memory (axolotl's offloading checkpointer).
    pub checkpoint_policy: CheckpointPolicy,
    /// Bytes of checkpoint inputs in host memory now, and the most there has been.
    host_checkpoints: [u64; 2],
    /// The block the policy is running, if any.
    pub(crate) sac: Option<super::sac::SacFrame>,
    /// Each checkpoint's storage of kept outputs, in the order its forward made them.
    pub(crate) sac_storage: HashMap<u32, std::collections::VecDeque<Vec<Option<T>>>>,
    /// The MoE layers' router logits the model's output keeps (`output_router_logits`:
    /// transformers' OutputRecorder), in layer order, until the loss takes them.
    pub router_logits: Vec<super::ops::moe_aux::RouterLogits>,
}

impl Engine {
    pub fn new(rt: Runtime) -> Engine {
        Engine {
            tl: super::spare::take(),
            rc: Vec::with_capacity(4096),
            fused_inputs: HashMap::new(),
            no_inplace: Vec::with_capacity(4096),
            phase: Phase::Init,
            grad_mode: false,
            training: false,
            recompute: Vec::new(),
            captured: None,
            autocast: None,
            cache: Vec::new(),
            cast_of: Vec::new(),
            tape: Vec::new(),
            params: Vec::new(),
            rt,
            workspaces: [false; 2],
            kv: None,
            dist: super::parallel::Dist::single(),
            param_view: None,
            frozen_view: false,
            param_dtype: DType::F32,
            reentrant_checkpoint: false,
            in_checkpoint_forward: false,
            checkpoint_policy: CheckpointPolicy::Full,
            host_checkpoints: [0; 2],
            sac: None,
            sac_storage: HashMap::new(),
            router_logits: Vec::new(),
        }
    }

    /// Allocate a tensor with one reference (its creator's).
    pub fn alloc(&mut self, name: Name, shape: Shape, dtype: DType, category: Category) -> T {
        // Sizes were checked against overflow before the run started (train::validate).
        let bytes = shape
            .numel()
            .unwrap_or(u64::MAX)
            .saturating_mul(dtype.size());
        self.alloc_bytes(name, shape, dtype, bytes, category)
    }

    pub fn alloc_bytes(
        &mut self,
        name: Name,
        shape: Shape,
        dtype: DType,
        bytes: u64,
        category: Category,
    ) -> T {
        let id = self.record_tensor(name, shape, dtype, bytes, category, Residency::Buffer);
        self.tl.events.push(Event {
            tensor: id,
            kind: EventKind::Alloc,
            phase: self.phase,
            bytes,
        });
        id
    }

    /// A new tensor record with one reference (its creator's), born in the current phase.
    pub(super) fn record_tensor(
        &mut self,
        name: Name,
        shape: Shape,
        dtype: DType,
        bytes: u64,
        category: Category,
        residency: Residency,
    ) -> T {
        let id = self.tl.tensors.len() as T;
        self.tl.tensors.push(TensorRecord {
            name,
            shape,
            dtype,
            bytes,
            category,
            phase: self.phase,
            residency,
        });
        self.rc.push(1);
        self.no_inplace.push(false);
        id
    }

    pub fn retain(&mut self, t: T) {
        self.rc[t as usize] += 1;
    }

    pub fn release(&mut self, t: T) {
        let rc = &mut self.rc[t as usize];
        debug_assert!(*rc > 0, "double release of tensor {t}");
        *rc -= 1;
        if *rc != 0 {
            return;
        }
        if self.is_fused(t) {
            // Consumed: the buffers its kernel would have read may go.
            if let Some(inputs) = self.fused_inputs.remove(&t) {
                for x in inputs {
                    self.release(x);
                }
            }
            return;
        }
        self.tl.events.push(Event {
            tensor: t,
            kind: EventKind::Free,
            phase: self.phase,
            bytes: self.tl.tensors[t as usize].bytes,
        });
    }

    /// Release a forward value held by a Python variable.
    pub fn drop_value(&mut self, v: V) {
        self.release(v.t);
    }

    pub fn record(&self, t: T) -> &TensorRecord {
        &self.tl.tensors[t as usize]
    }

    pub fn shape(&self, t: T) -> Shape {
        self.tl.tensors[t as usize].shape
    }

    pub fn dtype(&self, t: T) -> DType {
        self.tl.tensors[t as usize].dtype
    }

    pub fn set_category(&mut self, t: T, c: Category) {
        self.tl.tensors[t as usize].category = c;
    }

    pub fn mark_no_inplace(&mut self, t: T) {
        self.no_inplace[t as usize] = true;
    }

    pub fn is_no_inplace(&self, t: T) -> bool {
        self.no_inplace[t as usize]
    }

    /// cuBLAS creates its workspaces (through the caching allocator) at the first matmul of
    /// each thread: the Python thread in the forward, autograd's thread in the backward.
    pub fn matmul_workspace(&mut self) {
        let thread = usize::from(self.phase == Phase::Backward);
        if self.workspaces[thread] {
            return;
        }
        self.workspaces[thread] = true;
        let what = if thread == 0 {
            "workspace(python thread)"
        } else {
            "workspace(autograd thread)"
        };
        for (module, bytes) in [
            ("cublas", self.rt.cublas_workspace_bytes),
            ("cublaslt", self.rt.cublaslt_workspace_bytes),
        ] {
            if bytes > 0 {
                self.alloc_bytes(
                    Name::top(module, what),
                    Shape::new(&[bytes]),
                    DType::U8,
                    bytes,
                    Category::Workspace,
                );
            }
        }
    }

    /// `elements` of `dtype` kept in host memory by an offloading engine (Timeline::host_bytes).
    pub fn host(&mut self, elements: u64, dtype: DType) {
        let bytes = elements.saturating_mul(dtype.size());
        self.tl.host_bytes = self.tl.host_bytes.saturating_add(bytes);
    }

    /// Checkpointed blocks keep their input in host memory, not on the GPU.
    pub(crate) fn offloads_checkpoint_inputs(&self) -> bool {
        self.checkpoint_policy == CheckpointPolicy::Offload
    }

    /// The output holding the router logits goes: each layer's logits with it.
    pub fn drop_router_logits(&mut self) {
        for l in std::mem::take(&mut self.router_logits) {
            self.drop_value(l.v);
        }
    }

    /// A checkpoint's input copied to (`to_host`) or back from host memory: the host figure
    /// counts the most that was ever there at once on top of the offloading engine's state.
    pub(crate) fn host_checkpoint(&mut self, bytes: u64, to_host: bool) {
        let [live, most] = &mut self.host_checkpoints;
        if to_host {
            *live = live.saturating_add(bytes);
            if *live > *most {
                self.tl.host_bytes = self.tl.host_bytes.saturating_add(*live - *most);
                *most = *live;
            }
        } else {
            *live = live.saturating_sub(bytes);
        }
    }

    // --- parameters ---

    /// A trainable parameter in the run's parameter dtype (an fp32 master weight under mixed
    /// precision).
    pub fn add_param(&mut self, name: Name, dims: &[u64], decay: bool) -> usize {
        self.add_param_as(name, dims, decay, self.param_dtype, true)
    }

    /// A parameter of any dtype; `requires_grad = false` freezes it (LoRA's base weights): no
    /// gradient, no optimizer state, and the ops that use it save nothing for it.
    pub fn add_param_as(
        &mut self,
        name: Name,
        dims: &[u64],
        decay: bool,
        dtype: DType,
        requires_grad: bool,
    ) -> usize {
        let shape = Shape::new(dims);
        let t = match self.param_view {
            // A view's bytes belong to the flat buffer it points into.
            Some(view) if requires_grad => {
                self.alloc_bytes(name, shape, view, 0, Category::Parameters)
            }
            _ if self.frozen_view && !requires_grad => {
                self.alloc_bytes(name, shape, dtype, 0, Category::Parameters)
            }
            _ => self.alloc(name, shape, dtype, Category::Parameters),
        };
        self.params.push(Param {
            t,
            name,
            shape,
            decay,
            requires_grad,
            grad: None,
            pending: None,
            uses: 0,
            state: Vec::new(),
        });
        self.params.len() - 1
    }

    /// The parameter as a forward value (its gradient goes to AccumulateGrad, if it has one).
    pub fn param(&mut self, p: usize) -> V {
        let grad = self.grad_mode && self.params[p].requires_grad;
        if grad {
            self.params[p].uses += 1;
        }
        V {
            t: self.params[p].t,
            edge: if grad {
                Edge::Param(p as u32)
            } else {
                Edge::None
            },
        }
    }

    // --- autocast ---

    pub fn enter_autocast(&mut self, dtype: Option<DType>) {
        self.autocast = dtype;
    }

    /// Leaving the autocast region clears its cache of weight casts.
    pub fn exit_autocast(&mut self) {
        self.autocast = None;
        let cache = std::mem::take(&mut self.cache);
        for (p, t) in cache {
            self.cast_of[p] = None;
            self.release(t);
        }
    }

    pub fn cached_cast(&self, p: usize) -> Option<T> {
        self.cast_of.get(p).copied().flatten()
    }

    pub fn cache_insert(&mut self, p: usize, t: T) {
        self.retain(t);
        self.cache.push((p, t));
        if self.cast_of.len() <= p {
            self.cast_of.resize(p + 1, None);
        }
        self.cast_of[p] = Some(t);
    }
}
