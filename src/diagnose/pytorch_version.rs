//! Which PyTorch printed a caching-allocator message, as a range of releases, from everything
//! the paste shows: the message's layout, the exception class, the clauses, the traceback.
//!
//! What dates what (PyTorch's `c10/cuda/CUDACachingAllocator.cpp`, `malloc`'s OOM branch, and
//! the release notes; recalled from them, not re-read from the source in this change):
//! - the layout `Tried to allocate X (GPU 0; T total capacity; A already allocated; F free;
//!   R reserved in total by PyTorch)` was printed from 1.x through 2.0; 2.1 rewrote the message
//!   as sentences (`Tried to allocate X. GPU 0 has a total capacity of T of which F is free.
//!   … this process has …`), and only that rewrite lists other processes
//!   (`Process N has X memory in use`, read through NVML);
//! - 1.0–1.3 ended the old layout with `X cached)` (the counter later renamed "reserved");
//! - up to 1.12 the error was a plain `RuntimeError`; 1.13 added `torch.cuda.OutOfMemoryError`
//!   (`THPException_OutOfMemoryError` in `torch/csrc/Exceptions.cpp`), which 2.5 made the
//!   device-generic `torch.OutOfMemoryError` (`torch.cuda.OutOfMemoryError` is now its alias,
//!   and a traceback prints the class's own name, `torch.OutOfMemoryError`);
//! - `torch/_dynamo` and `torch/_inductor` ship inside PyTorch from 2.0 (torch.compile).
//!
//! The layout is the firmest evidence (it is the allocator's own text); the class is the
//! weakest (a wrapper can catch the error and raise another). Evidence that contradicts what
//! is already known is left out and said so.

use super::pattern::Lazy;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::OnceLock;

/// A PyTorch release, major.minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u8, pub u8);

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

const FIRST: Release = Release(1, 0);
const LAST_1X: Release = Release(1, 12);

/// The shape of the allocator's message, which `format` reports it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageLayout {
    /// `Tried to allocate X (GPU 0; … total capacity; …)`: PyTorch 1.x through 2.0.
    Parenthesised,
    /// `Tried to allocate X. GPU 0 has a total capacity of …`: PyTorch 2.1 and later.
    Sentences,
}

impl MessageLayout {
    /// What a person would call it in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            MessageLayout::Parenthesised => {
                "the `(GPU N; … total capacity; …)` layout of PyTorch 1.x–2.0"
            }
            MessageLayout::Sentences => {
                "the `GPU N has a total capacity of …` layout of PyTorch 2.1+"
            }
        }
    }

    fn releases(self) -> (Release, Option<Release>) {
        match self {
            MessageLayout::Parenthesised => (FIRST, Some(Release(2, 0))),
            MessageLayout::Sentences => (Release(2, 1), None),
        }
    }
}

/// The releases that could have printed the message, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    /// The earliest release, `1.13`.
    pub from: String,
    /// The latest release, `2.0`; null when every release since `from` could have.
    pub to: Option<String>,
    /// What dated it, one clause a piece of evidence.
    pub evidence: Vec<String>,
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.to {
            Some(to) if *to == self.from => write!(f, "{to}"),
            Some(to) => write!(f, "{}–{to}", self.from),
            None => write!(f, "≥{}", self.from),
        }
    }
}

struct Res {
    class: Lazy,
    runtime_error: Lazy,
    cached: Lazy,
    process: Lazy,
}

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| {
        let r = super::pattern::Lazy::new;
        Res {
            class: r(r"(?P<module>torch\.cuda\.|torch\.)?OutOfMemoryError\b"),
            runtime_error: r(r"RuntimeError:\s*(?:CUDA|HIP)\s*out\s*of\s*memory"),
            cached: r(r"cached\s*\)"),
            process: r(r"Process\s*\d+\s*has\s*[\d.]+\s*\w+\s*memory\s*in\s*use"),
        }
    })
}

/// Does the paste have a `torch/_dynamo/` or `torch/_inductor/` path (either slash)? By hand
/// rather than by regex: the regex's compile cost more than scanning a whole paste for `torch`.
fn runs_through_compile(paste: &str) -> bool {
    let bytes = paste.as_bytes();
    let slash = |b: Option<&u8>| matches!(b, Some(b'/' | b'\\'));
    memchr::memmem::find_iter(bytes, b"torch").any(|at| {
        let rest = &bytes[at + "torch".len()..];
        slash(rest.first())
            && ["_dynamo", "_inductor"]
                .iter()
                .any(|dir| rest[1..].starts_with(dir.as_bytes()) && slash(rest.get(1 + dir.len())))
    })
}

/// The layout of the message after `Tried to allocate X`; `None` when the paste cut it there.
pub fn layout_of(span: &str) -> Option<MessageLayout> {
    let after = span.trim_start();
    if after.starts_with('(') || span.contains("total capacity;") {
        Some(MessageLayout::Parenthesised)
    } else if after.starts_with('.') && after.len() > 1 || span.contains("has a total capac") {
        Some(MessageLayout::Sentences)
    } else {
        None
    }
}

/// Date a caching-allocator message. `head` is its line up to `CUDA out of memory` (where the
/// exception class is printed), `span` the message after `Tried to allocate X`, `paste` the
/// whole normalised paste (its traceback).
pub fn judge(layout: Option<MessageLayout>, head: &str, span: &str, paste: &str) -> VersionRange {
    let r = res();
    let mut range = Builder {
        lo: FIRST,
        hi: None,
        evidence: Vec::new(),
    };
    if let Some(layout) = layout {
        let (lo, hi) = layout.releases();
        let span = if hi.is_some() { "1.x–2.0" } else { "2.1+" };
        range.narrow(lo, hi, &format!("the layout: {span}"));
    }
    // Each pattern runs (and is compiled) only where its words are: `formats::has_words`.
    let cached = super::formats::has_words(span, &["cached", ")"]) && r.cached.is_match(span);
    if layout == Some(MessageLayout::Parenthesised) && cached {
        range.narrow(
            FIRST,
            Some(Release(1, 3)),
            "it ends with `X cached)`: 1.0–1.3",
        );
    }
    if span.contains("Process") && r.process.is_match(span) {
        range.narrow(
            Release(2, 1),
            None,
            "it lists other processes (`Process N has … memory in use`): 2.1+",
        );
    }
    if runs_through_compile(paste) {
        range.narrow(
            Release(2, 0),
            None,
            "the traceback runs through torch/_dynamo or torch/_inductor: 2.0+",
        );
    }
    // The class on the message's own line first; else the first one the paste names.
    let class_in = |text: &str| -> Option<(Release, Option<Release>, &'static str)> {
        if r.runtime_error.is_match(text) {
            return Some((
                FIRST,
                Some(LAST_1X),
                "the error is a RuntimeError (torch.cuda.OutOfMemoryError is new in 1.13): ≤1.12",
            ));
        }
        let c = r.class.captures(text)?;
        Some(match c.name("module").map(|m| m.as_str()) {
            Some("torch.cuda.") => (
                Release(1, 13),
                Some(Release(2, 4)),
                "the class prints as torch.cuda.OutOfMemoryError: 1.13–2.4",
            ),
            Some(_) => (
                Release(2, 5),
                None,
                "the class prints as torch.OutOfMemoryError: 2.5+",
            ),
            None => (
                Release(1, 13),
                None,
                "the error is an OutOfMemoryError (new in 1.13): 1.13+",
            ),
        })
    };
    if let Some((lo, hi, why)) = class_in(head).or_else(|| class_in(paste)) {
        range.narrow(lo, hi, why);
    }
    range.done()
}

struct Builder {
    lo: Release,
    hi: Option<Release>,
    evidence: Vec<String>,
}

impl Builder {
    /// Intersect with [lo, hi], unless that leaves nothing: then the evidence is set aside.
    fn narrow(&mut self, lo: Release, hi: Option<Release>, why: &str) {
        let new_lo = self.lo.max(lo);
        let new_hi = match (self.hi, hi) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if new_hi.is_some_and(|h| h < new_lo) {
            self.evidence
                .push(format!("{why} — contradicts the rest, set aside"));
            return;
        }
        self.lo = new_lo;
        self.hi = new_hi;
        self.evidence.push(why.to_string());
    }

    fn done(self) -> VersionRange {
        VersionRange {
            from: self.lo.to_string(),
            to: self.hi.map(|h| h.to_string()),
            evidence: self.evidence,
        }
    }
}

impl VersionRange {
    /// True when every release in the range is a 1.x release.
    pub fn all_1x(&self) -> bool {
        self.to.as_deref().is_some_and(|t| t.starts_with("1."))
    }

    /// True when every release in the range is 2.0 or later.
    pub fn all_2x(&self) -> bool {
        !self.from.starts_with("1.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compile_stack_is_a_torch_dynamo_or_inductor_directory() {
        assert!(runs_through_compile(
            "File \"/x/torch/_dynamo/eval_frame.py\", line 1"
        ));
        assert!(runs_through_compile(r"C:\py\torch\_inductor\compile_fx.py"));
        assert!(runs_through_compile("torchvision torch/_inductor/x"));
        // The directory must be whole, under torch, and followed by a slash.
        assert!(!runs_through_compile(
            "torch._dynamo hit config.cache_size_limit"
        ));
        assert!(!runs_through_compile(
            "/x/torch/_dynamo_utils.py torch/_inductor"
        ));
        assert!(!runs_through_compile("torch/ _dynamo/ torch/_dynamo"));
        // As the regex it replaces, `torch` needs no word boundary before it.
        assert!(runs_through_compile("functorch/_dynamo/"));
    }

    #[test]
    fn the_old_layout_with_the_new_class_is_the_13_to_20_window() {
        let v = judge(
            Some(MessageLayout::Parenthesised),
            "torch.cuda.OutOfMemoryError: CUDA out of memory.",
            "(GPU 0; 79.15 GiB total capacity; …)",
            "",
        );
        assert_eq!(v.to_string(), "1.13–2.0");
    }

    #[test]
    fn a_contradiction_is_set_aside_and_said() {
        // A wrapper re-raised 2.1's message as a RuntimeError.
        let v = judge(
            Some(MessageLayout::Sentences),
            "RuntimeError: CUDA out of memory.",
            ". GPU 0 has a total capacity of …",
            "",
        );
        assert_eq!(v.to_string(), "≥2.1");
        assert!(v.evidence.iter().any(|e| e.contains("set aside")));
    }
}
