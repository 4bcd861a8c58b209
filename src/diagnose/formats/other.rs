//! CUDA libraries failing on their own: NCCL (`NCCL WARN Cuda failure 'out of memory'`,
//! `Failed to CUDA calloc 6291456 bytes`), cuBLAS/cuDNN/cuFFT/cuSOLVER/cuSPARSE `*_ALLOC_FAILED`
//! outside TensorFlow, CuPy's and Numba's allocators, and a bare `cudaErrorMemoryAllocation`.
//! NCCL's debug prefix `host:pid:tid [N]` gives the local device index.

use super::{cap_size, context, re, Markers, Report};
use crate::diagnose::normalize::Normalized;
use crate::diagnose::pattern::Lazy;
use crate::diagnose::types::Format;
use std::sync::OnceLock;

struct Res {
    nccl: Lazy,
    nccl_bytes: Lazy,
    nccl_dev: Lazy,
    lib: Lazy,
    cupy: Lazy,
    generic: Lazy,
}

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| Res {
        nccl: re(r"WARN\s*Cuda\s*failure\s*(?:\d+\s*)?'?out\s*of\s*memory'?|ncclUnhandledCudaError[^\n]*out\s*of\s*memory"),
        nccl_bytes: re(r"Failed\s*to\s*CUDA\s*(?:calloc|malloc)\w*\s*(?P<v>\d+)\s*bytes"),
        nccl_dev: re(r"(?m)^[\w.-]+:\d+:\d+\s*\[(?P<d>\d+)\]"),
        lib: re(r"(?P<lib>CUBLAS|CUDNN|CUFFT|CUSOLVER|CUSPARSE|CURAND)_(?:STATUS_)?ALLOC_FAILED"),
        cupy: re(r"Out\s*of\s*memory\s*allocating\s*(?P<v>[\d,]+\s*bytes)\s*\(allocated\s*so\s*far:\s*(?P<a>[\d,]+\s*bytes)\)"),
        generic: re(r"cudaErrorMemoryAllocation|cuMemAlloc\w*\s*results\s*in\s*CUDA_ERROR_OUT_OF_MEMORY|CUDA_ERROR_OUT_OF_MEMORY"),
    })
}

pub fn scan(n: &Normalized, m: Markers, out: &mut Vec<Report>) {
    let text = &n.text;
    let first = out.len();
    const GATES: &[&str] = &[
        "WARN",
        "ALLOC_FAILED",
        "allocated so far",
        "CUDA_ERROR_OUT_OF_MEMORY",
        "cudaErrorMemoryAllocation",
        "ncclUnhandled",
    ];
    if !super::has(text, GATES) {
        return;
    }
    // Compiled only for a log that carries one of the gates' literals.
    let r = res();
    let already = |at: usize, out: &[Report]| out.iter().any(|x| x.at.abs_diff(at) < 400);
    for x in r.nccl.find_iter(text) {
        let mut rep = Report::new(Format::Other, x.start());
        let ctx = context(n, x.start(), 0, 4);
        if let Some(c) = r.nccl_bytes.captures(&ctx) {
            rep.set("tried_to_allocate_bytes", cap_size(&c, "v"));
        }
        let line = context(n, x.start(), 0, 0);
        rep.device = r
            .nccl_dev
            .captures(&line)
            .and_then(|c| c.name("d"))
            .map(|d| d.as_str().to_string());
        rep.notes
            .push("NCCL could not allocate its communication buffers on the GPU".into());
        out.push(rep);
    }
    for c in r.lib.captures_iter(text) {
        let at = c.get(0).map_or(0, |x| x.start());
        // TensorFlow's cuBLAS failures are TensorFlow's (scanned there).
        if m.tensorflow || already(at, &out[first..]) {
            continue;
        }
        let lib = c.name("lib").map_or("CUDA library", |l| l.as_str());
        let mut rep = Report::new(Format::Other, at);
        rep.notes.push(format!(
            "{lib} could not allocate its handle or workspace: the framework's allocator had \
             already taken the memory it needed"
        ));
        out.push(rep);
    }
    for c in r.cupy.captures_iter(text) {
        let mut rep = Report::new(Format::Other, c.get(0).map_or(0, |x| x.start()));
        rep.set("tried_to_allocate_bytes", cap_size(&c, "v"));
        rep.set("allocated_by_framework_bytes", cap_size(&c, "a"));
        out.push(rep);
    }
    // Anything else that says the driver is out of memory, unless a specific scanner (candle's
    // DriverError, TensorFlow's stream executor, llama.cpp) already reported it.
    for x in r.generic.find_iter(text) {
        let ctx = context(n, x.start(), 0, 0);
        if ctx.contains("DriverError") || ctx.contains("from device:") || m.ggml {
            continue;
        }
        if already(x.start(), out) {
            continue;
        }
        out.push(Report::new(Format::Other, x.start()));
    }
}
