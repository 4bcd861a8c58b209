//! llama.cpp / ggml: `ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9866.00 MiB on
//! device 1: cudaMalloc failed: out of memory`, usually followed by `failed to allocate CUDA1
//! buffer of size 10345253120` (the exact bytes) and by the caller's line, which names the
//! phase: weights (`load_tensors`, `llama_model_load`), KV cache, or compute buffers (context
//! creation). Some callers retry (without pipeline parallelism) and carry on: not fatal.

use super::{cap_size, context, re, Markers, Report};
use crate::diagnose::normalize::Normalized;
use crate::diagnose::pattern::Lazy;
use crate::diagnose::size::parse_size;
use crate::diagnose::types::{Format, Phase};
use std::sync::OnceLock;

struct Res {
    malloc: Lazy,
    buffer: Lazy,
    bare: Lazy,
    own: Lazy,
    current: Lazy,
    pinned: Lazy,
}

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| Res {
        malloc: re(r"allocating\s*(?P<h>SIZE)\s*on\s*device\s*(?P<d>\d+)\s*:\s*cudaMalloc\s*failed:\s*out\s*of\s*memory"),
        buffer: re(r"failed\s*to\s*allocate\s*(?P<be>[A-Za-z]+)(?P<d>\d*)\s*buffer\s*of\s*size\s*(?P<v>\d+)"),
        bare: re(r"CUDA\s*error:\s*out\s*of\s*memory|unable\s*to\s*allocate\s*\w+\s*buffer|failed\s*to\s*allocate\s*buffer\s*for\s*kv\s*cache"),
        // ggml's own wording: llama.cpp and what embeds it (Ollama, LM Studio).
        own: re(r"cudaMalloc\s*failed:\s*out\s*of\s*memory"),
        current: re(r"current\s*device:\s*(?P<d>\d+)"),
        pinned: re(r"failed\s*to\s*allocate\s*(?P<h>SIZE)\s*of\s*pinned\s*memory"),
    })
}

pub fn scan(n: &Normalized, m: Markers, out: &mut Vec<Report>) {
    let text = &n.text;
    if !super::has(text, &["cudaMalloc", "buffer", "pinned", "CUDA error"]) {
        return;
    }
    // Compiled only for a log that carries one of the gates' literals.
    let r = res();
    let mut covered: Vec<(usize, usize)> = Vec::new();
    for c in r.malloc.captures_iter(text) {
        let whole = c.get(0).expect("match");
        let mut rep = Report::new(Format::Llamacpp, whole.start());
        rep.set("tried_to_allocate_bytes", cap_size(&c, "h"));
        rep.device = c.name("d").map(|d| d.as_str().to_string());
        // The next lines carry the same request in exact bytes: prefer those.
        let after = context(n, whole.start(), 0, 2);
        if let Some(b) = r.buffer.captures(&after) {
            if let Some(v) = b.name("v").and_then(|v| parse_size(v.as_str())) {
                rep.facts.tried_to_allocate_bytes = v.bytes;
            }
            let end = n.lines[n.line_at(whole.start())].start + after.len();
            covered.push((whole.start(), end));
        }
        finish(n, &mut rep);
        out.push(rep);
    }
    for c in r.buffer.captures_iter(text) {
        let at = c.get(0).map_or(0, |x| x.start());
        if covered.iter().any(|&(a, b)| at >= a && at <= b) {
            continue;
        }
        let mut rep = Report::new(Format::Llamacpp, at);
        rep.set("tried_to_allocate_bytes", cap_size(&c, "v"));
        rep.device = c
            .name("d")
            .map(|d| d.as_str().to_string())
            .filter(|d| !d.is_empty());
        finish(n, &mut rep);
        out.push(rep);
        covered.push((at, at + 1));
    }
    if !out.iter().any(|r| r.format == Format::Llamacpp) {
        let found = r
            .own
            .find(text)
            .or_else(|| m.ggml.then(|| r.bare.find(text)).flatten());
        if let Some(x) = found {
            let mut rep = Report::new(Format::Llamacpp, x.start());
            let after = context(n, x.start(), 0, 2);
            rep.device = r
                .current
                .captures(&after)
                .and_then(|c| c.name("d"))
                .map(|d| d.as_str().to_string());
            finish(n, &mut rep);
            out.push(rep);
        }
    }
    // Pinned (page-locked) host memory: llama.cpp warns and falls back to pageable memory.
    for c in r.pinned.captures_iter(text) {
        let at = c.get(0).map_or(0, |x| x.start());
        let what = format!(
            "llama.cpp could not pin {} of host RAM (page-locked memory for transfers); it \
             falls back to ordinary memory — this is system RAM, not VRAM",
            cap_size(&c, "h").map_or_else(String::new, |s| s.printed)
        );
        out.push(Report::not_vram(Some(Format::Llamacpp), at, what));
    }
}

/// Phase from the callers printed around the failure; a retry means it was not fatal.
fn finish(n: &Normalized, rep: &mut Report) {
    let around = context(n, rep.at, 2, 3).to_ascii_lowercase();
    let after = context(n, rep.at, 0, 4).to_ascii_lowercase();
    rep.phase_hint = if around.contains("load_tensors")
        || around.contains("llama_model_load")
        || around.contains("loading model")
        || around.contains("model buffer")
    {
        Some(Phase::ModelLoad)
    } else if around.contains("kv_cache")
        || around.contains("kv cache")
        || around.contains("kv self")
    {
        Some(Phase::KvCache)
    } else if around.contains("compute buffer")
        || around.contains("graph_reserve")
        || around.contains("sched_reserve")
        || around.contains("new_context")
        || around.contains("init_from_model")
    {
        Some(Phase::Init)
    } else {
        None
    };
    if after.contains("retrying without") || after.contains("falling back") {
        rep.notes.push(
            "llama.cpp retried (without pipeline parallelism) after this failure and went on: \
             it was not fatal, but the fallback costs speed"
                .into(),
        );
    }
}
