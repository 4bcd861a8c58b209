//! Fixes that follow from the causes alone, without a config: the allocator setting when
//! fragmentation is the evidence, freeing the other process, a smaller eval batch, the
//! runtime's own knobs. `suggest`'s fixes (with predicted peaks) come first when given.

use super::types::{Cause, CauseKind, Facts, Fix, Format, Phase};
use crate::units::human;

fn fix(change: impl Into<String>, command: Option<&str>) -> Fix {
    Fix {
        change: change.into(),
        command: command.map(str::to_string),
        code_changes: Vec::new(),
        predicted_peak_bytes: None,
        fits: None,
    }
}

/// Generic fixes for the top causes, in the causes' order.
pub fn generic(causes: &[Cause], facts: &Facts, format: Format, phase: Phase) -> Vec<Fix> {
    let mut out: Vec<Fix> = Vec::new();
    for c in causes.iter().take(4) {
        if let Some(f) = cause_fix(c, facts, format) {
            if !out.iter().any(|x| x.change == f.change) {
                out.push(f);
            }
        }
    }
    let model_too_large = causes
        .iter()
        .take(3)
        .any(|c| c.kind == CauseKind::ModelTooLarge);
    runtime_fixes(&mut out, facts, format, phase, model_too_large);
    out
}

/// The fix one cause calls for, in the words of the runtime that failed (None: nothing
/// generic to say).
fn cause_fix(c: &Cause, facts: &Facts, format: Format) -> Option<Fix> {
    Some(match c.kind {
        CauseKind::Fragmentation if format == Format::Pytorch1 => fix(
            "stop the caching allocator from splitting large blocks (PyTorch ≥ 2.1: \
             expandable_segments:True instead)",
            Some("PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128 python train.py"),
        ),
        CauseKind::Fragmentation if matches!(format, Format::Pytorch2 | Format::Vllm) => fix(
            "let the caching allocator grow its segments instead of splitting fixed ones, \
             which removes most fragmentation",
            Some("PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python train.py"),
        ),
        CauseKind::OtherProcesses if format == Format::Jax => fix(
            "stop JAX from preallocating 75% of the GPU (or cap its share), and keep other \
             GPU programs off this card",
            Some("XLA_PYTHON_CLIENT_PREALLOCATE=false python train.py"),
        ),
        CauseKind::OtherProcesses => free_other_processes(facts),
        CauseKind::PrivatePools => fix(
            "capture fewer CUDA graphs or share one pool: torch.compile without \
             mode=\"reduce-overhead\", or vLLM's --enforce-eager",
            None,
        ),
        CauseKind::OversizedTensor
            if facts
                .tried_to_allocate_bytes
                .zip(facts.total_capacity_bytes)
                .is_some_and(|(t, c)| t > c) =>
        {
            fix(
                "make this one op smaller: smaller input (resolution, sequence length, \
                 batch for this op) or compute it in chunks",
                None,
            )
        }
        // Serving runtimes size their buffers from their own flags (fixes below).
        CauseKind::OversizedTensor if !matches!(format, Format::Llamacpp | Format::Vllm) => fix(
            "make that tensor smaller: it grows with micro-batch × sequence length (× vocab \
             for logits) — a smaller micro-batch with more gradient accumulation keeps the \
             tokens per step; for logits, a fused/chunked cross-entropy avoids the second copy",
            None,
        ),
        CauseKind::UnexplainedMemory if c.evidence.contains("config predicts") => fix(
            "find what holds the extra memory: keep losses as loss.item() (not tensors with \
             their graph), evaluate under torch.no_grad(), torch.load(..., \
             map_location=\"cpu\"), and drop references to old optimizer state",
            None,
        ),
        CauseKind::UnexplainedMemory if c.evidence.contains("working set") => fix(
            "hold less at this phase: a smaller micro-batch with more gradient accumulation \
             (same tokens per step), activation checkpointing, or bf16 autocast — `vramplan \
             suggest` with the run's config prints the exact change and its peak",
            None,
        ),
        CauseKind::ModelTooLarge => fit_the_weights(format),
        _ => return None,
    })
}

/// Memory held outside this process: how much, by whom, and how to see it.
fn free_other_processes(facts: &Facts) -> Fix {
    let held = facts
        .outside_process_bytes()
        .map_or_else(String::new, |o| format!(" ({})", human(o)));
    let pids: Vec<String> = facts
        .other_processes
        .iter()
        .map(|p| p.pid.to_string())
        .collect();
    let who = if pids.is_empty() {
        String::new()
    } else {
        format!(" (pid {})", pids.join(", "))
    };
    fix(
        format!(
            "free the memory held outside this process{held}: stop or move the \
             other process{who}; in multi-GPU runs call \
             torch.cuda.set_device(local_rank) before any CUDA work"
        ),
        Some("nvidia-smi --query-compute-apps=pid,used_memory --format=csv"),
    )
}

/// Weights that do not fit, in the runtime's own terms.
fn fit_the_weights(format: Format) -> Fix {
    match format {
        Format::Vllm => fix(
            "give vLLM a budget the model fits: raise --gpu-memory-utilization if the GPU \
             is not shared, lower --max-model-len / --max-num-seqs, add --enforce-eager",
            Some(concat!(
                "vllm serve MODEL --gpu-memory-utilization 0.95 --max-model-len 8192 ",
                "--enforce-eager"
            )),
        ),
        Format::Llamacpp => fix(
            "offload fewer layers to this GPU, use a smaller context and micro-batch, or a \
             smaller quantization",
            Some("llama-server -m MODEL -ngl 20 -c 8192 -ub 256"),
        ),
        _ => fix(
            "fit the weights: quantize them (8/4-bit), shard them across GPUs (FSDP, \
             ZeRO-3, device_map=\"auto\"), or use a larger card",
            None,
        ),
    }
}

/// What the failing phase or runtime adds when the causes said nothing about it: a smaller
/// eval batch, TensorFlow's pool, vLLM's budget, llama.cpp's offload.
fn runtime_fixes(
    out: &mut Vec<Fix>,
    facts: &Facts,
    format: Format,
    phase: Phase,
    model_too_large: bool,
) {
    if phase == Phase::Eval && !model_too_large {
        out.push(fix(
            "evaluate with a smaller batch: eval keeps no activations for backward, but the \
             logits of a full batch and the loss's log-probs are as large as in training \
             (vramplan's eval_batch_size)",
            None,
        ));
    }
    // TensorFlow: a failure without a size (cuBLAS handle, the driver pool) means TensorFlow's
    // own pool took the card; a sized one is a tensor too big at this batch.
    if format == Format::Tensorflow && out.is_empty() {
        out.push(if facts.tried_to_allocate_bytes.is_none() {
            fix(
                "let TensorFlow grow its memory pool instead of grabbing the GPU at start",
                Some("TF_FORCE_GPU_ALLOW_GROWTH=true python train.py"),
            )
        } else {
            fix(
                "make the failing tensor smaller: its first dimension is usually the batch — \
                 halve the batch (or the sequence length)",
                None,
            )
        });
    }
    if format == Format::Vllm && !out.iter().any(|f| f.change.contains("vLLM")) {
        out.push(fix(
            "give vLLM a budget the model fits: lower --gpu-memory-utilization if other \
             processes share the GPU, lower --max-model-len / --max-num-seqs, add \
             --enforce-eager (no CUDA-graph pools)",
            None,
        ));
    }
    if format == Format::Llamacpp && !out.iter().any(|f| f.change.contains("offload")) {
        out.push(fix(
            "offload fewer layers to this GPU (-ngl), or use a smaller context (-c) and \
             micro-batch (-ub)",
            None,
        ));
    }
}
