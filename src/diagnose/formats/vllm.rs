//! vLLM's own budget failures: "No available memory for the cache blocks" (V0/V1), the V1
//! "KV cache is needed, which is larger than the available KV cache memory", V0's "max seq len
//! (N) is larger than the maximum number of tokens that can be stored in KV cache" and the startup
//! check "Free memory on device (f/t GiB) on startup is less than desired GPU memory
//! utilization (u, x GiB)". PyTorch OOMs inside vLLM workers are parsed by `pytorch` and
//! renamed `vllm` by the diagnoser.

use super::{cap_size, re, Markers, Report};
use crate::diagnose::normalize::Normalized;
use crate::diagnose::pattern::Lazy;
use crate::diagnose::size::parse_size;
use crate::diagnose::types::{Format, Phase};
use std::sync::OnceLock;

struct Res {
    no_blocks: Lazy,
    gpu_blocks: Lazy,
    needed: Lazy,
    max_tokens: Lazy,
    startup: Lazy,
}

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| Res {
        no_blocks: re(r"No\s*available\s*memory\s*for\s*the\s*cache\s*blocks"),
        gpu_blocks: re(r"#\s*GPU\s*blocks:\s*(?P<n>\d+)"),
        needed: re(r"\(?(?P<v>SIZE)\s*KV\s*cache\s*is\s*needed,\s*which\s*is\s*larger\s*than\s*the\s*available\s*KV\s*cache\s*memory\s*\((?P<a>SIZE)\)"),
        max_tokens: re(r"max\s*seq\s*len\s*\((?P<len>\d+)\)\s*is\s*larger\s*than\s*the\s*maximum\s*number\s*of\s*tokens\s*that\s*can\s*be\s*stored\s*in\s*KV\s*cache\s*\((?P<n>\d+)\)"),
        startup: re(r"Free\s*memory\s*on\s*device\s*\((?P<f>\d+(?:\.\d+)?)\s*/\s*(?P<t>\d+(?:\.\d+)?)\s*GiB\)\s*on\s*startup\s*is\s*less\s*than\s*desired\s*GPU\s*memory\s*utilization\s*\((?P<u>[\d.]+),\s*(?P<w>\d+(?:\.\d+)?)\s*GiB\)"),
    })
}

pub fn scan(n: &Normalized, _m: Markers, out: &mut Vec<Report>) {
    let text = &n.text;
    if !super::has(text, &["cache blocks", "KV cache", "on startup"]) {
        return;
    }
    // Compiled only for a log that carries one of the gates' literals.
    let r = res();
    let blocks = r
        .gpu_blocks
        .captures_iter(text)
        .filter_map(|c| c.name("n")?.as_str().parse::<u64>().ok())
        .last();
    // The ValueError is often quoted twice (log line + final exception): one report.
    if let Some(x) = r.no_blocks.find(text) {
        let mut rep = Report::new(Format::Vllm, x.start());
        rep.phase_hint = Some(Phase::KvCache);
        if let Some(b) = blocks {
            rep.notes.push(format!(
                "vLLM found room for {b} KV-cache blocks on the GPU after the weights and the \
                 profiling run took their share of gpu_memory_utilization"
            ));
        }
        out.push(rep);
    }
    for c in r.needed.captures_iter(text) {
        let mut rep = Report::new(Format::Vllm, c.get(0).map_or(0, |x| x.start()));
        rep.phase_hint = Some(Phase::KvCache);
        rep.set("tried_to_allocate_bytes", cap_size(&c, "v"));
        rep.set("kv_cache_available_bytes", cap_size(&c, "a"));
        out.push(rep);
    }
    if let Some(c) = r.max_tokens.captures(text) {
        let mut rep = Report::new(Format::Vllm, c.get(0).map_or(0, |x| x.start()));
        rep.phase_hint = Some(Phase::KvCache);
        rep.notes.push(format!(
            "vLLM's KV cache holds {} tokens, fewer than one request of max_model_len = {}",
            &c["n"], &c["len"]
        ));
        out.push(rep);
    }
    for c in r.startup.captures_iter(text) {
        let mut rep = Report::new(Format::Vllm, c.get(0).map_or(0, |x| x.start()));
        rep.phase_hint = Some(Phase::Init);
        let gib = |k: &str| {
            c.name(k)
                .and_then(|v| parse_size(&format!("{} GiB", v.as_str())))
        };
        rep.set("free_bytes", gib("f"));
        rep.set("total_capacity_bytes", gib("t"));
        rep.set("requested_budget_bytes", gib("w"));
        out.push(rep);
    }
}
