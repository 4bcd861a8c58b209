//! Parser errors in the user's words: which character (by its Unicode name where it is one that
//! hides, such as `U+200B ZERO WIDTH SPACE`), at which line and column, and no serde jargon
//! ("a borrowed string", "u32", Rust's `'\u{a0}'` escapes).

use crate::error::Error;

/// Characters that look like nothing, or like ASCII, and are pasted from web pages and chat.
const NAMED: &[(char, &str)] = &[
    ('\u{00a0}', "NO-BREAK SPACE"),
    ('\u{00ad}', "SOFT HYPHEN"),
    ('\u{2002}', "EN SPACE"),
    ('\u{2003}', "EM SPACE"),
    ('\u{2009}', "THIN SPACE"),
    ('\u{200b}', "ZERO WIDTH SPACE"),
    ('\u{200c}', "ZERO WIDTH NON-JOINER"),
    ('\u{200d}', "ZERO WIDTH JOINER"),
    ('\u{200e}', "LEFT-TO-RIGHT MARK"),
    ('\u{200f}', "RIGHT-TO-LEFT MARK"),
    ('\u{2010}', "HYPHEN"),
    ('\u{2013}', "EN DASH"),
    ('\u{2014}', "EM DASH"),
    ('\u{2018}', "LEFT SINGLE QUOTATION MARK"),
    ('\u{2019}', "RIGHT SINGLE QUOTATION MARK"),
    ('\u{201c}', "LEFT DOUBLE QUOTATION MARK"),
    ('\u{201d}', "RIGHT DOUBLE QUOTATION MARK"),
    ('\u{2028}', "LINE SEPARATOR"),
    ('\u{2029}', "PARAGRAPH SEPARATOR"),
    ('\u{202f}', "NARROW NO-BREAK SPACE"),
    ('\u{2060}', "WORD JOINER"),
    ('\u{2212}', "MINUS SIGN"),
    ('\u{3000}', "IDEOGRAPHIC SPACE"),
    ('\u{feff}', "ZERO WIDTH NO-BREAK SPACE (byte-order mark)"),
    (
        '\u{fffd}',
        "REPLACEMENT CHARACTER (the file was not UTF-8 here)",
    ),
];

/// A character as a user can find it: `U+200B ZERO WIDTH SPACE`, `U+0007 (a control
/// character)`, or `'é' (U+00E9)` for one that shows.
pub fn describe_char(c: char) -> String {
    let code = format!("U+{:04X}", c as u32);
    if let Some((_, name)) = NAMED.iter().find(|(n, _)| *n == c) {
        return format!("{code} {name}");
    }
    if c.is_control() {
        return format!("{code} (a control character)");
    }
    if c.is_whitespace() {
        return format!("{code} (a space character other than ' ')");
    }
    format!("'{c}' ({code})")
}

/// A user's string quoted for a one-line message: 'text', with odd characters (controls,
/// invisible spaces, typographic quotes) named in angle brackets, cut after 60 characters.
pub fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        if i == 60 {
            out.push('…');
            break;
        }
        if is_odd_in_message(c) {
            out.push_str(&format!("<{}>", describe_char(c)));
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// The first character of `text` that a config file's ASCII syntax cannot hold (outside
/// strings and comments this is what made the parser stop): its description, line and
/// column, both 1-based, the column in characters.
pub fn first_odd_char(text: &str) -> Option<(String, usize, usize)> {
    text.char_indices()
        .find(|&(_, c)| is_odd(c))
        .map(|(at, c)| {
            let (line, col) = line_col(text, at);
            (describe_char(c), line, col)
        })
}

fn is_odd(c: char) -> bool {
    NAMED.iter().any(|(n, _)| *n == c) || (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// A character that must not appear raw in a one-line message.
fn is_odd_in_message(c: char) -> bool {
    is_odd(c) || c.is_control()
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A TOML syntax or type error: `origin:line:column: not valid TOML: what`, naming an odd
/// character at the error's position when there is one.
pub fn toml_error(e: &toml::de::Error, text: &str, origin: &str) -> Error {
    let mut message = serde_words(e.message());
    let at = match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            if let Some(c) = text.get(span.start..).and_then(|s| s.chars().next()) {
                if is_odd(c) {
                    message = format!("unexpected character {}", describe_char(c));
                }
            }
            format!(":{line}:{col}")
        }
        None => String::new(),
    };
    Error::file(origin, format!("{origin}{at}: not valid TOML: {message}"))
}

/// A JSON syntax or type error: `origin:line:column: not valid JSON: what` (or, for a type
/// error, `origin:line:column: what`), with `expected` appended.
pub fn json_error(e: &serde_json::Error, text: &str, origin: &str, expected: &str) -> Error {
    let mut message = serde_words(&e.to_string());
    // serde_json appends " at line L column C"; we say it in front, as compilers do.
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    if e.is_syntax() || e.is_eof() {
        let offset = text
            .split('\n')
            .take(e.line().saturating_sub(1))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + e.column().saturating_sub(1);
        if let Some(c) = text.get(offset..).and_then(|s| s.chars().next()) {
            if is_odd(c) {
                message = format!("unexpected character {}", describe_char(c));
            }
        }
        message = format!("not valid JSON: {message}");
    }
    Error::file(
        origin,
        format!(
            "{origin}:{}:{}: {message}; expected {expected}",
            e.line(),
            e.column().max(1)
        ),
    )
}

/// serde's words replaced by the user's: Rust type names, "borrowed", "variant", and Rust's
/// char escapes. Keeps the message on one line.
pub fn serde_words(message: &str) -> String {
    let mut m = message.trim().replace('\n', "; ");
    for (rust, words) in [
        ("a borrowed string", "a string"),
        ("borrowed string", "string"),
        ("invalid type: ", "wrong type: got "),
        ("unknown variant", "unknown value"),
        ("unknown field", "unknown key"),
        ("missing field", "missing key"),
        ("a sequence", "a list"),
        ("struct LiveReading", "an object with name, index, total_bytes, free_bytes, used_bytes, driver_version, cuda_version"),
        ("struct GpuProcess", "an object with pid, name, used_bytes, kind"),
        ("a tuple of size 2", "a pair such as [8, 6]"),
        ("tuple of size 2", "pair such as [8, 6]"),
        ("a map", "an object"),
        ("got map", "got an object"),
        ("got sequence", "got a list"),
        ("unit value", "null"),
        ("an option", "a value or null"),
    ] {
        m = m.replace(rust, words);
    }
    for (rust, words) in [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number from 0 to 18446744073709551615"),
        ("i64", "a whole number"),
        ("f64", "a number"),
        ("bool", "true or false"),
    ] {
        m = replace_word(&m, rust, words);
    }
    escape_free(&m)
}

/// `word` replaced where it stands alone (not inside another word).
fn replace_word(text: &str, word: &str, by: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + word.len()..].chars().next();
        let alone = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..i]);
        out.push_str(if alone(before) && alone(after) {
            by
        } else {
            word
        });
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Rust's `'\u{200b}'` escapes in a message replaced by the character's description.
fn escape_free(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\\u{") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 3..];
        let parsed = tail
            .find('}')
            .and_then(|end| Some((u32::from_str_radix(&tail[..end], 16).ok()?, end)))
            .and_then(|(code, end)| Some((char::from_u32(code)?, end)));
        match parsed {
            Some((c, end)) => {
                out.push_str(&describe_char(c));
                rest = &tail[end + 1..];
            }
            None => {
                out.push_str("\\u{");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_by_name_and_position() {
        assert_eq!(describe_char('\u{200b}'), "U+200B ZERO WIDTH SPACE");
        assert_eq!(describe_char('\u{a0}'), "U+00A0 NO-BREAK SPACE");
        assert_eq!(describe_char('\u{7}'), "U+0007 (a control character)");
        assert_eq!(describe_char('é'), "'é' (U+00E9)");
        assert_eq!(line_col("ab\ncdé\u{200b}", 7), (2, 4));
        assert_eq!(
            first_odd_char("a = 1\nb =\u{a0}2\n"),
            Some(("U+00A0 NO-BREAK SPACE".to_string(), 2, 4))
        );
    }

    #[test]
    fn quoted_strings_stay_on_one_line() {
        assert_eq!(
            quote("a\nb\u{200b}"),
            "\"a<U+000A (a control character)>b<U+200B ZERO WIDTH SPACE>\""
        );
    }

    #[test]
    fn serde_jargon_is_rewritten() {
        assert_eq!(
            serde_words("invalid type: string \"x\", expected a borrowed string"),
            "wrong type: got string \"x\", expected a string"
        );
        assert_eq!(
            serde_words("invalid type: string \"a\", expected u32"),
            "wrong type: got string \"a\", expected a whole number from 0 to 4294967295"
        );
        assert_eq!(
            serde_words("unexpected character '\\u{200b}'"),
            "unexpected character 'U+200B ZERO WIDTH SPACE'"
        );
        assert_eq!(
            serde_words("u32s and u32"),
            "u32s and a whole number from 0 to 4294967295"
        );
    }
}
