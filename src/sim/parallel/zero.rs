//! DeepSpeed's ZeRO stages 1 and 2 (`DeepSpeedZeroOptimizer`, runtime/zero/stage_1_and_2.py),
//! on rank 0, with DeepSpeed's defaults.
//!
//! Construction: the module is in the run's half dtype (`bf16.enabled` → `module.bfloat16()`).
//! Each optimizer parameter group (nanoGPT's two: 2-D weights with decay, the rest without) is
//! flattened into one half-precision buffer padded to a multiple of
//! `nccl_start_alignment_factor (2) × world_size` elements; the parameters become views into
//! it. Rank 0 owns the first `padded / world_size` elements of each group: an fp32 master copy
//! of that partition (`.clone().float()`), and the optimizer's state on it — created at once
//! by `initialize_optimizer_states`, which steps once on zero fp32 gradients. DeepSpeed's
//! FusedAdam keeps `step` as a Python int, not a tensor.
//!
//! Backward, stage 1 (contiguous_gradients and overlap_comm are ignored for stage 1): autograd's
//! half-precision `.grad` accumulate over the micro-steps; at the accumulation boundary
//! `reduce_gradients` all-reduces them in flattened chunks of at most `reduce_bucket_size`
//! elements, and the epilogue's `zero_grad(set_to_none=True)` drops every `.grad` — only the
//! gradients of parameters that overlap rank 0's partition survive, held by the
//! `averaged_gradients` views until the step.
//!
//! Backward, stage 2 (contiguous_gradients=True by default): `engine.backward` allocates the
//! reduce bucket (`ipg_buffer`, `reduce_bucket_size` = 5e8 elements of the half dtype); each
//! gradient is copied into it as it is ready and its own storage goes; a full bucket (and the
//! epilogue) reduce-scatters it into `grads_in_partition` — one buffer of the numel of every
//! parameter that overlaps rank 0's partition. The epilogue keeps the first micro-step's buffer
//! as `averaged_gradients`, adds later ones into it, and releases the bucket.
//!
//! Step (both stages), per group: the partition's gradients flattened, cast to fp32, the
//! optimizer run on the fp32 partition, the fp32 gradient dropped; the averaged gradients go
//! once flattened. DeepSpeed clips on the partitions (norms are scalars): train.py's
//! clip_grad_norm_ and zero_grad do not run.
//!
//! One simplification: the forward is the run's autocast forward (bf16 matmuls, fp32 norms and
//! residual stream), where DeepSpeed's bf16 module runs natively in bf16 — activations are an
//! upper bound for that difference; the model states above are DeepSpeed's.

use super::module_dtype;
use super::zero_offload::Offload;
use crate::config::{OptimizerKind, Parallelism};
use crate::sim::dtype::DType;
use crate::sim::engine::{Engine, T};
use crate::sim::optim::{optimizer_order, optimizer_state};
use crate::sim::timeline::{Category, Name, Shape};

/// The module name of the flat buffers that hold other parameters' storage.
pub const FLAT_MODULE: &str = "flat_param";
/// `zero_optimization.reduce_bucket_size` default, in elements.
pub const REDUCE_BUCKET_ELEMENTS: u64 = 500_000_000;
/// `nccl_start_alignment_factor`: group buffers are padded to a multiple of this × world_size.
pub const ZERO_ALIGNMENT: u64 = 2;

pub(super) fn stage(p: Parallelism) -> Option<u8> {
    match p {
        Parallelism::Zero1 => Some(1),
        Parallelism::Zero2 => Some(2),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct Group {
    params: Vec<usize>,
    /// Elements of rank 0's partition: the padded group over world_size.
    partition: u64,
    /// Parameters that overlap rank 0's partition `[0, partition)`.
    in_partition: Vec<usize>,
}

#[derive(Debug, Clone)]
pub(super) struct Zero {
    stage: u8,
    /// The module's (and its gradients') dtype.
    dtype: DType,
    groups: Vec<Group>,
    /// Whether each parameter index is in a group: the gradient hook's lookup, which scanned
    /// the groups (all the model's parameters) once per gradient, quadratic in the layers.
    member: Vec<bool>,
    /// Stage 2: the contiguous reduce bucket and the elements copied into it so far.
    ipg: Option<T>,
    ipg_fill: u64,
    /// Stage 2: this backward's partitioned gradients, and the accumulated ones.
    grads_in_partition: Option<T>,
    averaged: Option<T>,
    /// Stage 1: gradients kept past the epilogue by `averaged_gradients`, with their group.
    kept: Vec<(usize, T)>,
    /// Stage 2 with offload_optimizer (zero_offload.rs).
    offload: Option<Offload>,
}

pub(super) fn numel(e: &Engine, p: usize) -> u64 {
    e.params[p].shape.numel().unwrap_or(0)
}

/// DeepSpeed's parameter groups: the client optimizer's (nanoGPT's configure_optimizers: the
/// 2-D weights with decay, then the rest), trainable parameters only, empty groups dropped.
pub(super) fn param_groups(e: &Engine) -> Vec<Vec<usize>> {
    let (decay, rest): (Vec<usize>, Vec<usize>) = optimizer_order(e)
        .into_iter()
        .filter(|&p| e.params[p].requires_grad)
        .partition(|&p| e.params[p].decay);
    [decay, rest]
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect()
}

/// One parameter group flattened into its bf16/fp16 buffer (padded to ZERO_ALIGNMENT × world):
/// the group with its partition, and each parameter's (index, elements in rank 0's partition,
/// elements) for the offload's host copies.
fn flat_group(
    e: &mut Engine,
    params: Vec<usize>,
    world: u64,
    dtype: DType,
) -> (Group, Vec<(usize, u64, u64)>) {
    let total: u64 = params.iter().map(|&p| numel(e, p)).sum();
    let align = ZERO_ALIGNMENT * world;
    let padded = total.div_ceil(align) * align;
    let partition = padded / world;
    e.alloc(
        Name::top(FLAT_MODULE, "bit16_group"),
        Shape::new(&[padded]),
        dtype,
        Category::Parameters,
    );
    let mut pieces = Vec::new();
    let mut offset = 0;
    let mut in_partition = Vec::new();
    for &p in &params {
        if offset < partition {
            in_partition.push(p);
        }
        let end = (offset + numel(e, p)).min(partition);
        pieces.push((p, end.saturating_sub(offset), numel(e, p)));
        offset += numel(e, p);
    }
    let group = Group {
        params,
        partition,
        in_partition,
    };
    (group, pieces)
}

/// The rank's fp32 master partition: `partition.clone().float()`, the clone a temporary
/// unless the group is fp32 already.
fn fp32_partition(e: &mut Engine, partition: u64, dtype: DType) {
    let clone = (dtype != DType::F32).then(|| {
        e.alloc(
            Name::top("zero", "partition_clone"),
            Shape::new(&[partition]),
            dtype,
            Category::Optimizer,
        )
    });
    e.alloc(
        Name::top("zero", "fp32_partition"),
        Shape::new(&[partition]),
        DType::F32,
        Category::Optimizer,
    );
    if let Some(c) = clone {
        e.release(c);
    }
}

/// initialize_optimizer_states: zero fp32 gradients, one step (the state made), gradients
/// dropped.
fn initialize_optimizer_states(e: &mut Engine, groups: &[Group], kind: OptimizerKind) {
    let grads: Vec<T> = groups
        .iter()
        .map(|g| {
            e.alloc(
                Name::top("zero", "fp32_grad_partition"),
                Shape::new(&[g.partition]),
                DType::F32,
                Category::Gradients,
            )
        })
        .collect();
    for g in groups {
        optimizer_state(
            e,
            Name::top("zero", ""),
            Shape::new(&[g.partition]),
            kind,
            false,
        );
    }
    for t in grads {
        e.release(t);
    }
}

impl Zero {
    /// `deepspeed.initialize`: flatten the groups, make the fp32 partitions, create the state.
    pub(super) fn build(e: &mut Engine, stage: u8, kind: OptimizerKind, offload: bool) -> Zero {
        let world = e.dist.world;
        let dtype = module_dtype(e);
        let mut groups = Vec::new();
        let mut pieces = Vec::new();
        for params in param_groups(e) {
            let (group, group_pieces) = flat_group(e, params, world, dtype);
            pieces.extend(group_pieces);
            if !offload {
                fp32_partition(e, group.partition, dtype);
            }
            groups.push(group);
        }
        let offload = offload.then(|| {
            let partitions: Vec<u64> = groups.iter().map(|g| g.partition).collect();
            Offload::build(e, pieces, &partitions, dtype)
        });
        if offload.is_none() {
            initialize_optimizer_states(e, &groups, kind);
        }
        let mut member = vec![false; e.params.len()];
        for &p in groups.iter().flat_map(|g| g.params.iter()) {
            member[p] = true;
        }
        Zero {
            stage,
            dtype,
            groups,
            member,
            ipg: None,
            ipg_fill: 0,
            grads_in_partition: None,
            averaged: None,
            kept: Vec::new(),
            offload,
        }
    }

    /// Stage 2's `engine.backward`: a fresh reduce bucket (the previous one was released).
    pub(super) fn before_backward(&mut self, e: &mut Engine, boundary: bool) {
        if self.stage != 2 {
            return;
        }
        if let Some(o) = &mut self.offload {
            o.boundary = boundary;
        }
        if let Some(old) = self.ipg.take() {
            e.release(old);
        }
        self.ipg = Some(e.alloc(
            Name::top("zero", "ipg_buffer"),
            Shape::new(&[REDUCE_BUCKET_ELEMENTS]),
            self.dtype,
            Category::Communication,
        ));
        self.ipg_fill = 0;
    }

    fn is_trainable_member(&self, p: usize) -> bool {
        self.member.get(p).copied().unwrap_or(false)
    }

    /// Stage 2's gradient hook: the gradient is copied into the bucket (reduced first when it
    /// would not fit) and its own storage goes.
    pub(super) fn grad_ready(&mut self, e: &mut Engine, p: usize) {
        if self.stage != 2 || !self.is_trainable_member(p) {
            return;
        }
        let n = numel(e, p);
        if self.ipg_fill + n > REDUCE_BUCKET_ELEMENTS {
            self.reduce_bucket(e);
        }
        self.ipg_fill += n;
        if let Some(o) = &mut self.offload {
            o.add(p);
        }
        if let Some(g) = e.params[p].grad.take() {
            e.release(g);
        }
    }

    /// Stage 2's `reduce_ipg_grads`: reduce-scatter the bucket into `grads_in_partition`,
    /// allocated at the first reduction of the backward.
    fn reduce_bucket(&mut self, e: &mut Engine) {
        if let Some(o) = &mut self.offload {
            o.copy_out(e);
        } else if self.grads_in_partition.is_none() {
            let n: u64 = self
                .groups
                .iter()
                .flat_map(|g| g.in_partition.iter())
                .map(|&p| numel(e, p))
                .sum();
            self.grads_in_partition = Some(e.alloc(
                Name::top("zero", "grads_in_partition"),
                Shape::new(&[n]),
                self.dtype,
                Category::Gradients,
            ));
        }
        self.ipg_fill = 0;
    }

    pub(super) fn after_backward(&mut self, e: &mut Engine, boundary: bool) {
        match self.stage {
            2 => {
                // independent_gradient_partition_epilogue, every micro-step.
                if self.ipg_fill > 0 {
                    self.reduce_bucket(e);
                }
                let fresh = self.grads_in_partition.take();
                let added = match (self.averaged, fresh) {
                    (None, f) => {
                        self.averaged = f;
                        None
                    }
                    (Some(_), f) => f,
                };
                if let Some(b) = self.ipg.take() {
                    e.release(b);
                }
                if let Some(f) = added {
                    e.release(f);
                }
            }
            _ if boundary => self.stage1_reduce(e),
            _ => {}
        }
    }

    /// Stage 1 at the boundary: all-reduce in flattened chunks, then the epilogue's zero_grad.
    fn stage1_reduce(&mut self, e: &mut Engine) {
        let members: Vec<(usize, usize)> = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.params.iter().map(move |&p| (i, p)))
            .collect();
        let mut chunk: Vec<T> = Vec::new();
        let mut fill = 0u64;
        for &(_, p) in &members {
            let Some(g) = e.params[p].grad else { continue };
            let n = numel(e, p);
            if fill + n > REDUCE_BUCKET_ELEMENTS && !chunk.is_empty() {
                allreduce_flat(e, &std::mem::take(&mut chunk));
                fill = 0;
            }
            chunk.push(g);
            fill += n;
        }
        if !chunk.is_empty() {
            allreduce_flat(e, &chunk);
        }
        for (i, p) in members {
            let Some(g) = e.params[p].grad.take() else {
                continue;
            };
            if self.groups[i].in_partition.contains(&p) {
                self.kept.push((i, g));
            } else {
                e.release(g);
            }
        }
    }

    /// The optimizer step on each group's fp32 partition.
    pub(super) fn step(&mut self, e: &mut Engine) {
        let last = self.groups.len().saturating_sub(1);
        for i in 0..self.groups.len() {
            let shape = Shape::new(&[self.groups[i].partition]);
            if self.offload.is_some() {
                Offload::step(e, self.groups[i].partition);
                continue;
            }
            // flatten(averaged_gradients[i]).to(fp32): the flat copy is a temporary.
            let flat = (self.dtype != DType::F32).then(|| {
                e.alloc(
                    Name::top("zero", "grad_partition_flat"),
                    shape,
                    self.dtype,
                    Category::Gradients,
                )
            });
            let fp32 = e.alloc(
                Name::top("zero", "fp32_grad_partition"),
                shape,
                DType::F32,
                Category::Gradients,
            );
            if let Some(f) = flat {
                e.release(f);
            }
            // averaged_gradients[i] = None: the gradients behind those views go.
            let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.kept)
                .into_iter()
                .partition(|k| k.0 == i);
            self.kept = others;
            for (_, g) in mine {
                e.release(g);
            }
            if i == last {
                if let Some(a) = self.averaged.take() {
                    e.release(a);
                }
            }
            e.release(fp32);
        }
    }
}

/// `allreduce_bucket`: the chunk's gradients flattened (one flat per dtype), all-reduced,
/// copied back; the flat copies are temporaries.
fn allreduce_flat(e: &mut Engine, grads: &[T]) {
    let mut by_dtype: Vec<(DType, u64)> = Vec::new();
    for &g in grads {
        let r = e.record(g);
        let (dt, n) = (r.dtype, r.shape.numel().unwrap_or(0));
        match by_dtype.iter_mut().find(|(d, _)| *d == dt) {
            Some((_, total)) => *total += n,
            None => by_dtype.push((dt, n)),
        }
    }
    for (dtype, n) in by_dtype {
        let t = e.alloc(
            Name::top("zero", "allreduce_flat"),
            Shape::new(&[n]),
            dtype,
            Category::Communication,
        );
        e.release(t);
    }
}
