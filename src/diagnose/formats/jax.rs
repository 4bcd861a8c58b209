//! JAX/XLA: `RESOURCE_EXHAUSTED: Out of memory while trying to allocate N bytes.`, the
//! `Failed to allocate request for 112.00MiB (117440512B) on device ordinal 0` variant, and
//! the BufferAssignment listing that follows (stats and peak buffers with their shapes).
//! The BFC allocator's `Allocator (GPU_0_bfc) ran out of memory trying to allocate …` is shared
//! with TensorFlow; it belongs here only when the paste is JAX's.

use super::{cap_size, parse_dims, re, LogTensor, Markers, Report};
use crate::diagnose::normalize::Normalized;
use crate::diagnose::pattern::Lazy;
use crate::diagnose::size::{dtype_bytes, dtype_short, parse_size, shape_bytes};
use crate::diagnose::types::Format;
use std::sync::OnceLock;

struct Res {
    anchors: Vec<Lazy>,
    bfc: Lazy,
    stats: Vec<(Lazy, &'static str)>,
    buffer: Lazy,
}

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| Res {
        anchors: vec![
            re(r"RESOURCE_EXHAUSTED:\s*Out\s*of\s*memory\s*(?:while\s*trying\s*to\s*allocate|allocating)\s*(?P<v>SIZE)"),
            re(r"RESOURCE_EXHAUSTED:\s*Failed\s*to\s*allocate\s*request\s*for\s*(?P<h>SIZE)\s*(?:\(\s*(?P<v>\d+)\s*B\s*\))?\s*(?:on\s*device\s*ordinal\s*(?P<d>\d+))?"),
            re(r"RESOURCE_EXHAUSTED:\s*Out\s*of\s*memory\b"),
        ],
        bfc: re(r"Allocator\s*\((?P<a>\w+)\)\s*ran\s*out\s*of\s*memory\s*trying\s*to\s*allocate\s*(?P<h>SIZE)(?:\s*\(rounded\s*to\s*(?P<v>\d+)\))?"),
        stats: vec![
            (re(r"parameter\s*allocation:\s*(?P<v>SIZE)"), "parameter_allocation_bytes"),
            (re(r"constant\s*allocation:\s*(?P<v>SIZE)"), "constant_allocation_bytes"),
            (re(r"maybe_live_out\s*allocation:\s*(?P<v>SIZE)"), "maybe_live_out_allocation_bytes"),
            (re(r"preallocated\s*temp\s*allocation:\s*(?P<v>SIZE)"), "preallocated_temp_allocation_bytes"),
            (re(r"total\s*allocation:\s*(?P<v>SIZE)"), "buffer_assignment_total_bytes"),
        ],
        buffer: re(r#"Size:\s*(?P<size>SIZE)(?P<body>(?:\n[^\n]*){0,4}?)\n\s*(?:Shape|Entry\s*Parameter\s*Subshape|Subshape):\s*(?P<dt>[a-z]+\d*)\[(?P<shape>[\d,]*)\]"#),
    })
}

pub fn scan(n: &Normalized, m: Markers, out: &mut Vec<Report>) {
    let text = &n.text;
    let mut seen = Vec::new();
    let exhausted = super::has(text, &["RESOURCE_EXHAUSTED"]);
    let bfc = m.jax && !m.tensorflow && super::has(text, &["Allocator"]);
    if !exhausted && !bfc {
        return;
    }
    // Compiled only for a log that has something for them to read.
    let r = res();
    for a in r.anchors.iter().filter(|_| exhausted) {
        for c in a.captures_iter(text) {
            let at = c.get(0).map_or(0, |x| x.start());
            // The generic anchor also matches the specific ones: one report per message.
            if seen.contains(&at) {
                continue;
            }
            seen.push(at);
            // XLA inside TensorFlow prints the same words; name it by the runtime around it.
            let format = if m.tensorflow && !m.jax {
                Format::Tensorflow
            } else {
                Format::Jax
            };
            let mut rep = Report::new(format, at);
            let exact = c.name("v").and_then(|v| parse_size(v.as_str()));
            rep.set(
                "tried_to_allocate_bytes",
                exact.or_else(|| cap_size(&c, "h")),
            );
            rep.device = c.name("d").map(|d| d.as_str().to_string());
            listing(text, at, &mut rep);
            out.push(rep);
        }
    }
    if bfc {
        for c in r.bfc.captures_iter(text) {
            let at = c.get(0).map_or(0, |x| x.start());
            let mut rep = Report::new(Format::Jax, at);
            let exact = c.name("v").and_then(|v| parse_size(v.as_str()));
            rep.set(
                "tried_to_allocate_bytes",
                exact.or_else(|| cap_size(&c, "h")),
            );
            rep.device = c
                .name("a")
                .and_then(|a| a.as_str().strip_prefix("GPU_"))
                .and_then(|s| s.split('_').next())
                .map(str::to_string);
            out.push(rep);
        }
    }
}

/// The BufferAssignment stats and peak buffers printed after the message (up to the next
/// message, at most 8 KB on).
fn listing(text: &str, at: usize, rep: &mut Report) {
    let mut end = (at + 8192).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let tail = &text[at..end];
    let tail = match tail[1..].find("RESOURCE_EXHAUSTED") {
        Some(i) => &tail[..i + 1],
        None => tail,
    };
    if !tail.contains("BufferAssignment") && !tail.contains("Peak buffers") {
        return;
    }
    let r = res();
    for (re, field) in &r.stats {
        if let Some(c) = re.captures(tail) {
            rep.set(field, cap_size(&c, "v"));
        }
    }
    for (i, c) in r.buffer.captures_iter(tail).enumerate() {
        let (Some(dt), Some(shape)) = (c.name("dt"), c.name("shape")) else {
            continue;
        };
        let Some(shape) = parse_dims(shape.as_str()) else {
            continue;
        };
        let Some(bytes) = dtype_bytes(dt.as_str()).and_then(|e| shape_bytes(&shape, e)) else {
            continue;
        };
        let body = c.name("body").map_or("", |b| b.as_str());
        let label = body
            .split("XLA Label:")
            .nth(1)
            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("peak buffer {}", i + 1));
        rep.tensors.push(LogTensor {
            name: label,
            shape,
            dtype: dtype_short(dt.as_str()),
            bytes,
        });
    }
}
