//! One scanner per family of messages. Each finds its messages anywhere in the normalised text
//! (a message can be glued to another, as when two ranks write at once) and reports what it
//! states. The diagnoser then picks the first real VRAM report as the one to explain.

mod candle;
mod jax;
mod llamacpp;
mod notvram;
mod other;
mod pytorch;
mod tensorflow;
mod vllm;

use super::normalize::Normalized;
use super::pattern::Lazy;
use super::pytorch_version::{MessageLayout, VersionRange};
use super::size::{parse_size, Size};
use super::types::{Facts, Format, Phase};
use regex::{Captures, Regex};
use std::sync::OnceLock;

/// A tensor whose shape the log itself prints (TensorFlow's `shape[…]`, XLA's `f32[…]`,
/// inductor's `empty_strided_cuda((…), …, torch.bfloat16)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
    pub bytes: u64,
}

/// What one message says.
#[derive(Debug, Clone)]
pub struct Report {
    pub format: Format,
    /// False for recognised failures that are not VRAM exhaustion (Triton shared memory, host
    /// RAM): `not_vram` then says what it is.
    pub is_oom: bool,
    /// Byte offset of the message in the normalised text.
    pub at: usize,
    pub device: Option<String>,
    pub facts: Facts,
    /// Figures too large for u64: (fact name, as printed).
    pub bogus: Vec<(String, String)>,
    /// A phase the message itself implies (llama.cpp's caller, a TensorFlow node name).
    pub phase_hint: Option<Phase>,
    pub tensors: Vec<LogTensor>,
    pub notes: Vec<String>,
    pub not_vram: Option<String>,
    /// A process line the parser took to be this process (containers hide the mapping).
    pub self_pid: Option<u64>,
    /// No runtime could be named (host RAM failures): the diagnosis says `format: null`.
    pub unnamed: bool,
    /// PyTorch's message printed inside a vLLM process.
    pub in_vllm: bool,
    /// A caching-allocator message: its layout and the releases that could have printed it.
    pub pytorch: Option<(Option<MessageLayout>, VersionRange)>,
}

impl Report {
    pub fn new(format: Format, at: usize) -> Report {
        Report {
            format,
            is_oom: true,
            at,
            device: None,
            facts: Facts::default(),
            bogus: Vec::new(),
            phase_hint: None,
            tensors: Vec::new(),
            notes: Vec::new(),
            not_vram: None,
            self_pid: None,
            unnamed: false,
            in_vllm: false,
            pytorch: None,
        }
    }

    pub fn not_vram(format: Option<Format>, at: usize, what: String) -> Report {
        let mut r = Report::new(format.unwrap_or(Format::Other), at);
        r.is_oom = false;
        r.unnamed = format.is_none();
        r.not_vram = Some(what);
        r
    }

    /// Store a printed size into a fact, recording a bogus figure instead of a wrong number.
    pub fn set(&mut self, field: &str, size: Option<Size>) {
        let Some(size) = size else { return };
        match size.bytes {
            Some(b) => set_field(&mut self.facts, field, b),
            None => self.bogus.push((field.to_string(), size.printed)),
        }
    }
}

fn set_field(f: &mut Facts, field: &str, b: u64) {
    let slot = match field {
        "tried_to_allocate_bytes" => &mut f.tried_to_allocate_bytes,
        "total_capacity_bytes" => &mut f.total_capacity_bytes,
        "free_bytes" => &mut f.free_bytes,
        "process_in_use_bytes" => &mut f.process_in_use_bytes,
        "allocated_by_framework_bytes" => &mut f.allocated_by_framework_bytes,
        "reserved_unallocated_bytes" => &mut f.reserved_unallocated_bytes,
        "reserved_total_bytes" => &mut f.reserved_total_bytes,
        "private_pools_bytes" => &mut f.private_pools_bytes,
        other => {
            f.extra.entry(other.to_string()).or_insert(b);
            return;
        }
    };
    // The first statement wins: later ones in a span belong to repeats of the message.
    if slot.is_none() {
        *slot = Some(b);
    }
}

/// Which runtimes the whole paste mentions; used to name a message that several print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Markers {
    pub vllm: bool,
    pub tensorflow: bool,
    pub jax: bool,
    pub ggml: bool,
}

impl Markers {
    fn of(text: &str) -> Markers {
        static SET: OnceLock<regex::RegexSet> = OnceLock::new();
        // ASCII case folding (`-u`): the names are ASCII, and Unicode folding is most of the
        // set's compile time (see `pattern`).
        let set = SET.get_or_init(|| {
            regex::RegexSet::new([
                r"(?i-u)vllm",
                // `stream_executor` and `_bfc` are XLA's as much as TensorFlow's: not markers.
                r"(?i-u)tensorflow|/job:localhost",
                r"(?i-u)jax|xla_extension|pjrt",
                // Every llama.cpp failure path prints a ggml_ function; `llama_` alone also
                // matches PyTorch projects (llama_recipes).
                r"(?i-u)ggml",
            ])
            .expect("static regex set")
        });
        let m = set.matches(text);
        Markers {
            vllm: m.matched(0),
            tensorflow: m.matched(1),
            jax: m.matched(2),
            ggml: m.matched(3),
        }
    }
}

/// A cheap gate before a regex scans a whole megabyte: does the text contain any of these
/// literals at all? memchr's SIMD substring search (optimised in debug builds too, as every
/// dependency is, unlike `str::contains`), one pass per literal: a regex over the escaped
/// literals gave the same answer but cost its compile time, 20-50 µs a gate on every run. A
/// needle written `\bword\b` must stand as a word (ASCII `\b`, as the patterns' own), for a
/// literal that also occurs inside a longer word: `MemoryError` in `OutOfMemoryError`.
pub fn has(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(
        |n| match n.strip_prefix(r"\b").and_then(|w| w.strip_suffix(r"\b")) {
            Some(word) => has_word(text, word),
            None => memchr::memmem::find(text.as_bytes(), n.as_bytes()).is_some(),
        },
    )
}

/// Whether `words` occur in `text` one after another with nothing but white space between
/// them (any amount, none included): the literal skeleton of a pattern written `a\s*b\s*c`
/// (`\s` and `trim_start` both take Unicode's White_Space), so a text without it cannot
/// match the pattern, which is then not even compiled.
pub fn has_words(text: &str, words: &[&str]) -> bool {
    debug_assert!(words.iter().all(|w| !w.is_empty()), "an empty word");
    let Some((first, rest)) = words.split_first() else {
        return true;
    };
    let rest_follows = |mut t: &str| {
        rest.iter().all(|w| match t.trim_start().strip_prefix(w) {
            Some(after) => {
                t = after;
                true
            }
            None => false,
        })
    };
    // Every occurrence of the first word, overlapping ones included (`find_iter` skips them).
    let finder = memchr::memmem::Finder::new(first.as_bytes());
    let mut from = 0;
    while let Some(i) = finder.find(&text.as_bytes()[from..]).map(|i| from + i) {
        if rest_follows(&text[i + first.len()..]) {
            return true;
        }
        from = i + 1;
    }
    false
}

/// `word` somewhere with no ASCII word character on either side.
fn has_word(text: &str, word: &str) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    memchr::memmem::find_iter(bytes, word.as_bytes()).any(|i| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + word.len()).copied();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Compile a static pattern, substituting `SIZE` with the printed-size fragment.
pub fn re(pattern: &str) -> Lazy {
    Lazy::new(pattern.replace("SIZE", super::size::SIZE))
}

/// The printed size in capture group `name`.
pub fn cap_size(c: &Captures<'_>, name: &str) -> Option<Size> {
    c.name(name).and_then(|m| parse_size(m.as_str()))
}

/// The first capture of `re` in `span`, as a size in group `v`.
pub fn find_size(re: &Regex, span: &str) -> Option<Size> {
    re.captures(span).and_then(|c| cap_size(&c, "v"))
}

/// Parse `4096,128,3` or `32, 12, 512` into dims; `None` if any is not a number.
pub fn parse_dims(s: &str) -> Option<Vec<u64>> {
    let s = s.trim();
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|d| d.trim().parse().ok()).collect()
}

/// Every report in the paste, in text order. Markers are read from the `raw` paste: the
/// prefixes normalisation strips (`[vllm]`, glog paths) are where runtimes name themselves.
pub fn scan(raw: &str, n: &Normalized) -> Vec<Report> {
    let m = Markers::of(raw);
    let mut out = Vec::new();
    pytorch::scan(n, m, &mut out);
    jax::scan(n, m, &mut out);
    tensorflow::scan(n, m, &mut out);
    candle::scan(n, &mut out);
    llamacpp::scan(n, m, &mut out);
    vllm::scan(n, m, &mut out);
    other::scan(n, m, &mut out);
    notvram::scan(n, &mut out);
    out.sort_by_key(|r| r.at);
    out
}

/// The end of the message starting at `at`: the end of its logical line, or the start of the
/// next message glued onto it, whichever is first.
pub fn span_end(n: &Normalized, at: usize, next_anchor: Option<usize>) -> usize {
    let end = n.line_end(n.line_at(at));
    match next_anchor {
        Some(a) if a > at && a < end => a,
        _ => end,
    }
}

/// The logical lines around a message, for format-specific context (`before`, `after` lines).
pub fn context(n: &Normalized, at: usize, before: usize, after: usize) -> String {
    let i = n.line_at(at);
    let stream = n.lines.get(i).map_or(0, |l| l.stream);
    let lo = i.saturating_sub(before);
    let hi = (i + after + 1).min(n.lines.len());
    n.lines[lo..hi]
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::{has, has_words};

    #[test]
    fn words_follow_each_other_across_white_space_only() {
        assert!(has_words(
            "2.00 GiB reserved in  total by",
            &["reserved", "in", "total"]
        ));
        assert!(has_words(
            "reserved\u{a0}in\ntotal",
            &["reserved", "in", "total"]
        ));
        assert!(has_words("reservedintotal", &["reserved", "in", "total"]));
        assert!(!has_words(
            "reserved by PyTorch in total",
            &["reserved", "in", "total"]
        ));
        // The first word may overlap an earlier occurrence of itself.
        assert!(has_words("aaab", &["aa", "b"]));
        assert!(has_words("(x (GPU 0;", &["(", "GPU"]));
        assert!(!has_words("", &["GPU"]));
        assert!(has_words("anything", &[]));
    }

    #[test]
    fn a_gate_opens_on_any_of_its_literals_anywhere() {
        let text =
            "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 6.14 GiB";
        assert!(has(text, &["Tried"]));
        assert!(has(text, &["cudaMalloc", "allocate 6"]));
        // Literal, case-sensitive, and no literal means no match.
        assert!(!has(text, &["tried", "Tried  to"]));
        assert!(!has(text, &[]));
        // Regex metacharacters are plain bytes.
        assert!(has("oom-kill -9", &["oom-kill", "x.y"]));
        assert!(!has("oomXkill", &["oom.kill"]));
    }

    #[test]
    fn a_word_needle_opens_only_on_the_word_standing_alone() {
        let word = [r"\bMemoryError\b"];
        assert!(has("MemoryError", &word));
        assert!(has("raise MemoryError: out of RAM", &word));
        assert!(has("torch.OutOfMemoryError: ... then (MemoryError)", &word));
        assert!(!has("torch.OutOfMemoryError: CUDA out of memory", &word));
        assert!(!has("MemoryErrors _MemoryError", &word));
        // The patterns' own ASCII \b agrees on each.
        let rule = regex::Regex::new(r"(?-u:\b)MemoryError(?-u:\b)").unwrap();
        for t in [
            "MemoryError",
            "x OutOfMemoryError y",
            "MemoryError_",
            "(MemoryError)",
        ] {
            assert_eq!(has(t, &word), rule.is_match(t), "{t}");
        }
    }
}
