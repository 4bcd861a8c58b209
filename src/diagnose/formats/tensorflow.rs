//! TensorFlow: `OOM when allocating tensor with shape[…] and type T on /device:GPU:N by
//! allocator GPU_N_bfc` (the shape gives the bytes), `Ran out of GPU memory when allocating N
//! bytes`, the stream executor's `failed to allocate 3.84G (4126539776 bytes) from device:
//! CUDA_ERROR_OUT_OF_MEMORY`, its cuBLAS handle failures, and the BFC allocator's warning.
//! The node name in `[[node …]]` tells forward from gradient (backward) from optimizer.

use super::{cap_size, parse_dims, re, LogTensor, Markers, Report};
use crate::diagnose::normalize::Normalized;
use crate::diagnose::pattern::Lazy;
use crate::diagnose::size::{dtype_bytes, dtype_short, parse_size, shape_bytes};
use crate::diagnose::types::{Format, Phase};
use std::sync::OnceLock;

struct Res {
    shape: Lazy,
    bytes: Lazy,
    driver: Lazy,
    cublas: Lazy,
    bfc: Lazy,
    exhausted: Lazy,
    node: Lazy,
    device_props: [Lazy; 2],
}

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| Res {
        shape: re(r"OOM\s*when\s*allocating\s*tensor\s*(?:with\s*shape\s*)?\[(?P<shape>[\d,\s]*)\]\s*(?:and\s*type\s*(?P<dt>\w+))?(?:\s*on\s*(?P<dev>\S+))?(?:\s*by\s*allocator\s*(?P<alloc>\w+))?"),
        bytes: re(r"Ran\s*out\s*of\s*GPU\s*memory\s*when\s*allocating\s*(?P<v>\d+)\s*bytes"),
        driver: re(r"failed\s*to\s*allocate\s*(?P<h>SIZE)\s*\((?P<v>\d+)\s*bytes\)\s*from\s*device:\s*CUDA_ERROR_OUT_OF_MEMORY"),
        cublas: re(r"failed\s*to\s*create\s*cublas\s*handle:\s*CUBLAS_STATUS_ALLOC_FAILED"),
        bfc: re(r"Allocator\s*\((?P<a>\w+)\)\s*ran\s*out\s*of\s*memory\s*trying\s*to\s*allocate\s*(?P<h>SIZE)(?:\s*\(rounded\s*to\s*(?P<v>\d+)\))?(?P<rest>[^\n]*)"),
        exhausted: re(r"ResourceExhaustedError|Resource\s*exhausted:"),
        node: re(r"\[\[\{?\{?\s*[Nn]ode:?\s*(?P<n>[^\s=}\]()]+)"),
        device_props: [
            re(r"(?i)total\s*memory:\s*(?P<v>SIZE)"),
            re(r"(?i)free\s*memory:\s*(?P<v>SIZE)"),
        ],
    })
}

pub fn scan(n: &Normalized, m: Markers, out: &mut Vec<Report>) {
    let text = &n.text;
    let first = out.len();
    const GATES: &[&str] = &[
        "OOM",
        "Ran out",
        "CUDA_ERROR_OUT_OF_MEMORY",
        "cublas",
        "Allocator",
        "xhausted",
    ];
    if !super::has(text, GATES) {
        return;
    }
    // Compiled only for a log that carries one of the gates' literals.
    let r = res();
    for c in r.shape.captures_iter(text) {
        out.push(shape_report(n, &c));
    }
    for c in r.bytes.captures_iter(text) {
        let at = c.get(0).map_or(0, |x| x.start());
        let mut rep = Report::new(Format::Tensorflow, at);
        rep.set("tried_to_allocate_bytes", cap_size(&c, "v"));
        node_phase(n, at, &mut rep);
        out.push(rep);
    }
    for c in r.driver.captures_iter(text) {
        let mut rep = Report::new(Format::Tensorflow, c.get(0).map_or(0, |x| x.start()));
        rep.set("tried_to_allocate_bytes", cap_size(&c, "v"));
        rep.notes.push(
            "TensorFlow's stream executor could not reserve its memory pool from the driver: \
             something else already holds this GPU's memory"
                .into(),
        );
        out.push(rep);
    }
    // cuBLAS failures are TensorFlow's when TensorFlow printed them (issue 4's naming rule).
    if m.tensorflow {
        for x in r.cublas.find_iter(text) {
            let mut rep = Report::new(Format::Tensorflow, x.start());
            rep.notes.push(
                "cuBLAS could not allocate its handle's workspace: TensorFlow's BFC pool had \
                 already taken (nearly) all GPU memory"
                    .into(),
            );
            rep.phase_hint = Some(Phase::Init);
            out.push(rep);
        }
    }
    // The BFC warning alone is not a failure ("The caller indicates that this is not a
    // failure"); it only counts when TensorFlow says nothing more specific.
    if m.tensorflow && out.len() == first {
        out.extend(r.bfc.captures_iter(text).map(|c| bfc_report(&c)));
    }
    if m.tensorflow && out.len() == first {
        if let Some(x) = r.exhausted.find(text) {
            out.push(Report::new(Format::Tensorflow, x.start()));
        }
    }
    device_totals(text, r, &mut out[first..]);
}

/// TensorFlow's `OOM when allocating tensor with shape[...]`: the tensor's bytes from its
/// shape and dtype, the device, the op's phase.
fn shape_report(n: &Normalized, c: &regex::Captures<'_>) -> Report {
    let at = c.get(0).map_or(0, |x| x.start());
    let mut rep = Report::new(Format::Tensorflow, at);
    let dt = c.name("dt").map_or("float", |d| d.as_str());
    if let Some(shape) = c.name("shape").and_then(|s| parse_dims(s.as_str())) {
        if let Some(bytes) = dtype_bytes(dt).and_then(|e| shape_bytes(&shape, e)) {
            rep.facts.tried_to_allocate_bytes = Some(bytes);
            rep.tensors.push(LogTensor {
                name: "the tensor TensorFlow was allocating".into(),
                shape,
                dtype: dtype_short(dt),
                bytes,
            });
        }
    }
    rep.device = c
        .name("dev")
        .and_then(|d| d.as_str().rsplit_once("GPU:"))
        .map(|(_, i)| {
            i.trim_end_matches(|ch: char| !ch.is_ascii_digit())
                .to_string()
        })
        .or_else(|| bfc_device(c.name("alloc").map_or("", |a| a.as_str())));
    node_phase(n, at, &mut rep);
    rep
}

/// The BFC allocator's warning that it ran short (not a failure when it says so).
fn bfc_report(c: &regex::Captures<'_>) -> Report {
    let mut rep = Report::new(Format::Tensorflow, c.get(0).map_or(0, |x| x.start()));
    let exact = c.name("v").and_then(|v| parse_size(v.as_str()));
    rep.set(
        "tried_to_allocate_bytes",
        exact.or_else(|| cap_size(c, "h")),
    );
    rep.device = bfc_device(c.name("a").map_or("", |a| a.as_str()));
    if c.name("rest")
        .is_some_and(|x| x.as_str().contains("not a failure"))
    {
        rep.notes.push(
            "TensorFlow's allocator warned that it ran short but says this is not a \
             failure: it retried and went on (slower)"
                .into(),
        );
        rep.is_oom = false;
    }
    rep
}

/// Device totals from TensorFlow's startup lines, when the paste kept them.
fn device_totals(text: &str, r: &Res, reports: &mut [Report]) {
    if reports.is_empty() {
        return;
    }
    let total = r.device_props[0]
        .captures(text)
        .and_then(|c| cap_size(&c, "v"));
    let free = r.device_props[1]
        .captures(text)
        .and_then(|c| cap_size(&c, "v"));
    for rep in reports.iter_mut() {
        rep.set("total_capacity_bytes", total.clone());
        rep.set("free_bytes", free.clone());
    }
}

fn bfc_device(alloc: &str) -> Option<String> {
    let rest = alloc.strip_prefix("GPU_")?;
    let idx = rest.split('_').next()?;
    (!idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit())).then(|| idx.to_string())
}

/// The op that failed names the phase: `gradients/…` is backward, `Adam`/`training/…` the
/// optimizer, anything else the forward pass.
fn node_phase(n: &Normalized, at: usize, rep: &mut Report) {
    let ctx = super::context(n, at, 0, 3);
    let Some(c) = res().node.captures(&ctx) else {
        return;
    };
    let node = c.name("n").map_or("", |x| x.as_str());
    let lower = node.to_ascii_lowercase();
    rep.phase_hint = Some(if lower.contains("gradients") || lower.contains("_grad") {
        Phase::Backward
    } else if lower.contains("adam")
        || lower.starts_with("training/")
        || lower.contains("optimizer")
    {
        Phase::Optimizer
    } else {
        Phase::Forward
    });
    if let Some(t) = rep.tensors.first_mut() {
        t.name = node.to_string();
    }
}
