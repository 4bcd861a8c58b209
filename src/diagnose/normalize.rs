//! Turn pasted text into clean logical lines before any format is matched.
//!
//! Real pastes carry ANSI colours, CRLF, `\r` progress bars, markdown bold and quote marks,
//! per-line prefixes (torchrun `[rank3]:`, docker-compose `svc-1  | `, vLLM `(Worker pid=1)`,
//! glog/absl/vLLM logger headers, ISO timestamps) and breaks made at a fixed width: a terminal's
//! cut anywhere, even inside a number or a word, a web page's break between words (the width is
//! read off the paste, see [`super::wrap`]). The format parsers are written against the
//! result: one logical line per message, prefixes gone, lines of one stream (rank, container,
//! worker) kept together so that interleaved ranks do not splice into each other.

use super::pattern::Lazy;
use super::wrap::{self, Join, Wrap};
use std::sync::OnceLock;

/// A logical line: one or more physical lines rejoined.
#[derive(Debug, Clone)]
pub struct Line {
    /// Index of its first physical line in the paste (the original order across streams).
    pub idx: usize,
    /// Which stream (rank, container, worker) it came from; 0 is "no prefix".
    pub stream: usize,
    /// Byte offset of the line in [`Normalized::text`].
    pub start: usize,
    /// The text, without prefix and without its newline.
    pub text: String,
}

/// The cleaned paste: `text` holds every logical line followed by `\n`, grouped by stream
/// (streams in order of first appearance, lines in paste order within a stream).
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    pub text: String,
    pub lines: Vec<Line>,
}

impl Normalized {
    /// The logical line that contains byte offset `pos` of `text`.
    pub fn line_at(&self, pos: usize) -> usize {
        match self.lines.binary_search_by(|l| l.start.cmp(&pos)) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// End (exclusive) of the logical line starting at `lines[i]`, without its newline.
    pub fn line_end(&self, i: usize) -> usize {
        self.lines
            .get(i)
            .map(|l| l.start + l.text.len())
            .unwrap_or(self.text.len())
    }
}

struct Res {
    ansi: Lazy,
    sgr_without_esc: Lazy,
    control: Lazy,
    cr: Lazy,
    bold: Lazy,
    stream: Lazy,
    compose: Lazy,
    record: Lazy,
    unit_end: Lazy,
}

/// The `[31m` of an SGR sequence whose ESC byte a paste dropped.
const SGR_WITHOUT_ESC: &str = r"\[(?:\d{1,3};){0,4}\d{1,3}m";

fn res() -> &'static Res {
    static R: OnceLock<Res> = OnceLock::new();
    R.get_or_init(|| {
        let r = super::pattern::Lazy::new;
        Res {
            // CSI and OSC sequences, a lone ESC, and the `[31m` that is left when a paste
            // dropped the ESC byte.
            ansi: r(format!(
                r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b|{SGR_WITHOUT_ESC}"
            ).as_str()),
            sgr_without_esc: r(SGR_WITHOUT_ESC),
            control: r(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"),
            cr: r(r"\r\n?"),
            bold: r(r"\*\*"),
            // Stream prefixes: the key (a, b or c) says which process the line came from.
            stream: r(concat!(
                r"^(?:\[(?P<a>rank\d+|default\d+)\]:|\[\d+,\s*(?P<b>\d+)\]<std(?:out|err)>:",
                r"|\((?P<c>[A-Za-z_][\w-]*(?:\s+rank=\d+)?\s+pid=\d+)\)|\[vllm\]",
                // srun --label: `3: ` at the very start (Rust backtraces are indented).
                r"|(?P<d>\d{1,4}):(?: |$))[ \t]?"
            )),
            // docker-compose pads the service name and adds ` | `; only at the very start.
            compose: r(r"^([a-z0-9][\w.-]*)[ \t]+\|[ \t]?"),
            // Record prefixes (one alternation, tried once per round): a logger or timestamp
            // header starts a new record, so a line carrying one never continues a wrap.
            record: r(concat!(
                // ISO date-time, optionally bracketed, optionally followed by ` | `.
                r"^(?:\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\]?:?[ \t]*(?:\|[ \t]*)?",
                // vLLM: `ERROR 11-18 18:07:28 engine.py:366] ` or `[file.py:962] `.
                r"|(?:INFO|WARNING|WARN|ERROR|DEBUG|CRITICAL|FATAL)[ \t]+\d\d-\d\d[ \t]+\d\d:\d\d:\d\d(?:\.\d+)?[ \t]+\[?[^\]\s]+:\d+\][ \t]?",
                // `ERROR | stderr | ` after a timestamp (FastChat-style loggers).
                r"|(?:INFO|WARNING|WARN|ERROR|DEBUG|CRITICAL|FATAL)[ \t]*\|[ \t]*(?:[\w.]+[ \t]*\|[ \t]*)?",
                // DeepSpeed: `[INFO] [logging.py:96:log_dist] `.
                r"|\[(?:INFO|WARNING|WARN|ERROR|DEBUG|CRITICAL)\][ \t]*(?:\[[^\]]*\][ \t]*)?",
                // glog/absl: `W0217 08:19:10.679000 140475426195264 file.py:851] `.
                r"|[IWEF]\d{4}[ \t]+\d\d:\d\d:\d\d\.\d+[ \t]+\d+[ \t]+[^\s\]]+:\d+\][ \t]?",
                // Old TensorFlow glog without time: `E c:\\...\\cuda_blas.cc:372] `.
                r"|[IWEF][ \t]+[^\s\]]+:\d+\][ \t]?",
                // llama.cpp: `1.06.520.077 E `.
                r"|\d+\.\d\d\.\d\d\d\.\d\d\d[ \t]+[IWEDT][ \t]",
                // A bare clock time.
                r"|\[?\d\d:\d\d:\d\d(?:[.,]\d+)?\]?[ \t])"
            )),
            unit_end: r(r"\d[ \t]*(?:[KMGT]i?B|bytes)$"),
        }
    })
}

/// Physical line after cleaning: prefix removed, stream key and whether a record header was seen.
struct Phys<'a> {
    stream_key: &'a str,
    record: bool,
    text: &'a str,
    /// Width as displayed (before prefix removal): what a terminal wrapped on.
    width: usize,
}

fn strip_prefixes(line: &str) -> Phys<'_> {
    let r = res();
    let width = line.chars().count();
    let mut t = line;
    let mut key = "";
    let mut record = false;
    // Markdown quotes from issue threads.
    while let Some(rest) = t.strip_prefix("> ").or_else(|| t.strip_prefix(">\t")) {
        t = rest;
    }
    // Cheap first-byte tests keep a megabyte of ordinary log lines off the regexes.
    let first = |t: &str| t.as_bytes().first().copied().unwrap_or(b' ');
    if first(t).is_ascii_lowercase() || first(t).is_ascii_digit() {
        if let Some(c) = t.contains(" |").then(|| r.compose.captures(t)).flatten() {
            let name = c.get(1).map_or("", |m| m.as_str());
            // A bare number or a logger level before a pipe is a table, not a compose service.
            if name.chars().any(|ch| ch.is_ascii_lowercase()) {
                key = name;
                t = &t[c.get(0).map_or(0, |m| m.end())..];
            }
        }
    }
    // Prefixes nest (compose → vLLM process → logger); a few rounds strip them all.
    for _ in 0..6 {
        let before = t.len();
        if matches!(first(t), b'[' | b'(' | b'0'..=b'9') {
            if let Some(c) = r.stream.captures(t) {
                if let Some(k) = ["a", "b", "c", "d"].iter().find_map(|g| c.name(g)) {
                    key = k.as_str();
                }
                t = &t[c.get(0).map_or(0, |m| m.end())..];
            }
        }
        if may_start_record(t) {
            if let Some(m) = r.record.find(t).filter(|m| m.end() > 0) {
                record = true;
                t = &t[m.end()..];
            }
        }
        if t.len() == before {
            break;
        }
    }
    Phys {
        stream_key: key,
        record,
        text: t,
        width,
    }
}

/// Characters that are noise in any log: ANSI codes, markdown bold, control bytes.
fn clean(input: &str) -> String {
    let r = res();
    // Each pass only when its bytes are there (regex is_match: fast even in a debug build).
    // Without an ESC byte only `ansi`'s last alternative can match, so that alternative alone
    // removes the same spans and spares `ansi`'s compile time (memchr, like regex, is
    // optimised in debug builds too).
    let has_esc = memchr::memchr(0x1b, input.as_bytes()).is_some();
    let ansi = if has_esc { &r.ansi } else { &r.sgr_without_esc };
    // Without an ESC, a match needs `[` then a digit (SGR_WITHOUT_ESC).
    let bytes = input.as_bytes();
    let may_match = has_esc
        || memchr::memchr_iter(b'[', bytes)
            .any(|i| bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
    let mut s = if may_match && ansi.is_match(input) {
        ansi.replace_all(input, "").into_owned()
    } else {
        input.to_string()
    };
    // No `\r`, no compile of `cr`.
    if memchr::memchr(b'\r', s.as_bytes()).is_some() && r.cr.is_match(&s) {
        s = r.cr.replace_all(&s, "\n").into_owned();
    }
    if r.bold.is_match(&s) {
        s = r.bold.replace_all(&s, "").into_owned();
    }
    if r.control.is_match(&s) {
        s = r.control.replace_all(&s, "").into_owned();
    }
    s
}

/// The logger levels `record` spells out (`WARN` covers `WARNING`).
const LEVELS: [&str; 6] = ["INFO", "WARN", "ERROR", "DEBUG", "CRITICAL", "FATAL"];

/// Whether `record` can match at the start of `t`: each of its alternatives begins with a
/// digit or `[`, a logger level, or a glog letter (`IWEF`) followed by a digit, a space or a
/// tab. A line that starts otherwise (most lines: `Traceback`, `RuntimeError: …`) never
/// reaches the pattern, which spares its compile time (about half a millisecond) on logs
/// without headers.
fn may_start_record(t: &str) -> bool {
    let b = t.as_bytes();
    match b.first() {
        Some(b'[' | b'0'..=b'9') => true,
        Some(b'I' | b'W' | b'E' | b'F') if matches!(b.get(1), Some(b'0'..=b'9' | b' ' | b'\t')) => {
            true
        }
        Some(_) => LEVELS.iter().any(|l| t.starts_with(l)),
        None => false,
    }
}

/// Is `next` (a physical line) the continuation of a wrapped line of width `prev_width`, and
/// how is it joined? With the paste's wrap width known, by the arithmetic of the break
/// ([`wrap::broken_before`]); else by the look of the lines: wraps happen at 80–150 columns,
/// a word-boundary wrap ends a little short of the limit.
fn continues(
    wrap: Option<Wrap>,
    prev_width: usize,
    prev_text: &str,
    next: &Phys<'_>,
) -> Option<Join> {
    if next.record || prev_text.is_empty() || next.text.is_empty() {
        return None;
    }
    // Indented lines are code and frames; a cut that lands on a space leaves just one.
    let plain = !next.text.starts_with("  ")
        && !next.text.starts_with('\t')
        && !super::structural::begins_something(next.text.trim_start());
    if let Some(join) =
        wrap.and_then(|w| wrap::broken_before(w, prev_width, prev_text, next.text, plain))
    {
        return Some(join);
    }
    (prev_width >= 60 && plain).then_some(Join::Glue)
}

/// Does the join put back a space the break dropped? Always at a word break; at a break of
/// unknown kind, only after a printed size (`39.59 GiB` / `of which`): a unit is a whole word,
/// so letters after it start the next one.
fn needs_space(join: Join, prev: &str, next: &str) -> bool {
    if next.starts_with([' ', '\t']) || prev.ends_with([' ', '\t']) {
        return false;
    }
    join == Join::Space
        || next.starts_with(|c: char| c.is_ascii_alphabetic()) && res().unit_end.is_match(prev)
}

/// Clean, strip prefixes, rejoin wraps, group by stream.
pub fn normalize(input: &str) -> Normalized {
    let cleaned = clean(input);
    // Code fences from markdown pastes are not lines the page broke.
    let wrap = wrap::detect(
        cleaned
            .split('\n')
            .filter(|l| !l.trim_start().starts_with("```")),
    );
    let mut keys: Vec<String> = vec![String::new()];
    // Per stream: logical lines under construction, each with the width of its last piece.
    let mut per_stream: Vec<Vec<(Line, usize)>> = vec![Vec::new()];
    let mut last_stream = 0;
    for (idx, raw) in cleaned.split('\n').enumerate() {
        // Code fences from markdown pastes carry nothing.
        if raw.trim_start().starts_with("```") {
            continue;
        }
        let p = strip_prefixes(raw);
        let mut sid = match keys.iter().position(|k| k == p.stream_key) {
            Some(i) => i,
            None => {
                keys.push(p.stream_key.to_string());
                per_stream.push(Vec::new());
                keys.len() - 1
            }
        };
        // A terminal wraps after docker-compose or torchrun added the prefix: the wrapped
        // remainder has none, and belongs to the stream of the line it continues.
        if sid == 0 && !p.record && last_stream != 0 {
            if let Some((last, width)) = per_stream[last_stream].last() {
                if continues(wrap, *width, &last.text, &p).is_some() {
                    sid = last_stream;
                }
            }
        }
        last_stream = sid;
        let lines = &mut per_stream[sid];
        if let Some((last, width)) = lines.last_mut() {
            if let Some(join) = continues(wrap, *width, &last.text, &p) {
                if needs_space(join, &last.text, p.text) {
                    last.text.push(' ');
                }
                last.text.push_str(p.text);
                *width = p.width;
                continue;
            }
        }
        lines.push((
            Line {
                idx,
                stream: sid,
                start: 0,
                text: p.text.to_string(),
            },
            p.width,
        ));
    }
    let mut out = Normalized {
        text: String::with_capacity(cleaned.len()),
        lines: Vec::new(),
    };
    for stream in per_stream {
        for (mut line, _) in stream {
            line.start = out.text.len();
            out.text.push_str(&line.text);
            out.text.push('\n');
            out.lines.push(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// `may_start_record` is a necessary condition of `record`: checked on a header of each
        /// kind the pattern knows with a few pieces replaced (so near the edge of a match).
        #[test]
        fn every_record_header_passes_the_gate(
            kind in 0usize..8,
            edits in proptest::collection::vec((0usize..12, 0usize..14), 0..4)
        ) {
            const HEADERS: [&[&str]; 8] = [
                &["[", "2024-03-01", "T", "12:30:45", ".123", "Z", "]", " ", "|", " "],
                &["ERROR", " ", "11-18", " ", "18:07:28", " ", "engine.py:366", "]", " "],
                &["WARNING", " ", "|", " ", "stderr", " ", "|", " "],
                &["[", "INFO", "]", " ", "[logging.py:96:log_dist]", " "],
                &["W", "0217", " ", "08:19:10", ".679000", " ", "140475426195264", " ", "file.py:851", "]"],
                &["E", " ", "c:\\cuda_blas.cc:372", "]", " "],
                &["1", ".06", ".520", ".077", " ", "E", " "],
                &["[", "12:30:45", "]", " "],
            ];
            const OTHERS: [&str; 14] =
                ["", " ", "\t", "x", "[", "I", "F", "INFO", "FATAL", "7", "é", "|", ":", "]"];
            let mut pieces = HEADERS[kind].to_vec();
            for &(at, with) in &edits {
                let at = at % pieces.len();
                pieces[at] = OTHERS[with];
            }
            let t = pieces.concat();
            let header = res().record.find(&t).filter(|m| m.end() > 0);
            if header.is_some() {
                proptest::prop_assert!(may_start_record(&t), "{:?}", t);
            }
        }
    }

    #[test]
    fn the_record_gate_opens_on_each_header_kind_and_not_on_plain_lines() {
        for t in [
            "[2024-03-01T12:30:45Z] x",
            "ERROR 11-18 18:07:28 engine.py:366] x",
            "WARNING | stderr | x",
            "[INFO] [logging.py:96:log_dist] x",
            "W0217 08:19:10.679 1 file.py:851] x",
            "E c:\\cuda_blas.cc:372] x",
            "1.06.520.077 E x",
            "12:30:45 x",
            "INFO 11-18 18:07:28 engine.py:366] x",
            "WARN | x",
            "DEBUG | x",
            "CRITICAL | x",
            "FATAL | x",
        ] {
            assert!(res().record.find(t).is_some_and(|m| m.end() > 0), "{t:?}");
            assert!(may_start_record(t), "{t:?}");
        }
        for t in [
            "Traceback (most recent call last):",
            "RuntimeError: x",
            "Ix",
            "torch.x",
            "",
        ] {
            assert!(!may_start_record(t), "{t:?}");
        }
    }

    #[test]
    fn strips_prefixes_and_colours() {
        let n = normalize("\x1b[31m[rank0]: torch.OutOfMemoryError: x\x1b[0m\r\nvllm-1  | ERROR 11-18 18:07:28 engine.py:366] ValueError: y\n");
        let texts: Vec<&str> = n
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(texts, ["torch.OutOfMemoryError: x", "ValueError: y"]);
    }

    #[test]
    fn colours_go_with_or_without_their_esc_byte() {
        // With ESC bytes the whole `ansi` pattern runs, bare `[0m` included.
        assert_eq!(
            clean("\x1b[31mred\x1b[0m [1;32mgreen[0m\x1b]0;t\x07."),
            "red green."
        );
        // Without any, only the bare form is removed; `[12]` and `[1;2]x` are not colours.
        assert_eq!(clean("[1;31mOOM[0m at [12] [1;2]x"), "OOM at [12] [1;2]x");
        assert_eq!(clean("a\r\nb\rc"), "a\nb\nc");
    }

    #[test]
    fn rejoins_a_wrap_inside_a_number() {
        let a = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 6.1";
        let text = format!(
            "{a}{}\n4 GiB. GPU 0 has a total capacity of 11.69 GiB\n",
            " ".repeat(0)
        );
        // The first piece is < 60 columns, so pad it the way a terminal at 80 would wrap.
        let padded = text.replace("Tried", "Tried           ");
        let n = normalize(&padded);
        assert!(n.lines[0].text.contains("6.14 GiB. GPU 0"), "{:?}", n.lines);
    }

    #[test]
    fn interleaved_ranks_stay_apart() {
        let long = "x".repeat(70);
        let t = format!("[rank0]: a {long}\n[rank1]: b {long}\n[rank0]: tail0\n[rank1]: tail1\n");
        let n = normalize(&t);
        let texts: Vec<&str> = n
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        assert!(
            texts[0].ends_with("tail0") && texts[1].ends_with("tail1"),
            "{texts:?}"
        );
    }
}
