//! Pastes broken at a fixed width: a terminal cuts every line at exactly its width, wherever
//! that falls (`CUDA_ERROR_OUT_O` / `F_MEMORY`); a web page or a rich console breaks at the
//! last space before the width, so a line ends where the next word would not have fitted.
//! Both leave a signature in the paste: many lines of one maximal width (a cut), or many
//! lines just short of it (word breaks). Knowing the width, a break is recognised by the
//! arithmetic of the break itself, however short the line or whatever the next line starts with.

/// How the paste was broken, with the width it was broken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    /// Cut at exactly this many characters (`fold -w`, a terminal's own wrap).
    Cut(usize),
    /// Broken at word boundaries to fit this many characters (a web page, rich, Lightning).
    Words(usize),
}

/// How a physical line is joined to the logical line it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Glued as is: the break fell inside a word or a number (or the line kept its space).
    Glue,
    /// A word break: the space the page dropped at the break is put back.
    Space,
}

/// Narrower than this, lines are short by nature, not broken at a width.
const MIN_WIDTH: usize = 40;
/// A word break leaves a line at most one long word short of the width.
const WORD_SLACK: usize = 12;

/// The width the paste was broken at, if its lines show one. The width is the widest line
/// with an inner space (a single word longer than the width, a URL, overflows a word break).
/// A cut leaves lines of exactly that width; a word break leaves lines just short of it whose
/// next word would have overflowed it. More lines exactly at the width than such word breaks
/// below it (and at least two) is a cut; else at least three lines within a word of the width
/// are word breaks. `lines` are the physical lines, trailing spaces included.
pub fn detect<'a>(lines: impl Iterator<Item = &'a str>) -> Option<Wrap> {
    let lines: Vec<&str> = lines.collect();
    let width = |l: &str| l.chars().count();
    let max = lines
        .iter()
        .filter(|l| l.trim().contains(' '))
        .map(|l| width(l))
        .max()?;
    if max < MIN_WIDTH {
        return None;
    }
    let (mut exact, mut near, mut word_breaks) = (0, 0, 0);
    for (i, l) in lines.iter().enumerate() {
        let w = width(l);
        if w > max || w + WORD_SLACK < max {
            continue;
        }
        near += 1;
        if w == max {
            exact += 1;
        } else if let Some(next) = lines.get(i + 1).filter(|n| !n.starts_with([' ', '\t'])) {
            word_breaks += usize::from(overflows(max, w, l, next));
        }
    }
    if exact >= 2 && exact > word_breaks {
        Some(Wrap::Cut(max))
    } else if near >= 3 || exact + word_breaks >= 2 {
        Some(Wrap::Words(max))
    } else {
        None
    }
}

/// Would `next`'s first word have overflowed `width` on the line `prev` (of `prev_width`
/// characters)? The space at the break counts unless the line kept it.
fn overflows(width: usize, prev_width: usize, prev: &str, next: &str) -> bool {
    let word = next
        .split_whitespace()
        .next()
        .map_or(0, |t| t.chars().count());
    let space = usize::from(!prev.ends_with([' ', '\t']));
    // `>=`: wrappers that count the word's own trailing space break one column earlier.
    word > 0 && prev_width + space + word >= width
}

/// Is a line of display width `prev_width` (ending in `prev_text`) broken before `next` by
/// `wrap`? A cut line is exactly the width, and what follows it is its rest whatever it
/// starts with. A word-broken line is one whose next word would have overflowed the width
/// (the space at the break counted unless the line kept it); `plain` says the next line
/// starts like a continuation (no indent, not a frame, an exception or a log record). Even a
/// short line is broken before a word too long for the rest of the width (a path, a URL).
pub fn broken_before(
    wrap: Wrap,
    prev_width: usize,
    prev_text: &str,
    next_text: &str,
    plain: bool,
) -> Option<Join> {
    if prev_text.is_empty() || next_text.is_empty() {
        return None;
    }
    match wrap {
        Wrap::Cut(w) => (prev_width == w).then_some(Join::Glue),
        Wrap::Words(w) => {
            let kept_space = prev_text.ends_with([' ', '\t']);
            (plain && overflows(w, prev_width, prev_text, next_text)).then_some(if kept_space {
                Join::Glue
            } else {
                Join::Space
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_and_a_word_break_are_told_apart() {
        let lines = |widths: &[usize]| -> Vec<String> {
            widths
                .iter()
                .map(|&w| format!("a {}", "x".repeat(w - 2)))
                .collect()
        };
        let detect_widths = |widths: &[usize]| detect(lines(widths).iter().map(String::as_str));
        assert_eq!(detect_widths(&[60, 60, 60, 12, 60]), Some(Wrap::Cut(60)));
        assert_eq!(detect_widths(&[58, 60, 55, 59, 20]), Some(Wrap::Words(60)));
        // One long line among short ones is a long line, not a width.
        assert_eq!(detect_widths(&[400, 30, 80, 12]), None);
        assert_eq!(detect_widths(&[30, 30, 30]), None);
        // A URL longer than the width is one word that overflowed it.
        let url = "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)";
        let mut with_url = lines(&[58, 60, 55]);
        with_url.push(url.into());
        assert_eq!(
            detect(with_url.iter().map(String::as_str)),
            Some(Wrap::Words(60))
        );
    }

    #[test]
    fn a_word_break_is_where_the_next_word_would_not_fit() {
        let w = Wrap::Words(60);
        // 55 + space + "allocate" (8) > 60: broken, and the dropped space comes back.
        let line = "x".repeat(55);
        assert_eq!(
            broken_before(w, 55, &line, "allocate 1.40 GiB", true),
            Some(Join::Space)
        );
        // 40 + space + "to" fits in 60 with room to spare: the line ended there by itself.
        assert_eq!(broken_before(w, 40, &line, "to x", true), None);
        // A cut glues whatever follows, even an indent.
        assert_eq!(
            broken_before(Wrap::Cut(60), 60, &line, "  F_MEMORY", false),
            Some(Join::Glue)
        );
    }
}
