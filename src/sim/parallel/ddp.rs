//! torch.nn.parallel.DistributedDataParallel, as its constructor and Reducer allocate.
//!
//! `DDP(model)` first broadcasts rank 0's parameters (`_sync_module_states`:
//! `broadcast_coalesced` with 250 MiB buckets, at most two flattened buckets in flight), then
//! builds the Reducer: the trainable parameters are assigned to buckets
//! (`compute_bucket_assignment_by_size` with limits `[_DEFAULT_FIRST_BUCKET_BYTES = 1 MiB,
//! bucket_cap_mb = 25 MiB]`, in parameter order, then reversed so that the last layers'
//! gradients, ready first, reduce first), and `initialize_buckets` allocates each bucket's
//! flat `gradients` tensor (`at::empty({offset})`, the parameters' dtype). With the default
//! `gradient_as_bucket_view=False` the parameters' `.grad` stay separate tensors: autograd's
//! hooks copy each gradient into its bucket view, the bucket is all-reduced in place, and the
//! result is copied back — so the buckets together are a second copy of every gradient, alive
//! from construction to the end of the run. With `gradient_as_bucket_view=True`
//! (`ddp_bucket_view`) the `.grad` become views into the buckets instead: no second copy. ("Two 25 MiB buckets" understates it: 25 MiB is
//! each bucket's cap, and every bucket is allocated at construction, so their sum is the size
//! of all trainable parameters.) NCCL's own buffers are cudaMalloc'd outside PyTorch's
//! allocator and are not in these figures.

use crate::sim::dtype::DType;
use crate::sim::engine::Engine;
use crate::sim::timeline::{Category, Name, Shape};

/// `dist._DEFAULT_FIRST_BUCKET_BYTES`.
pub const FIRST_BUCKET_BYTES: u64 = 1 << 20;
/// `bucket_cap_mb = 25`.
pub const BUCKET_CAP_BYTES: u64 = 25 << 20;
/// `_sync_module_states(..., broadcast_bucket_size=int(250 * 1024 * 1024))`.
pub const BROADCAST_BUCKET_BYTES: u64 = 250 << 20;
/// `broadcast_coalesced` keeps at most two flattened buckets in flight.
const BROADCAST_IN_FLIGHT: usize = 2;

/// c10d's `compute_bucket_assignment_by_size`: tensors (bytes, dtype) in order; each dtype
/// fills its own bucket, which closes as soon as its size reaches the current limit; limits
/// are used in order, the last one repeating; leftovers close at the end. Buckets come out
/// ordered by their first tensor.
pub fn bucket_assignment(tensors: &[(u64, DType)], limits: &[u64]) -> Vec<Vec<usize>> {
    struct Open {
        dtype: DType,
        size: u64,
        limit: usize,
        members: Vec<usize>,
    }
    let mut open: Vec<Open> = Vec::new();
    let mut done: Vec<Vec<usize>> = Vec::new();
    for (i, &(bytes, dtype)) in tensors.iter().enumerate() {
        let slot = match open.iter().position(|o| o.dtype == dtype) {
            Some(s) => s,
            None => {
                open.push(Open {
                    dtype,
                    size: 0,
                    limit: 0,
                    members: Vec::new(),
                });
                open.len() - 1
            }
        };
        let o = &mut open[slot];
        o.members.push(i);
        o.size = o.size.saturating_add(bytes);
        let limit = limits[o.limit.min(limits.len() - 1)];
        if o.size >= limit {
            done.push(std::mem::take(&mut o.members));
            o.size = 0;
            o.limit += 1;
        }
    }
    done.extend(
        open.into_iter()
            .map(|o| o.members)
            .filter(|m| !m.is_empty()),
    );
    done.sort_by_key(|b| b[0]);
    done
}

/// `DDP(model, device_ids=[local_rank])`.
pub(super) fn construct(e: &mut Engine) {
    sync_module_states(e);
    let trainable: Vec<usize> = (0..e.params.len())
        .filter(|&p| e.params[p].requires_grad)
        .collect();
    let tensors: Vec<(u64, DType)> = trainable.iter().map(|&p| param_bytes(e, p)).collect();
    let buckets = bucket_assignment(&tensors, &[FIRST_BUCKET_BYTES, BUCKET_CAP_BYTES]);
    // The Reducer receives the buckets reversed and allocates them in that order.
    for bucket in buckets.iter().rev() {
        let (bytes, dtype) = flat(&tensors, bucket);
        e.alloc(
            Name::top("ddp", "grad_bucket"),
            Shape::new(&[bytes / dtype.size()]),
            dtype,
            Category::Communication,
        );
    }
}

/// gradient_as_bucket_view=True: the Reducer's hook copies a parameter's new `.grad` into its
/// bucket view and makes `.grad` that view — autograd's own gradient storage goes. Later
/// micro-steps accumulate into the view in place.
pub(super) fn grad_as_bucket_view(e: &mut Engine, p: usize) {
    let Some(g) = e.params[p].grad else { return };
    let r = *e.record(g);
    if r.bytes == 0 {
        return;
    }
    let view = e.alloc_bytes(r.name, r.shape, r.dtype, 0, Category::Gradients);
    e.params[p].grad = Some(view);
    e.release(g);
}

/// `_sync_module_states`: rank 0's parameters broadcast in flattened 250 MiB buckets, two in
/// flight; each flat copy is freed when its broadcast finishes.
fn sync_module_states(e: &mut Engine) {
    let tensors: Vec<(u64, DType)> = (0..e.params.len()).map(|p| param_bytes(e, p)).collect();
    let buckets = bucket_assignment(&tensors, &[BROADCAST_BUCKET_BYTES]);
    let mut in_flight = std::collections::VecDeque::new();
    for bucket in &buckets {
        if in_flight.len() >= BROADCAST_IN_FLIGHT {
            if let Some(t) = in_flight.pop_front() {
                e.release(t);
            }
        }
        let (bytes, dtype) = flat(&tensors, bucket);
        in_flight.push_back(e.alloc(
            Name::top("ddp", "broadcast_flat"),
            Shape::new(&[bytes / dtype.size()]),
            dtype,
            Category::Communication,
        ));
    }
    for t in in_flight {
        e.release(t);
    }
}

fn param_bytes(e: &Engine, p: usize) -> (u64, DType) {
    let r = e.record(e.params[p].t);
    (r.bytes, r.dtype)
}

/// A bucket's flat tensor: the sum of its members' bytes, in their (common) dtype.
fn flat(tensors: &[(u64, DType)], bucket: &[usize]) -> (u64, DType) {
    let bytes = bucket.iter().map(|&i| tensors[i].0).sum();
    (bytes, tensors[bucket[0]].1)
}
