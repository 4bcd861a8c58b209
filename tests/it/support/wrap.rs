//! Pastes broken at a fixed width, the ways terminals and web pages break them.

/// `fold -w width`: cut every line at exactly `width` characters, wherever that falls (a
/// terminal's hard wrap, copied back with its line breaks).
pub fn fold(text: &str, width: usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let chars: Vec<char> = line.chars().collect();
        if chars.is_empty() {
            out.push('\n');
        }
        for piece in chars.chunks(width) {
            out.extend(piece);
            out.push('\n');
        }
    }
    out
}

/// A terminal that wraps at word boundaries and keeps the trailing space (rich, Lightning).
pub fn word_wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut cur = String::new();
        for word in line.split_inclusive(' ') {
            if cur.chars().count() + word.chars().count() > width && !cur.is_empty() {
                out.push_str(&cur);
                out.push('\n');
                cur.clear();
            }
            cur.push_str(word);
        }
        out.push_str(&cur);
        out.push('\n');
    }
    out
}

/// A web page's wrap: at word boundaries, the space at the break dropped when copied.
pub fn page_wrap(text: &str, width: usize) -> String {
    word_wrap(text, width)
        .lines()
        .map(|l| format!("{}\n", l.trim_end_matches(' ')))
        .collect()
}
