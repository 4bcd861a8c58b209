//! A tokenizer for the Python in nanoGPT config files: logical lines (comments, brackets that
//! span lines, backslash continuations, triple-quoted strings) with their line numbers, and
//! literal tokens decoded (escapes, `1_000`, `0x10`, `6e-4`). Literals we will not evaluate
//! (f-strings, bytes, complex) become `Tok::Opaque`, so the caller can say why.

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Name(String),
    Int(i128),
    Float(f64),
    Str(String),
    /// A literal we will not evaluate: f-string, bytes, complex, an int beyond i128.
    Opaque(&'static str),
    Op(&'static str),
}

/// One logical line: the tokens of a statement (which may span physical lines).
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// 1-based physical line where the statement starts.
    pub line: usize,
    /// Leading whitespace of that line, in chars: > 0 means inside a block.
    pub indent: usize,
    pub toks: Vec<Tok>,
    /// The statement's source text (first physical line), for messages.
    pub text: String,
}

const OPS: &[&str] = &[
    "**=", "//=", ">>=", "<<=", "...", "**", "//", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=",
    "%=", "&=", "|=", "^=", "@=", "->", ":=", "<<", ">>", "+", "-", "*", "/", "%", "(", ")", "[",
    "]", "{", "}", ",", ":", ".", ";", "=", "<", ">", "&", "|", "^", "~", "@", "!",
];

/// Split source into logical lines. Err((line, what)) is a Python syntax error: an unterminated
/// string or bracket, a character Python does not know.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Line>, (usize, String)> {
    let chars: Vec<char> = src.chars().collect();
    let physical: Vec<&str> = src.split('\n').collect();
    let mut lines = Vec::new();
    let (mut i, mut line_no, mut depth) = (0usize, 1usize, 0usize);
    let mut cur: Option<Line> = None;
    let mut at_line_start = true;
    let mut indent = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if at_line_start {
            if c == ' ' || c == '\t' || c == '\x0c' {
                indent += 1;
                i += 1;
                continue;
            }
            at_line_start = false;
        }
        match c {
            '\n' => {
                if depth == 0 {
                    if let Some(l) = cur.take() {
                        lines.push(l);
                    }
                }
                line_no += 1;
                at_line_start = cur.is_none();
                indent = 0;
                i += 1;
            }
            ' ' | '\t' | '\r' | '\x0c' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\\' if chars.get(i + 1) == Some(&'\n')
                || (chars.get(i + 1) == Some(&'\r') && chars.get(i + 2) == Some(&'\n')) =>
            {
                // Explicit line joining: the statement goes on.
                i += if chars[i + 1] == '\r' { 3 } else { 2 };
                line_no += 1;
            }
            _ => {
                let l = cur.get_or_insert_with(|| new_line(&physical, line_no, indent));
                let (tok, next, newlines) = lex_one(&chars, i)
                    .map_err(|e| (line_no, format!("{e} at column {}", column(&chars, i))))?;
                match tok {
                    Tok::Op("(" | "[" | "{") => depth += 1,
                    Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
                    _ => {}
                }
                l.toks.push(tok);
                line_no += newlines;
                i = next;
            }
        }
    }
    if depth > 0 {
        return Err((
            cur.as_ref().map_or(line_no, |l| l.line),
            "unclosed bracket".to_string(),
        ));
    }
    lines.extend(cur);
    Ok(lines)
}

/// A logical line starting on physical line `line` (1-based), with its text for messages.
fn new_line(physical: &[&str], line: usize, indent: usize) -> Line {
    Line {
        line,
        indent,
        toks: Vec::new(),
        text: physical
            .get(line - 1)
            .unwrap_or(&"")
            .trim()
            .chars()
            .take(200)
            .collect(),
    }
}

/// The 1-based column of `chars[i]` in characters of its line.
fn column(chars: &[char], i: usize) -> usize {
    i - chars[..i]
        .iter()
        .rposition(|&c| c == '\n')
        .map_or(0, |p| p + 1)
        + 1
}

/// Lex one token at `i`: (token, next index, newlines consumed inside it).
fn lex_one(chars: &[char], i: usize) -> Result<(Tok, usize, usize), String> {
    let c = chars[i];
    if c.is_alphabetic() || c == '_' {
        let mut j = i;
        while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        let word: String = chars[i..j].iter().collect();
        if matches!(chars.get(j), Some('\'' | '"')) && word.len() <= 2 {
            let w = word.to_ascii_lowercase();
            if ["r", "u", "f", "b", "rb", "br", "fr", "rf"].contains(&w.as_str()) {
                let (s, next, nl) = lex_string(chars, j, w.contains('r'))?;
                let tok = if w.contains('f') {
                    Tok::Opaque("an f-string")
                } else if w.contains('b') {
                    Tok::Opaque("a bytes literal")
                } else {
                    Tok::Str(s)
                };
                return Ok((tok, next, nl));
            }
        }
        return Ok((Tok::Name(word), j, 0));
    }
    if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
        let mut j = i;
        while j < chars.len()
            && (chars[j].is_ascii_alphanumeric()
                || chars[j] == '_'
                || chars[j] == '.'
                || ((chars[j] == '+' || chars[j] == '-')
                    && matches!(chars[j - 1], 'e' | 'E')
                    && !is_radix(&chars[i..j])))
        {
            j += 1;
        }
        let text: String = chars[i..j].iter().collect();
        return Ok((number(&text)?, j, 0));
    }
    if c == '\'' || c == '"' {
        let (s, next, nl) = lex_string(chars, i, false)?;
        return Ok((Tok::Str(s), next, nl));
    }
    for op in OPS {
        if op
            .chars()
            .enumerate()
            .all(|(k, oc)| chars.get(i + k) == Some(&oc))
        {
            if *op == "!" {
                break;
            }
            return Ok((Tok::Op(op), i + op.chars().count(), 0));
        }
    }
    Err(format!(
        "unexpected character {}",
        crate::plain::describe_char(c)
    ))
}

fn is_radix(s: &[char]) -> bool {
    s.len() >= 2 && s[0] == '0' && matches!(s[1], 'x' | 'X' | 'o' | 'O' | 'b' | 'B')
}

/// A Python number literal: 40, 1_000, 0x10, 6e-4, .5, 5., 1j (opaque).
fn number(text: &str) -> Result<Tok, String> {
    let bad = || format!("invalid number literal '{text}'");
    if text.contains("__") || text.ends_with('_') {
        return Err(bad());
    }
    let t: String = text.chars().filter(|&c| c != '_').collect();
    let lower = t.to_ascii_lowercase();
    if lower.ends_with('j') {
        return Ok(Tok::Opaque("a complex number"));
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(digits) = lower.strip_prefix(prefix) {
            return match u128::from_str_radix(digits, radix) {
                Ok(v) => {
                    Ok(i128::try_from(v).map_or(Tok::Opaque("an integer beyond 2^127"), Tok::Int))
                }
                Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                    Ok(Tok::Opaque("an integer beyond 2^127"))
                }
                Err(_) => Err(bad()),
            };
        }
    }
    if lower.chars().all(|c| c.is_ascii_digit()) {
        // Python 3 refuses leading zeros ("010") except for zero itself.
        if lower.len() > 1 && lower.starts_with('0') && lower.chars().any(|c| c != '0') {
            return Err(bad());
        }
        return Ok(lower
            .parse::<i128>()
            .map_or(Tok::Opaque("an integer beyond 2^127"), Tok::Int));
    }
    lower.parse::<f64>().map(Tok::Float).map_err(|_| bad())
}

/// A string literal starting at the quote `chars[i]`; handles triple quotes and escapes.
fn lex_string(chars: &[char], i: usize, raw: bool) -> Result<(String, usize, usize), String> {
    let q = chars[i];
    let triple = chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q);
    let mut j = i + if triple { 3 } else { 1 };
    let (mut out, mut newlines) = (String::new(), 0);
    loop {
        let Some(&c) = chars.get(j) else {
            return Err("unterminated string".to_string());
        };
        if c == q && (!triple || (chars.get(j + 1) == Some(&q) && chars.get(j + 2) == Some(&q))) {
            return Ok((out, j + if triple { 3 } else { 1 }, newlines));
        }
        if c == '\n' {
            if !triple {
                return Err("unterminated string".to_string());
            }
            newlines += 1;
        }
        if c == '\\' && j + 1 < chars.len() {
            let e = chars[j + 1];
            if e == '\n' {
                newlines += 1;
            }
            if raw {
                out.push(c);
                out.push(e);
            } else if e != '\n' {
                j = escape(chars, j + 1, &mut out);
                continue;
            }
            j += 2;
            continue;
        }
        out.push(c);
        j += 1;
    }
}

/// Decode the escape whose letter is at `k`; returns the index after it.
fn escape(chars: &[char], k: usize, out: &mut String) -> usize {
    let simple = match chars[k] {
        'n' => Some('\n'),
        't' => Some('\t'),
        'r' => Some('\r'),
        '0' => Some('\0'),
        '\\' => Some('\\'),
        '\'' => Some('\''),
        '"' => Some('"'),
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'f' => Some('\x0c'),
        'v' => Some('\x0b'),
        _ => None,
    };
    if let Some(c) = simple {
        out.push(c);
        return k + 1;
    }
    let width = match chars[k] {
        'x' => 2,
        'u' => 4,
        'U' => 8,
        _ => 0,
    };
    if width > 0 && k + width < chars.len() {
        let hex: String = chars[k + 1..=k + width].iter().collect();
        if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
            out.push(c);
            return k + 1 + width;
        }
    }
    // Python keeps an unknown escape as written.
    out.push('\\');
    out.push(chars[k]);
    k + 1
}
