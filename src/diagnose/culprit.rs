//! Which tensor was the failed request?
//!
//! PyTorch does not print the tensor's size but the block it asked the driver for, and prints
//! that with two decimals. In `c10/cuda/CUDACachingAllocator.cpp`, `malloc` rounds the request
//! up to 512 B (`round_size`), then `get_allocation_size` turns it into the segment to
//! cudaMalloc: ≤ 1 MiB → a 2 MiB small-pool segment, < 10 MiB → a 20 MiB segment, larger → the
//! next multiple of 2 MiB; the OOM message prints `format_size(alloc_size)`. So 2×1024×50304×4
//! bytes = 393.0 MiB prints "394.00 MiB", and every request between 1 and 10 MiB prints
//! "20.00 MiB". (PyTorch 1.0–1.4 used 1 MiB small segments: "1024.00 KiB".) A candidate
//! matches when that printed figure equals the log's within the printed precision.

use super::size::pytorch_half_ulp;
use super::types::Phase;
use serde::{Deserialize, Serialize};

/// A tensor the simulator says exists in the run, in birth order (Timeline order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub name: String,
    pub shape: Vec<u64>,
    /// `bf16`, `fp16`, `fp32`, …
    pub dtype: String,
    pub bytes: u64,
    /// The phase it is born in, with `Phase` names (`forward`, `eval`, …).
    pub phase: String,
    /// What the simulated run had allocated (allocator blocks) just before this tensor's
    /// allocation in that phase — the largest such figure where the phase allocates it more
    /// than once (a later eval iteration still holds the previous one's logits).
    #[serde(default)]
    pub allocated_before_bytes: Option<u64>,
    /// A tensor of the same size already alive at that moment (a previous iteration's logits).
    #[serde(default)]
    pub live_twin: Option<String>,
}

/// A candidate whose size explains the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
    pub bytes: u64,
    pub phase: String,
    /// The candidate's simulated allocated bytes just before it (see [`Candidate`]).
    pub allocated_before_bytes: Option<u64>,
    /// A same-sized tensor alive then (see [`Candidate`]).
    pub live_twin: Option<String>,
    /// What the allocator would have asked for (and printed) for this tensor.
    pub requested_bytes: u64,
    /// Whether the candidate's phase is the log's phase (`None`: the log's phase is unknown).
    pub phase_agrees: Option<bool>,
    /// True for shapes guessed without a config (common GPT vocabularies and sizes).
    pub hypothesis: bool,
    /// Why it matches, in words.
    pub why: String,
}

/// How exact the log's figure is and whether PyTorch's caching allocator rounded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub bytes: u64,
    /// ± tolerance of the printed figure.
    pub half_ulp: u64,
    /// The figure is a caching-allocator segment size (PyTorch), not a tensor size.
    pub caching_allocator: bool,
}

impl Request {
    /// A PyTorch "Tried to allocate" figure, printed with two decimals.
    pub fn pytorch(bytes: u64) -> Request {
        Request {
            bytes,
            half_ulp: pytorch_half_ulp(bytes),
            caching_allocator: true,
        }
    }

    /// An exact byte count from a runtime that allocates what it is asked (XLA, TF, ggml).
    pub fn exact(bytes: u64) -> Request {
        Request {
            bytes,
            half_ulp: 0,
            caching_allocator: false,
        }
    }
}

/// The segment PyTorch's caching allocator requests (and prints) for a tensor of `bytes`: the
/// simulator's allocator model (`round_size`, then `segment_size`), not a copy of its rules.
pub fn pytorch_alloc_size(bytes: u64) -> u64 {
    use crate::sim::allocator::{round_size, segment_size};
    segment_size(round_size(bytes.max(1)))
}

fn explains(req: &Request, bytes: u64) -> Option<u64> {
    let near = |x: u64| x.abs_diff(req.bytes) <= req.half_ulp + 1;
    if req.caching_allocator {
        let a = pytorch_alloc_size(bytes);
        if near(a) {
            return Some(a);
        }
    }
    near(bytes).then_some(bytes)
}

/// Candidates whose size the printed request matches (PyTorch rounding and printed precision),
/// all of them, ranked: phase agreement first, then the candidate's own order.
pub fn match_request(tried_bytes: u64, candidates: &[Candidate]) -> Vec<Match> {
    match_request_with(&Request::pytorch(tried_bytes), candidates, None)
}

/// [`match_request`] for any runtime's figure, ranked by agreement with the log's `phase`.
pub fn match_request_with(
    req: &Request,
    candidates: &[Candidate],
    phase: Option<Phase>,
) -> Vec<Match> {
    let phase = phase.filter(|p| *p != Phase::Unknown);
    let mut out: Vec<(usize, Match)> = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let requested = explains(req, c.bytes)?;
            let agrees = phase.map(|p| phase_agrees(p, Phase::from_name(&c.phase)));
            let why = if requested == c.bytes {
                format!(
                    "{} = {} bytes, the request as printed",
                    shape_text(&c.shape, &c.dtype),
                    c.bytes
                )
            } else {
                format!(
                    "{} = {} bytes, which the caching allocator rounds up to a {}-byte block, \
                     the request as printed",
                    shape_text(&c.shape, &c.dtype),
                    c.bytes,
                    requested
                )
            };
            Some((
                i,
                Match {
                    name: c.name.clone(),
                    shape: c.shape.clone(),
                    dtype: c.dtype.clone(),
                    bytes: c.bytes,
                    phase: c.phase.clone(),
                    allocated_before_bytes: c.allocated_before_bytes,
                    live_twin: c.live_twin.clone(),
                    requested_bytes: requested,
                    phase_agrees: agrees,
                    hypothesis: false,
                    why,
                },
            ))
        })
        .collect();
    // The log's own phase first (an eval OOM is eval's tensor, not the forward's twin), then
    // phases that agree with it, then the rest.
    let exact = |m: &Match| phase.is_some_and(|p| p.as_str() == m.phase);
    out.sort_by_key(|(i, m)| (m.phase_agrees == Some(false), !exact(m), *i));
    out.into_iter().map(|(_, m)| m).collect()
}

/// Eval runs the forward pass; a forward-born tensor agrees with an eval-phase OOM and with
/// eval-after-step (the log cannot tell the two apart).
fn phase_agrees(log: Phase, cand: Phase) -> bool {
    use Phase::*;
    log == cand
        || matches!(
            (log, cand),
            (Eval, Forward)
                | (Eval, EvalAfterStep)
                | (EvalAfterStep, Eval)
                | (EvalAfterStep, Forward)
                | (Compile, Forward)
                | (Compile, Backward)
                | (KvCache, Forward)
        )
}

/// `[64, 1024, 50304] bf16`.
pub fn shape_text(shape: &[u64], dtype: &str) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}] {}", dims.join(", "), dtype)
}

/// Without a config: the logits-sized tensors a GPT could have (batch × block × vocab at the
/// common vocabularies, 2- and 4-byte dtypes), marked as hypotheses. Batches are the ones
/// people set (powers of two, nanoGPT's 12 and its multiples); exact byte matches first, then
/// the usual block sizes and vocabularies first; at most `limit`.
pub fn gpt_hypotheses(req: &Request, limit: usize) -> Vec<Match> {
    // In order of how often they are trained, which is the order they are offered in.
    const VOCABS: [(u64, &str); 6] = [
        (50304, "GPT-2 padded (nanoGPT)"),
        (50257, "GPT-2"),
        (32000, "Llama 2 / Mistral"),
        (128256, "Llama 3"),
        (151936, "Qwen"),
        (65, "char-level Shakespeare"),
    ];
    const BLOCKS: [u64; 8] = [1024, 2048, 4096, 512, 256, 8192, 128, 64];
    const BATCHES: [u64; 14] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256];
    let mut found: Vec<((u64, usize, usize), Match)> = Vec::new();
    for (vi, (v, vname)) in VOCABS.iter().enumerate() {
        for (bi, block) in BLOCKS.iter().enumerate() {
            for (elem, dtype) in [(2u64, "bf16"), (4, "fp32")] {
                for batch in BATCHES {
                    let Some(bytes) = batch
                        .checked_mul(*block)
                        .and_then(|x| x.checked_mul(*v))
                        .and_then(|x| x.checked_mul(elem))
                    else {
                        continue;
                    };
                    let Some(requested) = explains(req, bytes) else {
                        continue;
                    };
                    let shape = vec![batch, *block, *v];
                    let rounded = if requested == bytes {
                        String::new()
                    } else {
                        format!(", allocated as {requested}")
                    };
                    found.push((
                        (u64::from(requested != bytes), bi, vi),
                        Match {
                            name: format!(
                                "logits (batch {batch} × block {block} × vocab {v}, {vname})"
                            ),
                            why: format!(
                                "hypothesis (no config): {} = {bytes} bytes{rounded}",
                                shape_text(&shape, dtype)
                            ),
                            shape,
                            dtype: dtype.into(),
                            bytes,
                            phase: Phase::Forward.as_str().into(),
                            allocated_before_bytes: None,
                            live_twin: None,
                            requested_bytes: requested,
                            phase_agrees: None,
                            hypothesis: true,
                        },
                    ));
                }
            }
        }
    }
    found.sort_by_key(|(rank, _)| *rank);
    found.into_iter().take(limit).map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::size::parse_size;
    use crate::units::MIB;

    fn printed(s: &str) -> u64 {
        parse_size(s).unwrap().bytes.unwrap()
    }

    fn cand(name: &str, shape: &[u64], dtype: &str, elem: u64, phase: &str) -> Candidate {
        Candidate {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: dtype.into(),
            bytes: shape.iter().product::<u64>() * elem,
            phase: phase.into(),
            allocated_before_bytes: None,
            live_twin: None,
        }
    }

    #[test]
    fn rounding_rule_from_the_allocator() {
        assert_eq!(pytorch_alloc_size(2 * 1024 * 50304 * 4), 394 * MIB);
        assert_eq!(pytorch_alloc_size(3 * MIB), 20 * MIB);
        assert_eq!(pytorch_alloc_size(1000), 2 * MIB);
        // 786.00 MiB in the corpus (nanoGPT#61) is exactly 4×1024×50304×4: no rounding needed.
        let m = match_request(
            printed("786.00 MiB"),
            &[cand("logits", &[4, 1024, 50304], "fp32", 4, "forward")],
        );
        assert_eq!(m.len(), 1);
        let m = match_request(
            printed("394.00 MiB"),
            &[cand("logits", &[2, 1024, 50304], "fp32", 4, "forward")],
        );
        assert_eq!(m.len(), 1);
        assert_ne!(m[0].requested_bytes, m[0].bytes);
    }

    #[test]
    fn equal_sizes_are_all_returned_ranked_by_phase() {
        let c = [
            cand("train.logits", &[32, 1024, 50304], "fp32", 4, "backward"),
            cand("eval.logits", &[64, 1024, 50304], "bf16", 2, "eval"),
        ];
        let m = match_request_with(
            &Request::pytorch(printed("6.14 GiB")),
            &c,
            Some(Phase::Eval),
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "eval.logits");
        assert_eq!(m[1].phase_agrees, Some(false));
    }

    #[test]
    fn hypotheses_find_the_seed_shapes() {
        let h = gpt_hypotheses(&Request::pytorch(printed("6.14 GiB")), 6);
        assert!(h
            .iter()
            .any(|m| m.shape == vec![64, 1024, 50304] && m.dtype == "bf16"));
        assert!(h
            .iter()
            .any(|m| m.shape == vec![32, 1024, 50304] && m.dtype == "fp32"));
        assert!(h.iter().all(|m| m.hypothesis));
    }
}
