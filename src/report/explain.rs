//! `vramplan explain`: the text a person needs to believe a number — which op makes a tensor,
//! why it has that dtype, who keeps it alive, and when it is born and freed in the run.

use super::check::lifetime;
use crate::budget::GpuProfile;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::sim::replay::live_blocks_at;
use crate::sim::runtime::RuntimeKind;
use crate::sim::timeline::{Residency, Shape};
use crate::sim::Category;
use crate::units::human;
use serde::Serialize;
use std::fmt::Write;

/// What each kind of tensor is, by the end of its name. `{dt}` is its dtype.
const TENSORS: &[(&str, &str)] = &[
    ("lm_head.logits", "lm_head applied to the final norm's output (its weight is the token embedding's where the model ties them: nanoGPT's GPT, Llama 3.2, Gemma): a matmul, which CUDA autocast runs in {dt}; shape (B, T, V) — under torch.compile, inductor's 2-D (B·T, V) matmul buffer, viewed as (B, T, V). train.py keeps `logits` referenced until the next forward returns, so during a forward two of them can be alive."),
    ("loss.log_probs", "F.cross_entropy on logits.view(-1, V): it calls log_softmax with the logits' own dtype ({dt}), and log_softmax saves its output for the backward."),
    ("loss.log_probs_fp32", "nll_loss is on autocast's fp32 list, so the half-precision log-probs are copied to fp32 (B·T × V × 4 bytes); nll_loss saves that copy for the backward. It is usually the largest tensor of a small GPT."),
    ("loss.nll.grad", "nll_loss_backward's output: the gradient of the fp32 log-probs, a full (B·T, V) fp32 tensor."),
    ("loss.log_probs.grad", "the log-probs' gradient cast back from fp32 to the log-probs' dtype (the backward of autocast's copy)."),
    ("loss.log_softmax.grad", "log_softmax's backward: the logits' gradient, (B·T, V) in the logits' dtype."),
    ("mlp.c_fc.out", "the MLP's first Linear (C → 4C): a matmul in {dt} under autocast; GELU saves it for its backward."),
    ("mlp.gelu", "GELU of c_fc's output, in its input's dtype ({dt}); mlp.c_proj saves it as its matmul input."),
    ("attn.c_attn.out", "the fused q, k, v projection (C → 3C) in {dt}; q, k and v are views of it, so attention keeps it whole while it saves q, k, v."),
    ("attn.sdpa.out", "scaled_dot_product_attention's output (B, nh, T, hs) in {dt}; the flash kernel saves it for its backward."),
    ("attn.sdpa.logsumexp", "the attention kernel's fp32 logsumexp per row (B, nh, T), saved for its backward."),
    ("input_cast", "autocast's cast of a Linear's fp32 input to {dt}; the matmul saves it to compute the weight's gradient."),
    ("weight_cast", "autocast's cast of an fp32 weight to {dt}. Autocast caches it until the autocast region (the forward) ends, and the matmul saves it for the input's gradient."),
    ("bias_cast", "autocast's cached {dt} cast of a bias; nothing saves it, so it goes when the autocast region ends."),
    (".mean", "layer_norm's per-row mean (B, T, 1), fp32, saved for its backward."),
    (".rstd", "layer_norm's per-row reciprocal standard deviation (B, T, 1), fp32, saved for its backward."),
    ("ln_1.out", "layer_norm output, fp32 (autocast keeps layer_norm in fp32); the next Linear casts it to the half dtype."),
    ("ln_2.out", "layer_norm output, fp32 (autocast keeps layer_norm in fp32); the next Linear casts it to the half dtype."),
    ("ln_f.out", "the final layer_norm output, fp32; lm_head casts it for its matmul."),
    ("resid_attn", "the residual stream after attention: fp32 + {dt} promotes to fp32; the next layer_norm saves it."),
    ("resid_mlp", "the residual stream after the MLP, fp32; the next block's layer_norm saves it."),
    (".mask", "dropout's bool mask (one byte per element), saved for its backward."),
    ("adam.exp_avg", "AdamW's first moment, fp32, created at the first optimizer step and kept for the rest of the run."),
    ("adam.exp_avg_sq", "AdamW's second moment, fp32, created at the first optimizer step and kept for the rest of the run."),
    ("weight.grad", "the weight's gradient as the backward's matmul computes it, in {dt}. Under autocast it is the gradient of the weight's half-precision cast: the cast's backward copies it to fp32 as `<module>.grad`, and this one is freed. Without autocast it is the .grad itself, kept until zero_grad(set_to_none=True)."),
    ("micro_step_grad", "a later micro-step's gradient of a parameter: AccumulateGrad adds it into the parameter's .grad (the first micro-step's, kept) and frees it."),
    ("workspace(python thread)", "cuBLAS's workspace for the thread that runs the forward's matmuls, allocated through PyTorch's caching allocator at the first matmul and kept."),
    ("workspace(autograd thread)", "cuBLAS's workspace for autograd's backward thread, allocated at the first backward matmul and kept."),
    ("wte.weight", "the token embedding, fp32 (V × C): the master weight, shared with lm_head."),
    ("weight_dequant", "bitsandbytes dequantizes the whole quantized weight to {dt} (out × in) for each matmul — in the forward, and again in the backward for the input's gradient — and frees it right after: one such copy is alive at a time."),
    ("absmax_dequant", "double quantization: the uint8 absmax constants dequantized to fp32 before the weight is, freed when dequantize returns."),
    ("weight.absmax", "the 4-bit weight's absmax per block of 64 weights, quantized again to uint8 (double quantization); with its fp32 absmax2 per 256 blocks and a 0-dim offset."),
    ("weight.staged", "loading a quantized model: each weight comes to the device in the checkpoint's dtype, is quantized, and this copy is freed — the largest one can stay as a cached segment."),
    ("out_input_dtype", "bnb's Linear4bit casts its result back to the input's dtype ({dt}): with prepare_model_for_kbit_training the stream is fp32."),
    ("out_clone", "PEFT's LoRA layer over a 4-bit Linear clones the base result (a defensive copy) before adding the adapters' output."),
    ("ddp.grad_bucket", "DistributedDataParallel's flat gradient bucket (bucket_cap_mb = 25, the first one 1 MiB), allocated for every bucket when DDP wraps the model: gradients are copied in, all-reduced and copied back, so the buckets together are a second copy of every gradient, kept for the whole run."),
    ("ddp.broadcast_flat", "DDP's constructor broadcasting rank 0's parameters: a flattened copy of up to 250 MiB of them, two in flight, freed as each broadcast finishes."),
    ("flat_param.bit16_group", "DeepSpeed ZeRO's flattened {dt} copy of one optimizer group's parameters (padded to 2 × world_size elements); the module's parameters are views into it."),
    ("zero.fp32_partition", "ZeRO's fp32 master copy of this rank's partition of a parameter group, created at deepspeed.initialize."),
    ("zero.ipg_buffer", "ZeRO-2's contiguous reduce bucket: reduce_bucket_size (5e8) elements of {dt}, allocated by each engine.backward and released by its epilogue, whatever the model's size."),
    ("zero.grads_in_partition", "ZeRO-2's reduce-scattered gradients: the whole numel of every parameter that overlaps this rank's partition, in {dt}."),
    ("flat_param.fsdp_shard", "FSDP's local shard of one unit's flat parameter, fp32: the unit's numel padded to a multiple of world_size, over world_size."),
    ("fsdp.gathered_params", "an FSDP unit (a transformer block, or the root) all-gathered in {dt} for its forward or backward; FULL_SHARD frees it after the unit's forward, and the backward gathers it again with the next unit prefetched."),
    ("fsdp.unsharded_grad", "the gradient of an FSDP unit's flat parameter, full size, before its reduce-scatter into this rank's shard."),
    ("zero.ipg_bucket_flat_buffer", "ZeRO-3's reduce bucket: reduce_bucket_size (5e8) elements of {dt}, allocated at initialisation and kept."),
];

const CATEGORIES: &[(Category, &str)] = &[
    (Category::Parameters, "the fp32 master weights, on the device from model.to(device) to the end."),
    (Category::Gradients, "the parameters' .grad, created in the first backward (AccumulateGrad keeps the first gradient, later micro-steps add into it) and freed by zero_grad(set_to_none=True)."),
    (Category::Optimizer, "the optimizer's state, created lazily at the first step and kept: AdamW holds two fp32 moments per parameter."),
    (Category::Activations, "what the forward saves for the backward (matmul inputs, layer_norm inputs and statistics, attention outputs, dropout masks) and the backward's transient gradients."),
    (Category::Logits, "the loss chain: logits, their log-probs, the fp32 copy nll_loss saves, and their gradients — B·T·V-sized tensors, the largest of a small GPT."),
    (Category::AutocastCopies, "autocast's cache of half-precision weight copies, kept until the forward's autocast region ends."),
    (Category::Workspace, "cuBLAS/cuBLASLt workspaces (one set per thread that runs matmuls) and attention scratch."),
    (Category::Other, "input batches (int64), positions, and scalars such as norms and the loss."),
    (Category::KvCache, "inference: every layer's keys and values for batch_size sequences of block_size tokens (2 × layers × kv_heads × head_dim × tokens × batch × bytes), allocated once before the first forward and written in place by each forward."),
    (Category::Communication, "multi-GPU buffers in PyTorch's allocator: DDP's flat gradient buckets (a second copy of every gradient), DeepSpeed's reduce bucket, FSDP/ZeRO-3's all-gathered parameters and unsharded gradients."),
];

/// What a tensor is: the text for the longest name ending that matches, else its category's
/// (a parameter, a .grad, optimizer state: every row `check` prints gets a real answer).
fn describe(name: &str, dtype: &str, category: Category) -> String {
    TENSORS
        .iter()
        .filter(|(suffix, _)| name.ends_with(suffix))
        .max_by_key(|(suffix, _)| suffix.len())
        .map(|(_, text)| text.replace("{dt}", dtype))
        .or_else(|| {
            CATEGORIES
                .iter()
                .find(|(c, _)| *c == category)
                .map(|(c, text)| format!("one of the {}, in {dtype}: {text}", c.label()))
        })
        .unwrap_or_else(|| format!("a tensor of {name}'s op, in {dtype}"))
}

/// One tensor's or one category's explanation: what `explain` prints, and its `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// "tensor" or "category".
    pub kind: &'static str,
    /// The tensor's name as `check` prints it, or the category's key.
    pub name: String,
    /// Which op makes it and why that dtype (a tensor), or what the category holds.
    pub description: String,
    /// The tensor's category key (a category: its own key).
    pub category: &'static str,
    /// A tensor's shape and dtype; null for a category.
    pub shape: Option<Vec<u64>>,
    pub dtype: Option<&'static str>,
    /// A tensor's bytes, or the category's bytes alive at the peak.
    pub bytes: u64,
    /// The phase of the run's peak.
    pub peak_phase: &'static str,
    /// A tensor: how many instances are alive at the peak; a category: how many tensors.
    pub alive_at_peak: usize,
    /// A tensor: each distinct lifetime of its instances with how many share it; [] for a
    /// category.
    pub lifetimes: Vec<Lifetime>,
    /// A category: its largest tensors alive at the peak (8 at most); [] for a tensor.
    pub largest: Vec<Row>,
    /// A tensor under the pytorch-compile runtime: whether the compiled graph keeps it as a
    /// buffer, writes it only as a matmul's operand, or fuses it away; null otherwise.
    pub compiled: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lifetime {
    pub count: usize,
    pub born_in: &'static str,
    /// null: alive at the end of the run.
    pub freed_in: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: &'static str,
    pub bytes: u64,
}

/// Explain a tensor (by its full name) or a category (by key or label) of this run.
pub fn explanation(what: &str, cfg: &TrainConfig, gpu: Option<&GpuProfile>) -> Result<Explanation> {
    let sim = crate::run::run(cfg, gpu)?;
    let tl = &sim.timeline;
    let peak_phase = sim.profile.peak_phase.key();
    let live = live_blocks_at(tl, &sim.profile, sim.profile.peak_event);
    if let Some(&(cat, text)) = CATEGORIES
        .iter()
        .find(|(c, _)| c.key() == what || c.label() == what)
    {
        return Ok(category_explanation(tl, (cat, text), live, peak_phase));
    }
    let ids: Vec<u32> = (0..tl.tensors.len() as u32)
        .filter(|&t| tl.tensors[t as usize].name.to_string() == what)
        .collect();
    let Some(&first) = ids.first() else {
        return Err(not_found(what, tl));
    };
    let r = &tl.tensors[first as usize];
    let compiled =
        (sim.runtime.kind == RuntimeKind::PytorchCompile).then(|| compiled_fate(tl, &ids));
    let lifetimes = lifetimes(tl, &ids);
    Ok(Explanation {
        kind: "tensor",
        name: what.to_string(),
        description: describe(what, r.dtype.short(), r.category),
        category: r.category.key(),
        shape: Some(r.shape.dims().to_vec()),
        dtype: Some(r.dtype.short()),
        bytes: r.bytes,
        peak_phase,
        alive_at_peak: live.iter().filter(|(t, _)| ids.contains(t)).count(),
        lifetimes,
        largest: Vec::new(),
        compiled,
    })
}

/// A category at the peak: its bytes, how many blocks, the largest eight.
fn category_explanation(
    tl: &crate::sim::Timeline,
    (cat, text): (Category, &str),
    live: Vec<(u32, u64)>,
    peak_phase: &'static str,
) -> Explanation {
    let mut items: Vec<(u32, u64)> = live
        .into_iter()
        .filter(|(t, _)| tl.tensors[*t as usize].category == cat)
        .collect();
    items.sort_by_key(|x| std::cmp::Reverse(x.1));
    let largest = items
        .iter()
        .take(8)
        .map(|&(t, b)| {
            let r = &tl.tensors[t as usize];
            Row {
                name: r.name.to_string(),
                shape: r.shape.dims().to_vec(),
                dtype: r.dtype.short(),
                bytes: b,
            }
        })
        .collect();
    Explanation {
        kind: "category",
        name: cat.key().to_string(),
        description: format!("{}: {text}", cat.label()),
        category: cat.key(),
        shape: None,
        dtype: None,
        bytes: items.iter().map(|x| x.1).sum(),
        peak_phase,
        alive_at_peak: items.len(),
        lifetimes: Vec::new(),
        largest,
        compiled: None,
    }
}

/// Each instance's birth and death phases, counted by distinct lifetime in order (a fused
/// value has none: it never occupies memory).
fn lifetimes(tl: &crate::sim::Timeline, ids: &[u32]) -> Vec<Lifetime> {
    let mut lifetimes: Vec<Lifetime> = Vec::new();
    for &t in ids
        .iter()
        .filter(|&&t| tl.tensors[t as usize].residency != Residency::Fused)
    {
        let (born, died) = lifetime(tl, t);
        let (born_in, freed_in) = (
            tl.events[born].phase.key(),
            died.map(|d| tl.events[d].phase.key()),
        );
        match lifetimes
            .iter_mut()
            .find(|l| l.born_in == born_in && l.freed_in == freed_in)
        {
            Some(l) => l.count += 1,
            None => lifetimes.push(Lifetime {
                count: 1,
                born_in,
                freed_in,
            }),
        }
    }
    lifetimes
}

/// What torch.compile does with the instances `ids` of one tensor (fusion.rs).
fn compiled_fate(tl: &crate::sim::Timeline, ids: &[u32]) -> &'static str {
    let has = |r: Residency| ids.iter().any(|&t| tl.tensors[t as usize].residency == r);
    match (has(Residency::Buffer), has(Residency::Operand), has(Residency::Fused)) {
        (false, false, true) => {
            "fused away: inductor computes it inside the kernel that consumes it, so it never \
             occupies memory"
        }
        (false, true, _) => {
            "written to a buffer only as a matmul's operand; freed after the matmul in the \
             eval graph, saved for the backward in training (the partitioner does not \
             recompute what a matmul must read)"
        }
        (true, _, true) => {
            "kept as a buffer where the graph saves or returns it, fused away where it does not"
        }
        _ => "kept: a buffer of the compiled graph (a kernel's output, saved for the backward or returned)",
    }
}

/// No tensor or category of that name: the names that contain it (or that it contains).
fn not_found(what: &str, tl: &crate::sim::Timeline) -> Error {
    let mut names: Vec<String> = tl.tensors.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    names.dedup();
    let close: Vec<&str> = names
        .iter()
        .filter(|n| n.contains(what) || what.contains(n.as_str()))
        .take(5)
        .map(|s| s.as_str())
        .collect();
    Error::new(format!(
        "no tensor or category named `{what}` in this run{}",
        if close.is_empty() {
            " (categories: parameters, gradients, optimizer, activations, logits, autocast_copies, workspace, other, communication)".to_string()
        } else {
            format!(": did you mean {}?", close.join(", "))
        }
    ))
}

/// The text `explain` prints for an explanation.
pub fn render(x: &Explanation) -> String {
    let mut out = String::new();
    if x.kind == "category" {
        let _ = writeln!(out, "{}", x.description);
        let _ = writeln!(
            out,
            "At the run's peak (phase `{}`): {} in {} tensors.",
            x.peak_phase,
            human(x.bytes),
            x.alive_at_peak
        );
        for r in &x.largest {
            let _ = writeln!(
                out,
                "  {:<40} {:<20} {:>6} {:>12}",
                r.name,
                Shape::new(&r.shape).to_string(),
                r.dtype,
                human(r.bytes)
            );
        }
        return out;
    }
    let shape = Shape::new(x.shape.as_deref().unwrap_or(&[]));
    let _ = writeln!(
        out,
        "{} {} {} = {}",
        x.name,
        shape,
        x.dtype.unwrap_or("?"),
        human(x.bytes)
    );
    let _ = writeln!(out, "{}", x.description);
    let label = Category::ALL
        .iter()
        .find(|c| c.key() == x.category)
        .map_or(x.category, |c| c.label());
    let _ = writeln!(out, "Category: {label}.");
    if let Some(fate) = x.compiled {
        let _ = writeln!(out, "Under torch.compile: {fate}.");
    }
    let total: usize = x.lifetimes.iter().map(|l| l.count).sum();
    if total == 0 {
        let _ = writeln!(out, "Never allocated in the simulated run.");
    } else {
        let _ = writeln!(
            out,
            "Allocated {total} times in the simulated run (2 evals of 2 iterations, 2 steps):"
        );
    }
    for l in &x.lifetimes {
        let _ = writeln!(
            out,
            "  {} x born in {}, {}",
            l.count,
            l.born_in,
            l.freed_in
                .map_or("alive at the end of the run".to_string(), |d| format!(
                    "freed in {d}"
                ))
        );
    }
    let _ = writeln!(
        out,
        "At the run's peak (phase `{}`): {} alive.",
        x.peak_phase, x.alive_at_peak
    );
    out
}
