//! Lines that begin something new — a traceback, a frame, an exception, a log header — and
//! so never continue a line the terminal wrapped (`normalize::continues`). Written out by hand
//! rather than as one regex: the alternation (an identifier ending in `Error`, a word boundary,
//! a dozen literals) cost 0.3–0.4 ms to compile on every `diagnose` run, more than the rest of
//! the seed log's diagnosis outside the pattern compiles. The test below holds it to that
//! regex on every line of the OOM fixtures and on generated lines.

/// What a structural line may start with, literally.
const LITERALS: [&str; 12] = [
    "Traceback (most recent",
    "During handling",
    "The above exception",
    "File ",
    "[[",
    "Hint:",
    "note:",
    "thread '",
    "stack backtrace",
    "Error:",
    "$ ",
    ">>>",
];

/// The endings that make an identifier an exception class (`ValueError`, `StopIteration` is
/// not one: a class must end in one of these).
const CLASS_ENDINGS: [&str; 6] = [
    "Error",
    "Exception",
    "Exhausted",
    "Warning",
    "Exit",
    "Interrupt",
];

/// Whether `t` (a line, its indentation removed) begins something new.
pub fn begins_something(t: &str) -> bool {
    let b = t.as_bytes();
    LITERALS.iter().any(|l| t.starts_with(l))
        || t.strip_prefix("frame #").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        // `12: ` (a Rust backtrace) and `#3 ` (a gdb frame).
        || digits_then(b, 0, b": ")
        || (b.first() == Some(&b'#') && digits_then(b, 1, b" "))
        // A rule: `---`, `===`, `___` or any mix of them.
        || (b.len() >= 3 && b[..3].iter().all(|c| b"-=_".contains(c)))
        || identifier_head(t)
        || glog_header(b)
        || iso_timestamp(b)
}

/// One or more ASCII digits from `at`, then `then`.
fn digits_then(b: &[u8], at: usize, then: &[u8]) -> bool {
    let n = b
        .get(at..)
        .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
    n > 0 && b[at + n..].starts_with(then)
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// An identifier (`[A-Za-z_][\w.]*`, dots included) followed by `:` and white space (`key: `,
/// `RuntimeError: …`), or one with a class ending at a word boundary inside it
/// (`torch.OutOfMemoryError`, `KeyboardInterrupt.`).
fn identifier_head(t: &str) -> bool {
    let b = t.as_bytes();
    if !b
        .first()
        .is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_')
    {
        return false;
    }
    let run = 1 + b[1..]
        .iter()
        .take_while(|&&c| is_word(c) || c == b'.')
        .count();
    let colon_space =
        b.get(run) == Some(&b':') && t[run + 1..].chars().next().is_some_and(char::is_whitespace);
    // A class ending that ends where the next byte is not a word character (ASCII `\b`
    // after a letter), and starts after the identifier's first character.
    let class_at = |end: usize| {
        !b.get(end).copied().is_some_and(is_word)
            && CLASS_ENDINGS
                .iter()
                .any(|w| end > w.len() && b[..end].ends_with(w.as_bytes()))
    };
    colon_space || (2..=run).any(class_at)
}

/// glog's header: `W0217 08:19:10`.
fn glog_header(b: &[u8]) -> bool {
    if !matches!(b.first(), Some(b'I' | b'W' | b'E' | b'F')) || !digits_exactly(b, 1, 4) {
        return false;
    }
    let blanks = b[5..]
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    blanks > 0 && clock(&b[5 + blanks..])
}

/// `2024-03-01T12:30` or with a space for the `T`.
fn iso_timestamp(b: &[u8]) -> bool {
    digits_exactly(b, 0, 4)
        && b.get(4) == Some(&b'-')
        && digits_exactly(b, 5, 2)
        && b.get(7) == Some(&b'-')
        && digits_exactly(b, 8, 2)
        && matches!(b.get(10), Some(b'T' | b' '))
        && digits_exactly(b, 11, 2)
        && b.get(13) == Some(&b':')
        && digits_exactly(b, 14, 2)
}

/// `08:19:10`.
fn clock(b: &[u8]) -> bool {
    digits_exactly(b, 0, 2)
        && b.get(2) == Some(&b':')
        && digits_exactly(b, 3, 2)
        && b.get(5) == Some(&b':')
        && digits_exactly(b, 6, 2)
}

/// `n` ASCII digits at `at` (what follows does not matter).
fn digits_exactly(b: &[u8], at: usize, n: usize) -> bool {
    b.get(at..at + n)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::begins_something;

    /// The pattern this module replaced, as `normalize` compiled it: the oracle.
    fn oracle() -> regex::Regex {
        crate::diagnose::pattern::compile(concat!(
            r"^(?:Traceback \(most recent|During handling|The above exception|File |frame #\d|",
            r"\d+: |#\d+ |\[\[|Hint:|note:|thread '|stack backtrace|Error:|\$ |>>>|[-=_]{3}|",
            r"[A-Za-z_][\w.]*(?:Error|Exception|Exhausted|Warning|Exit|Interrupt)\b|",
            r"[A-Za-z_][\w.]*:\s|",
            r"[IWEF]\d{4}[ \t]+\d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[T ]\d\d:\d\d)"
        ))
    }

    #[test]
    fn agrees_with_the_pattern_on_every_fixture_line() {
        let re = oracle();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut lines = 0;
        for dir in ["fixtures/oom", "../shared/oom-corpus"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                for line in text.lines() {
                    let t = line.trim_start();
                    assert_eq!(begins_something(t), re.is_match(t), "{t:?}");
                    lines += 1;
                }
            }
        }
        assert!(lines > 1000, "only {lines} fixture lines read");
    }

    #[test]
    fn hand_picked_edges() {
        let re = oracle();
        for t in [
            "ValueError: x",
            "ValueErrorX",
            "Error",
            "Error: x",
            "XError",
            "torch.OutOfMemoryError.",
            "a.b.Exit",
            "_Exit(",
            "key:\u{a0}value",
            "key:",
            "key :x",
            "12: foo",
            "12:foo",
            "#3 0x",
            "#x",
            "-=_",
            "--",
            "W0217 08:19:10.6",
            "W0217\t\t08:19:1",
            "W021 08:19:10",
            "2024-03-01T12:30",
            "2024-03-01 12:3",
            "frame #1",
            "frame #x",
            "",
            "é: x",
            "Aé",
        ] {
            assert_eq!(begins_something(t), re.is_match(t), "{t:?}");
        }
    }

    proptest::proptest! {
        /// Lines built from the pieces the pattern looks for.
        #[test]
        fn agrees_with_the_pattern_on_generated_lines(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "Error", "Exception", "Exit", "Interrupt", "Warning", "Exhausted", "Value",
                "torch", ".", ":", " ", "\t", "\u{a0}", "_", "-", "=", "#", "1", "2024", "-0",
                "W", "I", "0217", "08", "T", "File", "frame #", "Traceback (most recent", "$",
                ">>>", "[[", "é", "x", "Hint:", "note:",
            ]), 0..8)
        ) {
            let t = parts.concat();
            proptest::prop_assert_eq!(begins_something(&t), oracle().is_match(&t), "{:?}", t);
        }
    }
}
