//! The one place diagnose's static patterns are compiled.
//!
//! The patterns read identifiers (Python and C++ function names, exception classes), numbers
//! and units, all ASCII in the logs PyTorch, vLLM, TensorFlow, JAX and llama.cpp print. Their
//! `\w`, `\d` and `\b` are compiled as ASCII classes: Unicode's `\w` is some 770 ranges, and
//! compiling it into the automata cost up to 5 ms for each pattern that repeats it, about 60 ms
//! of every `diagnose` run for nothing a log contains. `\s` stays Unicode (a log pasted from a
//! web page carries no-break spaces), and so does `.`. Case-insensitive patterns over names
//! write `(?i-u)`: Unicode case folding of a long literal alternation cost about 1 ms each.

use regex::Regex;
use std::sync::OnceLock;

/// A static pattern compiled on its first use: a log exercises a few of the patterns (a
/// PyTorch traceback never reaches the C++ frame or IPython ones), and each costs its compile
/// time whether it is used or not. Reads as the `Regex` it derefs to.
pub struct Lazy {
    pattern: String,
    re: OnceLock<Regex>,
}

impl Lazy {
    pub fn new(pattern: impl Into<String>) -> Lazy {
        Lazy {
            pattern: pattern.into(),
            re: OnceLock::new(),
        }
    }
}

impl std::ops::Deref for Lazy {
    type Target = Regex;

    fn deref(&self) -> &Regex {
        self.re.get_or_init(|| compile(&self.pattern))
    }
}

/// Compile a static pattern with ASCII `\w`, `\W`, `\d`, `\D`, `\b`, `\B`.
pub fn compile(pattern: &str) -> Regex {
    Regex::new(&ascii_classes(pattern)).expect("static regex")
}

/// `pattern` with the Perl classes and word boundaries made ASCII. The classes become nested
/// bracket classes, valid inside and outside `[...]`; `\b` cannot occur inside brackets.
pub fn ascii_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 32);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(next) = chars.next() else {
            out.push(c);
            break;
        };
        match next {
            'w' => out.push_str("[0-9A-Za-z_]"),
            'W' => out.push_str("[^0-9A-Za-z_]"),
            'd' => out.push_str("[0-9]"),
            'D' => out.push_str("[^0-9]"),
            'b' => out.push_str(r"(?-u:\b)"),
            'B' => out.push_str(r"(?-u:\B)"),
            // Any other escape, `\\` included, is kept as written.
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_become_ascii_and_escapes_stay() {
        assert_eq!(ascii_classes(r"[\w.]+\d"), r"[[0-9A-Za-z_].]+[0-9]");
        assert_eq!(ascii_classes(r"\bMiB\b"), r"(?-u:\b)MiB(?-u:\b)");
        // An escaped backslash followed by `w` is a backslash and a `w`.
        assert_eq!(ascii_classes(r"C:\\work\s"), r"C:\\work\s");
    }

    #[test]
    fn ascii_words_do_not_match_other_scripts() {
        let re = compile(r"^\w+$");
        assert!(re.is_match("estimate_loss"));
        assert!(!re.is_match("évaluer"));
        // Unicode spaces still count as space.
        assert!(compile(r"^a\sb$").is_match("a\u{a0}b"));
    }
}
