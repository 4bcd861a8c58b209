//! Causes from the facts, each with its arithmetic, ranked by how much of the failure it
//! explains. Without a config only what the numbers show is claimed; with one, the culprit and
//! the simulated live set sharpen it.

use super::types::{Cause, CauseKind, Culprit, Facts, Fix, Format, Phase};
use crate::units::{human, GIB, MIB};

/// Everything the ranking looks at.
pub struct Evidence<'a> {
    pub facts: &'a Facts,
    pub format: Format,
    pub phase: Phase,
    /// Figures too large for u64: (fact, as printed).
    pub bogus: &'a [(String, String)],
    pub culprit: Option<&'a Culprit>,
    /// An equal-sized tensor already live when the culprit was requested.
    pub live_twin: Option<&'a str>,
    pub simulated_live: Option<u64>,
    pub ctx_fixes: &'a [Fix],
    /// The run's own arithmetic behind the failure, from the simulator (vLLM's budget).
    pub explanation: Option<&'a str>,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn field_name(f: &str) -> String {
    match f {
        "process_in_use_bytes" => "this process's memory in use".into(),
        "allocated_by_framework_bytes" => "memory allocated by the framework".into(),
        "total_capacity_bytes" => "the total capacity".into(),
        other => other.trim_end_matches("_bytes").replace('_', " "),
    }
}

/// The figures every cause reads, derived once from the facts.
struct Figures {
    tried: Option<u64>,
    total: Option<u64>,
    free: u64,
    unalloc: Option<u64>,
    outside: Option<u64>,
    alloc: Option<u64>,
}

/// Causes found so far: (score, kind, evidence).
type Found = Vec<(u32, CauseKind, String)>;

/// The causes, most likely first. Each kind of cause is one function below, run in this
/// order; equal scores keep it.
pub fn rank(e: &Evidence<'_>) -> Vec<Cause> {
    let f = e.facts;
    let n = Figures {
        tried: f.tried_to_allocate_bytes,
        total: f.total_capacity_bytes,
        free: f.free_bytes.unwrap_or(0),
        unalloc: f.unallocated_in_cache_bytes(),
        outside: f.outside_process_bytes(),
        alloc: f.allocated_by_framework_bytes,
    };
    let mut out: Found = Vec::new();
    for cause in [
        oversized_tensor,
        other_processes,
        fragmentation,
        private_pools,
        unexplained_memory,
        model_too_large,
        xla_buffers,
        bogus_figures,
    ] {
        cause(e, &n, &mut out);
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.0));
    out.into_iter()
        .map(|(_, kind, evidence)| Cause { kind, evidence })
        .collect()
}

/// A tensor too large for the card (or for what was left of it).
fn oversized_tensor(e: &Evidence<'_>, n: &Figures, out: &mut Found) {
    let (tried, total, free, unalloc, outside, alloc) =
        (n.tried, n.total, n.free, n.unalloc, n.outside, n.alloc);
    let mut push = |score: u32, kind, ev: String| out.push((score, kind, ev));
    if let Some(t) = tried {
        let mut ev = match total {
            Some(cap) if t > cap => format!(
                "the single request of {} is larger than the whole card ({}): no change to the \
                 rest of the run makes room for it — this one op has to get smaller",
                human(t),
                human(cap)
            ),
            Some(cap) => format!(
                "one request of {} is {:.0}% of the card's {}",
                human(t),
                pct(t, cap),
                human(cap)
            ),
            None => format!("the failed request alone is {}", human(t)),
        };
        if let Some(c) = e.culprit {
            ev.push_str(&format!(
                "; it is {} {} ({})",
                c.name,
                super::culprit::shape_text(&c.shape, &c.dtype),
                human(c.bytes)
            ));
        }
        if let (Some(twin), Some(a)) = (e.live_twin, alloc) {
            ev.push_str(&format!(
                "; a tensor of that size ({twin}) is already live inside the {} allocated, so \
                 this request is the second of its size at this point",
                human(a)
            ));
        }
        let everything = free
            .saturating_add(unalloc.unwrap_or(0))
            .saturating_add(outside.unwrap_or(0));
        if total.is_some_and(|c| t <= c) && outside.is_some() && t > everything {
            ev.push_str(&format!(
                "; even with every other user of the card gone it would not fit ({} free + {} \
                 cached + {} outside this process = {})",
                human(free),
                human(unalloc.unwrap_or(0)),
                human(outside.unwrap_or(0)),
                human(everything)
            ));
        }
        let named_and_big = e.culprit.is_some()
            && (t >= 256 * MIB || total.is_some_and(|c| t.saturating_mul(20) >= c));
        let score = match total {
            Some(cap) if t > cap => 100,
            Some(cap) if t.saturating_mul(5) >= cap => 60 + (pct(t, cap) * 0.3) as u32,
            _ if named_and_big || (total.is_none() && t >= GIB) => 50,
            _ => 0,
        };
        if score > 0 {
            push(score, CauseKind::OversizedTensor, ev);
        }
    }
}

/// Memory held outside this process (other processes, JAX's preallocation).
fn other_processes(e: &Evidence<'_>, n: &Figures, out: &mut Found) {
    let (f, tried, total, free, unalloc, outside) =
        (e.facts, n.tried, n.total, n.free, n.unalloc, n.outside);
    let mut push = |score: u32, kind, ev: String| out.push((score, kind, ev));
    if let (Some(o), Some(cap)) = (outside, total) {
        if o >= (256 * MIB).max(cap / 50) {
            let mut ev = format!(
                "{} of the card is held outside this process: total {} − free {} − this \
                 process {} (other processes, the display, or another rank's CUDA context)",
                human(o),
                human(cap),
                human(free),
                human(f.process_in_use_bytes.unwrap_or(0))
            );
            for p in &f.other_processes {
                let b = p.bytes.map_or_else(|| "an unreadable amount".into(), human);
                ev.push_str(&format!("; process {} holds {b}", p.pid));
                if p.bytes.is_some_and(|b| (200 * MIB..=2 * GIB).contains(&b)) {
                    ev.push_str(" — the size of a bare CUDA context: typically another rank that touched this GPU before calling torch.cuda.set_device(local_rank)");
                }
            }
            let score = match tried {
                Some(t) if free.saturating_add(unalloc.unwrap_or(0)).saturating_add(o) >= t => {
                    ev.push_str(&format!(
                        "; without it the request would have fitted ({} + {} ≥ {})",
                        human(free),
                        human(o),
                        human(t)
                    ));
                    90
                }
                Some(t) => {
                    ev.push_str(&format!(
                        "; freeing it alone would still leave {} for the {} request",
                        human(free.saturating_add(unalloc.unwrap_or(0)).saturating_add(o)),
                        human(t)
                    ));
                    45
                }
                None => 50,
            };
            push(score, CauseKind::OtherProcesses, ev);
        }
    } else if !f.other_processes.is_empty() {
        let list: Vec<String> = f
            .other_processes
            .iter()
            .map(|p| format!("{} ({})", p.pid, p.bytes.map_or_else(|| "?".into(), human)))
            .collect();
        push(
            55,
            CauseKind::OtherProcesses,
            format!(
                "the log lists other processes on this GPU: {}",
                list.join(", ")
            ),
        );
    }
    if e.format == Format::Jax && tried.is_some_and(|t| t < 64 * MIB) {
        push(
            70,
            CauseKind::OtherProcesses,
            format!(
            "a request of only {} failed: the memory was already taken — JAX preallocates 75% of \
             the GPU when it starts, so a second JAX, TensorFlow or PyTorch process on this GPU \
             (or this process's own preallocated pool) leaves nothing for it",
            human(tried.unwrap_or(0))
        ),
        );
    }
}

/// Fragmentation: the cache holds the memory, but not in one piece.
fn fragmentation(e: &Evidence<'_>, n: &Figures, out: &mut Found) {
    let (f, tried, total, free, unalloc) = (e.facts, n.tried, n.total, n.free, n.unalloc);
    let mut push = |score: u32, kind, ev: String| out.push((score, kind, ev));
    if let (Some(t), Some(u)) = (tried, unalloc) {
        let derived = if f.reserved_unallocated_bytes.is_none() {
            " (reserved in total − allocated)"
        } else {
            ""
        };
        // Fragmentation explains the failure; it only matters if what it hides is a real
        // share of the card (otherwise the next request fails anyway).
        let sizeable = u >= GIB || total.is_some_and(|c| u.saturating_mul(50) >= c);
        if u >= t {
            push(
                if sizeable { 85 } else { 50 },
                CauseKind::Fragmentation,
                format!(
                "{} is reserved but unallocated{derived}, at least the {} requested: the cache \
                 holds enough free memory, but in blocks too small or split for one {} piece",
                human(u), human(t), human(t)),
            );
        } else if free < t && free.saturating_add(u) >= t {
            push(
                if sizeable { 80 } else { 50 },
                CauseKind::Fragmentation,
                format!(
                "{} free + {} reserved but unallocated{derived} ≥ the {} request: enough memory \
                 in total, but not in one contiguous piece",
                human(free), human(u), human(t)),
            );
        } else if u >= 256 * MIB && u.saturating_mul(2) >= t {
            push(45, CauseKind::Fragmentation, format!(
                "{} is reserved but unallocated{derived}, {:.0}% of the {} request: a fragmented cache",
                human(u), pct(u, t), human(t)));
        }
    }
    if let (Some(t), Some(_)) = (tried, f.free_bytes) {
        let pytorch = matches!(e.format, Format::Pytorch1 | Format::Pytorch2 | Format::Vllm);
        if free >= t && pytorch {
            push(40, CauseKind::Fragmentation, format!(
                "the driver reported {} free, more than the {} request, yet cudaMalloc failed: \
                 the free memory itself is fragmented or held back by the driver (WDDM, the display)",
                human(free), human(t)));
        }
    }
}

/// CUDA-graph private pools.
fn private_pools(e: &Evidence<'_>, n: &Figures, out: &mut Found) {
    let (f, tried, alloc) = (e.facts, n.tried, n.alloc);
    let mut push = |score: u32, kind, ev: String| out.push((score, kind, ev));
    if let (Some(p), Some(a)) = (f.private_pools_bytes, alloc) {
        if tried.is_some_and(|t| p >= t) || p.saturating_mul(4) >= a {
            push(
                80,
                CauseKind::PrivatePools,
                format!(
                    "CUDA-graph private pools hold {} of the {} allocated ({:.0}%): memory the \
                 captured graphs keep for replay, unavailable to any other tensor",
                    human(p),
                    human(a),
                    pct(p, a)
                ),
            );
        }
    }
}

/// The config's simulated live set against what PyTorch holds, and memory outside the allocator.
fn unexplained_memory(e: &Evidence<'_>, n: &Figures, out: &mut Found) {
    let (f, alloc) = (e.facts, n.alloc);
    let mut push = |score: u32, kind, ev: String| out.push((score, kind, ev));
    if let (Some(sim), Some(a)) = (e.simulated_live, alloc) {
        if a > sim.saturating_add((512 * MIB).max(sim / 10)) {
            push(
                85,
                CauseKind::UnexplainedMemory,
                format!(
                "PyTorch had {} allocated where the config predicts {} live at {}: {} more than \
                 the config explains — leaked references (a loss kept with its graph), eval \
                 without torch.no_grad, a checkpoint loaded to the GPU (torch.load without \
                 map_location), or optimizer state not freed",
                human(a), human(sim), e.phase, human(a - sim)),
            );
        }
    }
    if let Some(nf) = f.non_framework_in_process_bytes() {
        if nf >= GIB {
            push(
                35,
                CauseKind::UnexplainedMemory,
                format!(
                "this process holds {} outside PyTorch's allocator ({} in use − {} allocated − \
                 cached): more than a CUDA context (~0.3–0.6 GiB) — NCCL buffers, cuDNN/cuBLAS \
                 workspaces, or a library allocating directly (bitsandbytes, TensorRT, CuPy)",
                human(nf), human(f.process_in_use_bytes.unwrap_or(0)), human(alloc.unwrap_or(0))),
            );
        }
    }
}

/// A model that does not fit (the searched configurations, vLLM's cache, loading, a full card).
fn model_too_large(e: &Evidence<'_>, n: &Figures, out: &mut Found) {
    let (tried, total, free, unalloc, alloc) = (n.tried, n.total, n.free, n.unalloc, n.alloc);
    let mut push = |score: u32, kind, ev: String| out.push((score, kind, ev));
    let full =
        matches!((alloc, total), (Some(a), Some(c)) if a.saturating_mul(10) >= c.saturating_mul(9));

    // A model that does not fit.
    if !e.ctx_fixes.is_empty() && e.ctx_fixes.iter().all(|x| x.fits == Some(false)) {
        push(
            95,
            CauseKind::ModelTooLarge,
            format!(
                "none of the {} configurations searched fits this card",
                e.ctx_fixes.len()
            ),
        );
    } else if e.format == Format::Vllm && e.phase == Phase::KvCache {
        push(
            80,
            CauseKind::ModelTooLarge,
            e.explanation.map_or_else(
                || {
                    "vLLM had no memory left for KV-cache blocks once the weights and its \
                     profiling run took their share of gpu_memory_utilization × the card: the \
                     model at this max_model_len does not fit that budget. \
                     gpu_memory_utilization is vLLM's whole share of the card (weights, \
                     activations and cache), not the cache's: lowering it to share the GPU \
                     leaves the cache less, which is why the message asks to increase it \
                     (give --model/--config and --gpu for the numbers)"
                        .to_string()
                },
                str::to_string,
            ),
        );
    } else if e.phase == Phase::ModelLoad {
        let held = match (alloc, total) {
            (Some(a), Some(c)) => format!(" ({} of {} already allocated)", human(a), human(c)),
            _ => String::new(),
        };
        push(
            75,
            CauseKind::ModelTooLarge,
            format!(
                "the failure came while loading weights{held}: the weights alone do not fit this \
             device as placed — quantize, shard them (FSDP/ZeRO-3, device_map across GPUs, \
             fewer offloaded layers) or use a larger card"
            ),
        );
    } else if let (Some(a), Some(c), Some(t), None) = (alloc, total, tried, e.simulated_live) {
        let left = free.saturating_add(unalloc.unwrap_or(0));
        // A full card is the story even when fragmentation was the last straw.
        if full || t > left {
            push(
                if full { 60 } else { 45 },
                CauseKind::UnexplainedMemory,
                format!(
                    "the framework holds {} ({:.0}% of the card), leaving {} (free + cached) \
                     for the {} request: the run's working set at this phase is larger than \
                     the card; without the run's config vramplan cannot say which tensors \
                     those are (pass --config)",
                    human(a),
                    pct(a, c),
                    human(left),
                    human(t)
                ),
            );
        }
    }
}

/// XLA states what the whole compiled computation needs at once.
fn xla_buffers(e: &Evidence<'_>, _: &Figures, out: &mut Found) {
    let f = e.facts;
    let mut push = |score: u32, kind, ev: String| out.push((score, kind, ev));
    if let Some(&total_xla) = f.extra.get("buffer_assignment_total_bytes") {
        if total_xla >= GIB {
            let part = |k: &str, label: &str| {
                f.extra
                    .get(k)
                    .map(|b| format!(", {label} {}", human(*b)))
                    .unwrap_or_default()
            };
            push(
                55,
                CauseKind::ModelTooLarge,
                format!(
                    "XLA's buffer assignment for the failing computation totals {}{}{}{}: the \
                     compiled step needs that much at once, more than the device had left",
                    human(total_xla),
                    part("parameter_allocation_bytes", "parameters"),
                    part("maybe_live_out_allocation_bytes", "live-out"),
                    part("preallocated_temp_allocation_bytes", "temporaries"),
                ),
            );
        }
    }
}

/// Figures that cannot be device memory.
fn bogus_figures(e: &Evidence<'_>, n: &Figures, out: &mut Found) {
    let (total, alloc) = (n.total, n.alloc);
    let mut push = |score: u32, kind, ev: String| out.push((score, kind, ev));
    for (field, printed) in e.bogus {
        push(30, CauseKind::BogusFigure, format!(
            "the log prints {} as {printed}, {}: impossible — an unsigned underflow or a driver \
             query answering \"not available\" (typical on Windows); the figure is ignored",
            field_name(field),
            if printed.starts_with("17179869184") { "exactly 2^64 bytes" } else { "more than 2^64 bytes" }));
    }
    if let (Some(a), Some(c)) = (alloc, total) {
        if a > c.saturating_add(GIB / 100) {
            push(
                50,
                CauseKind::BogusFigure,
                format!(
                    "{} allocated on a {} card is more than the card has: a Windows (WDDM) driver \
                 spilling into shared system RAM, or a misreported capacity — the headroom \
                 arithmetic cannot be trusted",
                    human(a),
                    human(c)
                ),
            );
        }
    }
}
