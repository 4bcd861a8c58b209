//! The few drawing pieces both charts share: an SVG writer that escapes what it is given,
//! linear scales, "nice" axis ticks, and text boxes to keep labels apart.
//!
//! SVG has no text metrics, so a label's width is estimated from its length: 0.62 em a
//! character is DejaVu Sans' digit width (its widest common glyphs), so the estimate errs
//! wide and labels kept apart by it stay apart when rendered.

use std::fmt::Write;

pub const FONT: &str = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif";
const EM_PER_CHAR: f64 = 0.62;

/// Estimated width of `s` at font size `size`.
pub fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * EM_PER_CHAR
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// An axis-aligned box in SVG coordinates (y grows downwards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn new(x0: f64, y0: f64, x1: f64, y1: f64) -> Rect {
        Rect { x0, y0, x1, y1 }
    }

    /// The box a one-line label takes: baseline at `y`, ascenders 0.8 em above it,
    /// descenders 0.25 em below.
    pub fn of_text(x: f64, y: f64, size: f64, anchor: Anchor, s: &str) -> Rect {
        let w = text_width(s, size);
        let x0 = match anchor {
            Anchor::Start => x,
            Anchor::Middle => x - w / 2.0,
            Anchor::End => x - w,
        };
        Rect::new(x0, y - 0.8 * size, x0 + w, y + 0.25 * size)
    }

    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    pub fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.x1 <= o.x1 && self.y0 >= o.y0 && self.y1 <= o.y1
    }

    pub fn grow(&self, by: f64) -> Rect {
        Rect::new(self.x0 - by, self.y0 - by, self.x1 + by, self.y1 + by)
    }
}

/// Maps a data interval onto a pixel interval.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Scale {
    pub fn at(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        if span == 0.0 {
            return self.r0;
        }
        self.r0 + (v - self.d0) / span * (self.r1 - self.r0)
    }
}

/// Tick positions from 0 up to at least `max`, about `target` of them, at a step of 1, 2, 2.5
/// or 5 times a power of ten. `integer` keeps the step whole (event indices, batch sizes).
pub fn ticks(max: f64, target: usize, integer: bool) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // Whole steps (event indices, batch sizes) skip 2.5: a tick at 2.5 or 25 reads oddly.
    let steps: &[f64] = if integer {
        &[1.0, 2.0, 5.0, 10.0]
    } else {
        &[1.0, 2.0, 2.5, 5.0, 10.0]
    };
    let mut step = steps
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw * 0.999)
        .unwrap_or(10.0 * mag);
    if integer {
        step = step.round().max(1.0);
    }
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    // Rounded to a millionth so that 3 x 0.1 is 0.3.
    (0..=n)
        .map(|i| (i as f64 * step * 1e6).round() / 1e6)
        .collect()
}

/// Decimals needed to print every tick exactly (0.25 needs 2, 0.5 needs 1, 2 needs 0).
pub fn decimals(ticks: &[f64]) -> usize {
    (0..=3)
        .find(|&d| {
            let f = 10f64.powi(d as i32);
            ticks.iter().all(|t| ((t * f).round() - t * f).abs() < 1e-6)
        })
        .unwrap_or(3)
}

/// A coordinate with one decimal, without a trailing ".0".
pub fn num(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG document being written. `attrs` arguments are written as given (the callers build
/// them from numbers and fixed names); text content and titles are escaped.
pub struct Svg {
    out: String,
    /// Every label written, to place later labels clear of them.
    pub labels: Vec<Rect>,
}

impl Svg {
    pub fn new(width: f64, height: f64, title: &str) -> Svg {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}">"#,
            w = num(width),
            h = num(height),
        );
        let _ = writeln!(out, "<title>{}</title>", escape(title));
        let _ = writeln!(
            out,
            r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
        );
        Svg {
            out,
            labels: Vec::new(),
        }
    }

    /// The chart's heading: a bold title and, below it, a grey subtitle cut to fit between `x`
    /// and `right`.
    pub fn heading(&mut self, x: f64, right: f64, title: &str, subtitle: &str) {
        self.text(
            x,
            26.0,
            16.0,
            Anchor::Start,
            r#"font-weight="bold" class="title""#,
            title,
        );
        self.text(
            x,
            48.0,
            12.5,
            Anchor::Start,
            r##"fill="#444" class="subtitle""##,
            &fit_text(subtitle, 12.5, right - x - 12.0),
        );
    }

    /// An element or fragment written as is.
    pub fn raw(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    /// One line of text; returns its estimated box.
    pub fn text(
        &mut self,
        x: f64,
        y: f64,
        size: f64,
        anchor: Anchor,
        attrs: &str,
        content: &str,
    ) -> Rect {
        let _ = writeln!(
            self.out,
            r#"<text x="{}" y="{}" font-size="{}" text-anchor="{}"{}{}>{}</text>"#,
            num(x),
            num(y),
            num(size),
            anchor.as_str(),
            if attrs.is_empty() { "" } else { " " },
            attrs,
            escape(content)
        );
        let r = Rect::of_text(x, y, size, anchor, content);
        self.labels.push(r);
        r
    }

    /// A horizontal or sloped line.
    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, attrs: &str) {
        let _ = writeln!(
            self.out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" {attrs}/>"#,
            num(x1),
            num(y1),
            num(x2),
            num(y2)
        );
    }

    pub fn rect(&mut self, r: Rect, attrs: &str) {
        let _ = writeln!(
            self.out,
            r#"<rect x="{}" y="{}" width="{}" height="{}" {attrs}/>"#,
            num(r.x0),
            num(r.y0),
            num((r.x1 - r.x0).max(0.0)),
            num((r.y1 - r.y0).max(0.0))
        );
    }

    /// Whether a label at `r` would touch one already written.
    pub fn is_free(&self, r: &Rect) -> bool {
        !self.labels.iter().any(|l| l.overlaps(r))
    }

    pub fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// The y-axis in GiB: gridlines and labels, each tick a `<g class="y-tick">` of its gridline
/// and its label, so a reader (or a test) can recover the scale from the picture itself.
pub fn y_axis_gib(svg: &mut Svg, scale: &Scale, ticks: &[f64], x0: f64, x1: f64) {
    let d = decimals(ticks);
    for &t in ticks {
        let y = scale.at(t);
        let label = if t == 0.0 {
            "0".to_string()
        } else {
            format!("{t:.d$} GiB")
        };
        svg.raw(r#"<g class="y-tick">"#);
        svg.line(x0, y, x1, y, r##"stroke="#e6e6e6" stroke-width="1""##);
        svg.text(
            x0 - 8.0,
            y + 4.0,
            12.0,
            Anchor::End,
            r##"fill="#333""##,
            &label,
        );
        svg.raw("</g>");
    }
}

/// The x-axis: a tick and a label at each value, each a `<g class="x-tick">`.
pub fn x_axis(svg: &mut Svg, scale: &Scale, ticks: &[f64], y: f64, label_y: f64) {
    for &t in ticks {
        let x = scale.at(t);
        svg.raw(r#"<g class="x-tick">"#);
        svg.line(x, y, x, y + 5.0, r##"stroke="#333" stroke-width="1""##);
        svg.text(
            x,
            label_y,
            12.0,
            Anchor::Middle,
            r##"fill="#333""##,
            &format!("{}", t.round() as u64),
        );
        svg.raw("</g>");
    }
}

/// Where a boxed label of `w` x `h` next to the point `(px, py)` covers no label already
/// written, is not `blocked`, and stays inside `bounds`: tried above the point first, then
/// below, on the preferred side first. None when no candidate is free.
pub fn place_box(
    svg: &Svg,
    (px, py): (f64, f64),
    (w, h): (f64, f64),
    bounds: &Rect,
    blocked: &dyn Fn(&Rect) -> bool,
    prefer_left: bool,
) -> Option<Rect> {
    let marker = Rect::new(px - 10.0, py - 10.0, px + 10.0, py + 10.0);
    let dys = (1..=12)
        .map(|i| -10.0 - 25.0 * i as f64)
        .chain((1..=6).map(|i| 15.0 + 25.0 * i as f64));
    for dy in dys {
        for left in [prefer_left, !prefer_left] {
            let x0 = if left { px - 16.0 - w } else { px + 16.0 };
            let cy = py + dy;
            let r = Rect::new(x0, cy - h / 2.0, x0 + w, cy + h / 2.0);
            if r.inside(bounds) && svg.is_free(&r.grow(3.0)) && !r.overlaps(&marker) && !blocked(&r)
            {
                return Some(r);
            }
        }
    }
    None
}

/// A chart's scales: 0..x_top across `plot`, 0..y_top up it (the y axis grows upwards).
pub fn plot_scales(plot: &Rect, x_top: f64, y_top: f64) -> (Scale, Scale) {
    let xs = Scale {
        d0: 0.0,
        d1: x_top,
        r0: plot.x0,
        r1: plot.x1,
    };
    let ys = Scale {
        d0: 0.0,
        d1: y_top,
        r0: plot.y1,
        r1: plot.y0,
    };
    (xs, ys)
}

/// The card's usable memory as a red line across `plot` at `y`, labelled "usable on the card:
/// …" at the first spot `blocked` leaves free.
pub fn limit_line(
    svg: &mut Svg,
    plot: &Rect,
    (usable, y): (u64, f64),
    blocked: &dyn Fn(&Rect) -> bool,
) {
    svg.line(
        plot.x0,
        y,
        plot.x1,
        y,
        r##"id="limit" class="limit" stroke="#d62728" stroke-width="2""##,
    );
    let label = format!("usable on the card: {}", crate::units::human(usable));
    let (x, ty, anchor) = limit_label_spot(svg, &label, y, plot, blocked);
    svg.text(
        x,
        ty,
        12.0,
        anchor,
        r##"fill="#d62728" font-weight="bold" class="limit-label""##,
        &label,
    );
}

/// Where the limit line's label goes: just above or just below the line at `y`, at the plot's
/// left or right end, the first spot clear of other labels and not `blocked` (the curves).
/// Returns the text's x, baseline and anchor; above at the left when nothing is clear.
pub fn limit_label_spot(
    svg: &Svg,
    label: &str,
    y: f64,
    plot: &Rect,
    blocked: &dyn Fn(&Rect) -> bool,
) -> (f64, f64, Anchor) {
    let spots = [
        (plot.x0 + 6.0, y - 6.0, Anchor::Start),
        (plot.x0 + 6.0, y + 15.0, Anchor::Start),
        (plot.x1 - 6.0, y - 6.0, Anchor::End),
        (plot.x1 - 6.0, y + 15.0, Anchor::End),
    ];
    spots
        .into_iter()
        .find(|&(x, ty, a)| {
            let r = Rect::of_text(x, ty, 12.0, a, label);
            r.inside(plot) && svg.is_free(&r.grow(2.0)) && !blocked(&r.grow(2.0))
        })
        .unwrap_or(spots[if y - 20.0 < plot.y0 { 1 } else { 0 }])
}

/// `s` shortened with an ellipsis to fit `width` at font size `size`.
pub fn fit_text(s: &str, size: f64, width: f64) -> String {
    if text_width(s, size) <= width {
        return s.to_string();
    }
    let keep = ((width / (size * EM_PER_CHAR)) as usize).saturating_sub(1);
    let mut out: String = s.chars().take(keep).collect();
    out.push('…');
    out
}

/// `s` cut at spaces into lines of at most `max` characters (a longer word stays whole).
pub fn wrap(s: &str, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in s.split(' ') {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= max => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(9.3, 6, false), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.3, 6, false).last().copied(), Some(0.3));
        assert_eq!(ticks(8012.0, 8, true)[1], 2000.0);
        assert_eq!(ticks(3.0, 8, true), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(decimals(&[0.0, 0.25, 0.5]), 2);
        assert_eq!(decimals(&[0.0, 2.0]), 0);
    }

    #[test]
    fn boxes_overlap_only_when_they_share_area() {
        let a = Rect::new(0.0, 0.0, 10.0, 10.0);
        assert!(a.overlaps(&Rect::new(5.0, 5.0, 15.0, 15.0)));
        assert!(!a.overlaps(&Rect::new(10.0, 0.0, 20.0, 10.0)));
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(num(3.0), "3");
        assert_eq!(num(3.26), "3.3");
        assert_eq!(fit_text("abcdef", 10.0, 31.0), "abcd…");
        assert_eq!(fit_text("abc", 10.0, 31.0), "abc");
        assert_eq!(
            wrap("expandable segments, exact tokens/step", 20),
            ["expandable segments,", "exact tokens/step"]
        );
    }
}
