//! PyTorch's caching-allocator messages, 1.x and 2.x wordings, CUDA/ROCm/XPU, plus the bare
//! `CUDA error: out of memory` and Apple's MPS variant.
//!
//! The message is found by its anchor (`… out of memory. Tried to allocate X`) and each clause
//! is then looked up separately inside the message, so an extra clause (private pools,
//! `allowed;`, several `Process N has …` lines), a missing one (Windows prints no "this
//! process"), a typo (`capacty`) or a poster's rewording does not break the rest. Words are
//! joined by `\s*` because a rejoined hard wrap may have dropped the space.

use super::{cap_size, find_size, re, span_end, LogTensor, Markers, Report};
use crate::diagnose::normalize::Normalized;
use crate::diagnose::pattern::Lazy;
use crate::diagnose::pytorch_version;
use crate::diagnose::size::{dtype_bytes, dtype_short, shape_bytes};
use crate::diagnose::types::{Format, OtherProcess};
use std::sync::OnceLock;

struct Res {
    anchor: Lazy,
    bare: Lazy,
    mps: Lazy,
    total: [Lazy; 2],
    free: [Lazy; 2],
    this_process: [Lazy; 2],
    process: Lazy,
    allocated: [Lazy; 2],
    private: Lazy,
    unallocated: Lazy,
    /// PyTorch 1.0–1.3's "X cached)".
    cached: Lazy,
    reserved_total: Lazy,
    allowed: Lazy,
    device: [Lazy; 2],
    buffer: Lazy,
}

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| Res {
        // No `\b` before the device: a second rank's message can be glued onto the first
        // (`…PYTORCH_CUDA_ALLOC_CONFCUDA out of memory.`).
        anchor: re(r"(?:CUDA|HIP|XPU|MUSA|NPU)\s*out\s*of\s*memory\.?\s*Tried\s*to\s*allocate\s*(?P<v>SIZE)"),
        bare: re(r"(?:CUDA|HIP)\s*error:\s*out\s*of\s*memory"),
        mps: re(r"MPS\s*backend\s*out\s*of\s*memory\s*\(MPS\s*allocated:\s*(?P<a>SIZE),\s*other\s*allocations:\s*(?P<o>SIZE),\s*max\s*allowed:\s*(?P<m>SIZE)\)\.\s*Tried\s*to\s*allocate\s*(?P<v>SIZE)"),
        total: [
            re(r"total\s*capac(?:i)?ty\s*of\s*(?P<v>SIZE)"),
            re(r"(?P<v>SIZE)\s*total\b"),
        ],
        free: [
            re(r"of\s*which\s*(?P<v>SIZE)\s*is\s*free"),
            re(r"(?P<v>SIZE)\s*(?:is\s*)?free\b"),
        ],
        this_process: [
            re(r"this\s*process\s*has\s*(?P<v>SIZE)"),
            re(r"(?P<v>SIZE)\s*(?:memory\s*)?in\s*use\s*by\s*this\s*process"),
        ],
        process: re(r"Process\s*(?P<pid>\d+)\s*has\s*(?P<v>SIZE)\s*memory\s*in\s*use"),
        allocated: [
            re(r"allocated\s*memory\s*(?P<v>SIZE)\s*is\s*allocated\s*by\s*PyTorch"),
            re(r"(?P<v>SIZE)\s*already\s*allocated"),
        ],
        private: re(r"with\s*(?P<v>SIZE)\s*allocated\s*in\s*private\s*pools"),
        unallocated: re(r"(?P<v>SIZE)\s*is\s*reserved\s*by\s*PyTorch\s*but\s*unallocated"),
        cached: re(r"(?P<v>SIZE)\s*cached\s*\)"),
        reserved_total: re(r"(?P<v>SIZE)\s*reserved\s*in\s*total"),
        allowed: re(r"(?P<v>SIZE)\s*allowed\s*;"),
        device: [
            re(r"\(\s*GPU\s*(?P<d>\d*)\s*;"),
            re(r"GPU\s*(?P<d>\d*)\s*has\b"),
        ],
        // Inductor's generated code names the buffer it was creating when the OOM hit.
        buffer: re(r"(?P<name>buf\d+)\s*=\s*empty_strided_cuda\(\s*\((?P<shape>[\d,\s]*)\)\s*,\s*\([\d,\s]*\)\s*,\s*(?P<dtype>torch\.\w+)"),
    })
}

fn first_size(res: &[Lazy], span: &str) -> Option<crate::diagnose::size::Size> {
    res.iter().find_map(|r| find_size(r, span))
}

/// The words each gated pattern requires, white space between (`super::has_words`): the
/// literal skeleton of the patterns in `res`, checked against them in the tests.
const PRIVATE_WORDS: &[&str] = &["allocated", "in", "private", "pools"];
const UNALLOCATED_WORDS: &[&str] = &["is", "reserved", "by", "PyTorch", "but", "unallocated"];
const RESERVED_TOTAL_WORDS: &[&str] = &["reserved", "in", "total"];
const CACHED_WORDS: &[&str] = &["cached", ")"];
const ALLOWED_WORDS: &[&str] = &["allowed", ";"];
/// `device`'s two patterns: the old wording's `(GPU 0; …)`, the new `GPU 0 has`.
const DEVICE_WORDS: [&[&str]; 2] = [&["(", "GPU"], &["GPU"]];

/// `find_size` for a pattern every match of which contains `words` separated by white space
/// only (`super::has_words`): a span without them cannot match, and the pattern is then not
/// even compiled (most messages print only some of the figures).
fn find_size_with(r: &Lazy, words: &[&str], span: &str) -> Option<crate::diagnose::size::Size> {
    super::has_words(span, words)
        .then(|| find_size(r, span))
        .flatten()
}

pub fn scan(n: &Normalized, m: Markers, out: &mut Vec<Report>) {
    let r = res();
    let text = &n.text;
    let anchors: Vec<_> = if super::has(text, &["Tried"]) {
        r.anchor.captures_iter(text).collect()
    } else {
        Vec::new()
    };
    for (k, c) in anchors.iter().enumerate() {
        let whole = c.get(0).expect("match");
        let at = whole.start();
        let next = anchors.get(k + 1).map(|c| c.get(0).expect("match").start());
        let end = span_end(n, at, next).max(whole.end());
        let span = &text[whole.end()..end];
        let line_start = n.lines[n.line_at(at)].start;
        let head = &text[line_start..at];
        let mut rep = Report::new(Format::Pytorch2, at);
        let layout = pytorch_version::layout_of(span);
        // The class is printed before the anchor; the anchor itself tells `RuntimeError: CUDA
        // out of memory` from an `OutOfMemoryError` of another message on the same line.
        let class_text = &text[line_start..whole.end()];
        let version = pytorch_version::judge(layout, class_text, span, text);
        rep.format = if version.all_2x() {
            Format::Pytorch2
        } else if version.all_1x() {
            Format::Pytorch1
        } else {
            wording(span, head)
        };
        rep.pytorch = Some((layout, version));
        rep.set("tried_to_allocate_bytes", cap_size(c, "v"));
        message_figures(&mut rep, r, span);
        rep.device = r
            .device
            .iter()
            .zip(DEVICE_WORDS)
            .find_map(|(d, words)| {
                super::has_words(span, words)
                    .then(|| d.captures(span))
                    .flatten()
            })
            .and_then(|c| c.name("d"))
            .map(|d| d.as_str().to_string())
            .filter(|d| !d.is_empty());
        other_processes(&mut rep, r, span);
        rep.in_vllm = m.vllm;
        infer_self(&mut rep);
        rep.tensors = inductor_buffers(n, at);
        out.push(rep);
    }
    // A bare `CUDA error: out of memory` (cudaMalloc outside the allocator, or a kernel
    // launch): PyTorch 1.x's wording, with nothing stated. llama.cpp prints it too.
    let bare = super::has(text, &["error:"]).then(|| r.bare.find_iter(text));
    for b in bare.into_iter().flatten() {
        let ctx = super::context(n, b.start(), 3, 3).to_ascii_lowercase();
        if m.ggml && ctx.contains("ggml") {
            continue;
        }
        out.push(Report::new(Format::Pytorch1, b.start()));
    }
    mps_reports(text, r, out);
}

/// The figures the message states after the requested size: capacity, free, this process,
/// allocated, private pools, reserved (the old wording's "cached"), allowed.
fn message_figures(rep: &mut Report, r: &Res, span: &str) {
    rep.set("total_capacity_bytes", first_size(&r.total, span));
    rep.set("free_bytes", first_size(&r.free, span));
    rep.set("process_in_use_bytes", first_size(&r.this_process, span));
    rep.set(
        "allocated_by_framework_bytes",
        first_size(&r.allocated, span),
    );
    rep.set(
        "private_pools_bytes",
        find_size_with(&r.private, PRIVATE_WORDS, span),
    );
    rep.set(
        "reserved_unallocated_bytes",
        find_size_with(&r.unallocated, UNALLOCATED_WORDS, span),
    );
    rep.set(
        "reserved_total_bytes",
        find_size_with(&r.reserved_total, RESERVED_TOTAL_WORDS, span),
    );
    if let Some(cached) = find_size_with(&r.cached, CACHED_WORDS, span) {
        // The old wording's "cached" is the figure later versions call "reserved in total"
        // (the JSON contract of issue 4). PyTorch 1.0–1.3 printed cached − allocated there,
        // though: when it is below what is allocated it can only be the reserved-but-
        // unallocated part, so it is that fact too, and the causes read it as such.
        let below_allocated = matches!(
            (cached.bytes, rep.facts.allocated_by_framework_bytes),
            (Some(c), Some(a)) if c < a
        );
        if below_allocated && rep.facts.reserved_unallocated_bytes.is_none() {
            rep.set("reserved_unallocated_bytes", Some(cached.clone()));
        }
        rep.set("reserved_total_bytes", Some(cached));
    }
    rep.set(
        "allowed_bytes",
        find_size_with(&r.allowed, ALLOWED_WORDS, span),
    );
}

/// The other processes the message lists, each with what it holds (a size that does not parse
/// is kept as bogus evidence).
fn other_processes(rep: &mut Report, r: &Res, span: &str) {
    if !span.contains("Process") {
        return;
    }
    for p in r.process.captures_iter(span) {
        let Some(pid) = p.name("pid").and_then(|x| x.as_str().parse().ok()) else {
            continue;
        };
        let size = cap_size(&p, "v");
        if let Some(s) = size.as_ref().filter(|s| s.bytes.is_none()) {
            rep.bogus
                .push((format!("process {pid}"), s.printed.clone()));
        }
        rep.facts.other_processes.push(OtherProcess {
            pid,
            bytes: size.and_then(|s| s.bytes),
        });
    }
}

/// Apple MPS's message: the requested, allocated, other and allowed sizes.
fn mps_reports(text: &str, r: &Res, out: &mut Vec<Report>) {
    let mps = super::has(text, &["MPS"]).then(|| r.mps.captures_iter(text));
    for c in mps.into_iter().flatten() {
        let mut rep = Report::new(Format::Pytorch2, c.get(0).map_or(0, |x| x.start()));
        rep.device = Some("mps".into());
        rep.set("tried_to_allocate_bytes", cap_size(&c, "v"));
        rep.set("allocated_by_framework_bytes", cap_size(&c, "a"));
        rep.set("other_allocations_bytes", cap_size(&c, "o"));
        rep.set("allowed_bytes", cap_size(&c, "m"));
        out.push(rep);
    }
}

/// pytorch2 or pytorch1, by wording, where the releases that could have printed the message
/// span both (see `pytorch_version`). 2.1+ writes `Tried to allocate X. GPU 0 has a total
/// capacity…`; up to 2.0 it wrote `Tried to allocate X (GPU 0; … total capacity; …)`. That
/// older wording carried on through 2.0, so it is dated by the exception class: `RuntimeError`
/// is 1.x; `OutOfMemoryError` (added in 1.13) with the full allocator hint is the 1.13–2.0
/// window, mostly 2.0. A message cut before its hint cannot be dated and stays 1.x.
fn wording(span: &str, head: &str) -> Format {
    let after = span.trim_start();
    if after.starts_with('.') || !after.starts_with('(') && !span.contains("total capacity;") {
        return Format::Pytorch2;
    }
    let oom_class = head.contains("OutOfMemoryError") && !head.contains("RuntimeError");
    if oom_class && span.contains("PYTORCH_CUDA_ALLOC_CONF") {
        Format::Pytorch2
    } else {
        Format::Pytorch1
    }
}

/// Containers hide which `Process N` is this one (PIDs differ across namespaces) and print no
/// "this process" clause. The one that holds at least what PyTorch allocated plus its cache,
/// and the least such, is this process; the rest are others.
fn infer_self(rep: &mut Report) {
    let f = &mut rep.facts;
    if f.process_in_use_bytes.is_some() || f.other_processes.is_empty() {
        return;
    }
    let Some(alloc) = f.allocated_by_framework_bytes else {
        return;
    };
    let need = alloc
        .saturating_add(f.reserved_unallocated_bytes.unwrap_or(0))
        // Two printed figures, each ± half a unit in the last place.
        .saturating_sub(crate::units::GIB / 100);
    let best = f
        .other_processes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.bytes.filter(|&b| b >= need).map(|b| (i, b)))
        .min_by_key(|&(_, b)| b);
    if let Some((i, b)) = best {
        let p = f.other_processes.remove(i);
        f.process_in_use_bytes = Some(b);
        rep.self_pid = Some(p.pid);
        rep.notes.push(format!(
            "the log names no \"this process\"; Process {} ({}) holds what PyTorch allocated \
             plus its cache, so it is taken to be this process (a container's PID namespace \
             hides the mapping)",
            p.pid,
            crate::units::human(b)
        ));
    }
}

/// Shapes that inductor's generated code was allocating on the lines just before the message.
fn inductor_buffers(n: &Normalized, at: usize) -> Vec<LogTensor> {
    let ctx = super::context(n, at, 6, 0);
    res()
        .buffer
        .captures_iter(&ctx)
        .filter_map(|c| {
            let shape = super::parse_dims(c.name("shape")?.as_str())?;
            let dtype = c.name("dtype")?.as_str();
            let bytes = shape_bytes(&shape, dtype_bytes(dtype)?)?;
            Some(LogTensor {
                name: format!("{} (inductor buffer)", c.name("name")?.as_str()),
                shape,
                dtype: dtype_short(dtype),
                bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::normalize::normalize;
    use crate::diagnose::size::parse_size;

    /// A match of each gated pattern, piece by piece, and its words.
    fn gated_matches(r: &Res) -> Vec<(&Lazy, &'static [&'static str], Vec<&'static str>)> {
        let s = "1.50 GiB";
        vec![
            (
                &r.private,
                PRIVATE_WORDS,
                vec![
                    "with",
                    " ",
                    s,
                    " ",
                    "allocated",
                    " ",
                    "in",
                    " ",
                    "private",
                    " ",
                    "pools",
                ],
            ),
            (
                &r.unallocated,
                UNALLOCATED_WORDS,
                vec![
                    s,
                    " ",
                    "is",
                    " ",
                    "reserved",
                    " ",
                    "by",
                    " ",
                    "PyTorch",
                    " ",
                    "but",
                    " ",
                    "unallocated",
                ],
            ),
            (
                &r.reserved_total,
                RESERVED_TOTAL_WORDS,
                vec![s, " ", "reserved", " ", "in", " ", "total"],
            ),
            (&r.cached, CACHED_WORDS, vec![s, " ", "cached", ")"]),
            (&r.allowed, ALLOWED_WORDS, vec![s, " ", "allowed", ";"]),
            (
                &r.device[0],
                DEVICE_WORDS[0],
                vec!["(", " ", "GPU", " ", "0", ";"],
            ),
            (
                &r.device[1],
                DEVICE_WORDS[1],
                vec!["GPU", " ", "0", " ", "has"],
            ),
        ]
    }

    #[test]
    fn each_gated_pattern_matches_its_words_written_out() {
        for (re, words, pieces) in gated_matches(res()) {
            let t = pieces.concat();
            assert!(
                re.is_match(&t) && super::super::has_words(&t, words),
                "{t:?}"
            );
        }
    }

    proptest::proptest! {
        /// A gate is a necessary condition: wherever its pattern matches, its words are there.
        /// Checked on each pattern's match with a few pieces replaced (white space of other
        /// kinds or none, other words, stray characters), which keeps to the edge of a match.
        #[test]
        fn every_gated_pattern_match_has_its_words(
            edits in proptest::collection::vec((0usize..16, 0usize..13), 0..4)
        ) {
            const OTHERS: [&str; 13] =
                ["", " ", "\u{a0}", "\n", "x", "in", "at", "GPU", "(", ")", ";", "é", "1 MiB"];
            for (re, words, mut pieces) in gated_matches(res()) {
                for &(at, with) in &edits {
                    let at = at % pieces.len();
                    pieces[at] = OTHERS[with];
                }
                let t = pieces.concat();
                if re.is_match(&t) {
                    proptest::prop_assert!(super::super::has_words(&t, words), "{:?} {:?}", words, t);
                }
            }
        }
    }

    fn one(t: &str) -> Report {
        let n = normalize(t);
        let mut out = Vec::new();
        scan(&n, Markers::default(), &mut out);
        out.remove(0)
    }

    #[test]
    fn new_wording_with_private_pools_and_gpu7() {
        let r = one("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU7 has a total capacity of 31.51 GiB of which 196.06 MiB is free. Including non-PyTorch memory, this process has 31.31 GiB memory in use. Of the allocated memory 28.34 GiB is allocated by PyTorch, with 19.83 GiB allocated in private pools (e.g., CUDA Graphs), and 2.63 GiB is reserved by PyTorch but unallocated.");
        assert_eq!(r.format, Format::Pytorch2);
        assert_eq!(r.device.as_deref(), Some("7"));
        assert_eq!(
            r.facts.private_pools_bytes,
            parse_size("19.83 GiB").unwrap().bytes
        );
        assert!(r.facts.reserved_unallocated_bytes.is_some());
    }

    #[test]
    fn old_wording_and_cached() {
        let r = one("RuntimeError: CUDA out of memory. Tried to allocate 384.00 MiB (GPU 2; 10.73 GiB total capacity; 9.59 GiB already allocated; 290.56 MiB free; 25.84 MiB cached)");
        assert_eq!(r.format, Format::Pytorch1);
        assert_eq!(r.device.as_deref(), Some("2"));
        assert_eq!(
            r.facts.reserved_unallocated_bytes,
            parse_size("25.84 MiB").unwrap().bytes
        );
        // The issue's contract: the old "cached" is the reserved-in-total figure of that wording.
        assert_eq!(
            r.facts.reserved_total_bytes,
            parse_size("25.84 MiB").unwrap().bytes
        );
    }

    #[test]
    fn bogus_in_use_is_null() {
        let r = one("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 318.00 MiB. GPU 0 has a total capacty of 6.00 GiB of which 0 bytes is free. Including non-PyTorch memory, this process has 17179869184.00 GiB memory in use. Of the allocated memory 5.00 GiB is allocated by PyTorch, and 271.88 MiB is reserved by PyTorch but unallocated.");
        assert_eq!(r.facts.process_in_use_bytes, None);
        assert_eq!(r.facts.free_bytes, Some(0));
        assert_eq!(r.bogus.len(), 1);
    }
}
