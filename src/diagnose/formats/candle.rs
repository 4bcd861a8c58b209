//! candle and other cudarc users (mistral.rs): `DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of
//! memory")`. cudarc states no sizes; the phase comes from the Rust backtrace (see `phase`).

use super::{re, Report};
use crate::diagnose::normalize::Normalized;
use crate::diagnose::pattern::Lazy;
use crate::diagnose::types::Format;
use regex::Regex;
use std::sync::OnceLock;

fn anchor() -> &'static Regex {
    static R: OnceLock<Lazy> = OnceLock::new();
    R.get_or_init(|| re(r"DriverError\(\s*CUDA_ERROR_OUT_OF_MEMORY"))
}

pub fn scan(n: &Normalized, out: &mut Vec<Report>) {
    if !super::has(&n.text, &["CUDA_ERROR_OUT_OF_MEMORY"]) {
        return;
    }
    for m in anchor().find_iter(&n.text) {
        let mut rep = Report::new(Format::Candle, m.start());
        // A server that printed "Model loaded." before failing ran out at its first request.
        let before = super::context(n, m.start(), 200, 0);
        if before.contains("Model loaded") || before.contains("Serving on") {
            rep.notes.push(
                "the model had finished loading before this failure: it came with the first \
                 request (activations and KV cache), not with the weights"
                    .into(),
            );
        }
        out.push(rep);
    }
}
