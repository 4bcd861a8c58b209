//! Peak device memory against batch_size, one curve per set of knobs, with the card's limit
//! and the chosen point.

use super::draw::{
    self, escape, num, place_box, text_width, ticks, wrap, x_axis, y_axis_gib, Anchor, Rect, Svg,
};
use crate::error::Result;
use crate::units::{human, GIB};
use std::fmt::Write;

const W: f64 = 1200.0;
const H: f64 = 640.0;
pub const PLOT: Rect = Rect {
    x0: 78.0,
    y0: 70.0,
    x1: 900.0,
    y1: 560.0,
};
const COLORS: [&str; 7] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#9c755f", "#edc948",
];

/// One curve: the device peak (reserved + CUDA context) at each batch_size.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSeries {
    pub label: String,
    /// (batch_size, peak device bytes), in any order.
    pub points: Vec<(u64, u64)>,
}

/// One curve from a function giving the device peak at a batch size (a full simulation each,
/// e.g. `run_sim` of the config at that batch). The first error stops the sweep.
pub fn sweep_series(
    label: &str,
    batches: &[u64],
    peak: &dyn Fn(u64) -> Result<u64>,
) -> Result<SweepSeries> {
    let points = batches
        .iter()
        .map(|&b| Ok((b, peak(b)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(SweepSeries {
        label: label.to_string(),
        points,
    })
}

/// Batch sizes worth drawing, given the largest that fits for each knob (suggest's
/// candidates): from 1 to half as far again past the largest (so the curves are seen to cross
/// the limit), about `max_points` of them, always including each given batch and the next one.
pub fn batch_grid(fits: &[u64], max_points: usize) -> Vec<u64> {
    let top = fits.iter().copied().max().unwrap_or(1).max(1);
    let hi = (top + top / 2).max(top + 4);
    let step = hi.div_ceil(max_points.max(2) as u64).max(1);
    let mut grid: Vec<u64> = (1..=hi).filter(|b| b % step == 0 || *b == 1).collect();
    grid.push(hi);
    for &b in fits {
        grid.extend([b, b + 1]);
    }
    grid.retain(|&b| b > 0);
    grid.sort_unstable();
    grid.dedup();
    grid
}

/// The sweep chart. `chosen`: (a series' label, a batch size in it) to mark — suggest's pick;
/// nothing is marked when no series has that point.
pub fn sweep_svg(
    series: &[SweepSeries],
    usable_bytes: u64,
    chosen: Option<(String, u64)>,
) -> String {
    let gib = |b: u64| b as f64 / GIB as f64;
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let max_b = all().map(|p| p.0).max().unwrap_or(1);
    let max_y = all().map(|p| p.1).max().unwrap_or(0).max(usable_bytes);
    let xt = ticks(max_b as f64, 10, true);
    let yt = ticks(gib(max_y) * 1.08, 7, false);
    let top = |t: &[f64]| *t.last().unwrap_or(&1.0);
    let (xs, ys) = draw::plot_scales(&PLOT, top(&xt), top(&yt));
    let at = |(b, p): (u64, u64)| (xs.at(b as f64), ys.at(gib(p)));
    let chosen_point = chosen.as_ref().and_then(|(label, b)| {
        series
            .iter()
            .find(|s| &s.label == label)
            .and_then(|s| s.points.iter().find(|p| p.0 == *b))
            .map(|&p| (label.as_str(), p))
    });

    let mut svg = Svg::new(W, H, "vramplan: peak device memory against batch_size");
    let mut sub = format!(
        "each point a simulated run: reserved + CUDA context at its largest · {} usable",
        human(usable_bytes)
    );
    if let Some((_, (b, p))) = chosen_point {
        let _ = write!(sub, " · chosen: batch_size {b} ({})", human(p));
    }
    svg.heading(PLOT.x0, W, "Peak device memory against batch_size", &sub);
    y_axis_gib(&mut svg, &ys, &yt, PLOT.x0, PLOT.x1);
    svg.line(PLOT.x0, PLOT.y0, PLOT.x0, PLOT.y1, r##"stroke="#333""##);
    svg.line(PLOT.x0, PLOT.y1, PLOT.x1, PLOT.y1, r##"stroke="#333""##);
    x_axis(&mut svg, &xs, &xt, PLOT.y1, PLOT.y1 + 19.0);
    svg.text(
        (PLOT.x0 + PLOT.x1) / 2.0,
        PLOT.y1 + 44.0,
        12.0,
        Anchor::Middle,
        r##"fill="#333" class="axis-title""##,
        "batch_size (micro-batch)",
    );

    let ly = ys.at(gib(usable_bytes));
    let marks = curve_marks(series, &at);
    limit_line(&mut svg, usable_bytes, ly, &marks);

    for (i, s) in series.iter().enumerate() {
        draw_series(&mut svg, s, COLORS[i % COLORS.len()], usable_bytes, &at);
    }

    legend(&mut svg, series);

    if let Some((label, point)) = chosen_point {
        chosen_marker(&mut svg, label, point, at(point), ly, &marks);
    }
    svg.finish()
}

/// Small boxes along every curve (its points and its segments, every 6 px), for labels to
/// stay off.
fn curve_marks(series: &[SweepSeries], at: &dyn Fn((u64, u64)) -> (f64, f64)) -> Vec<Rect> {
    let mark = |(x, y): (f64, f64)| Rect::new(x - 5.0, y - 5.0, x + 5.0, y + 5.0);
    let mut marks = Vec::new();
    for s in series {
        let mut pts: Vec<(f64, f64)> = s.points.iter().map(|&p| at(p)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in pts.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            let n = ((x1 - x0).hypot(y1 - y0) / 6.0).ceil().max(1.0) as usize;
            for i in 0..=n {
                let f = i as f64 / n as f64;
                marks.push(mark((x0 + f * (x1 - x0), y0 + f * (y1 - y0))));
            }
        }
        marks.extend(pts.into_iter().map(mark));
    }
    marks
}

fn legend(svg: &mut Svg, series: &[SweepSeries]) {
    let x = PLOT.x1 + 24.0;
    let mut y = PLOT.y0 + 4.0;
    svg.text(
        x,
        y,
        13.0,
        Anchor::Start,
        r#"font-weight="bold" class="legend-title""#,
        "Knobs",
    );
    y += 22.0;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        svg.raw(&format!(
            r#"<g class="legend-entry" data-label="{}">"#,
            escape(&s.label)
        ));
        svg.line(
            x,
            y - 4.0,
            x + 16.0,
            y - 4.0,
            &format!(r#"stroke="{color}" stroke-width="2""#),
        );
        svg.raw(&format!(
            r#"<circle cx="{}" cy="{}" r="3.5" fill="{color}"/>"#,
            num(x + 8.0),
            num(y - 4.0)
        ));
        for line in wrap(&s.label, 30) {
            svg.text(x + 24.0, y, 12.0, Anchor::Start, "", &line);
            y += 15.0;
        }
        svg.raw("</g>");
        y += 6.0;
    }
    y += 12.0;
    svg.line(
        x,
        y - 4.0,
        x + 16.0,
        y - 4.0,
        r##"stroke="#d62728" stroke-width="2""##,
    );
    svg.text(
        x + 24.0,
        y,
        12.0,
        Anchor::Start,
        "",
        "the card's usable memory",
    );
    y += 21.0;
    svg.raw(&format!(
        r##"<circle cx="{}" cy="{}" r="7" fill="none" stroke="#111" stroke-width="2.5"/>"##,
        num(x + 8.0),
        num(y - 4.0)
    ));
    svg.text(x + 24.0, y, 12.0, Anchor::Start, "", "chosen");
    y += 30.0;
    for line in ["Filled points fit; hollow ones", "are over the limit."] {
        svg.text(x, y, 11.0, Anchor::Start, r##"fill="#555""##, line);
        y += 14.0;
    }
}

/// The card's usable memory as a red line at `ly`, its label placed off the curves.
fn limit_line(svg: &mut Svg, usable_bytes: u64, ly: f64, marks: &[Rect]) {
    let blocked = |r: &Rect| marks.iter().any(|m| m.overlaps(r));
    draw::limit_line(svg, &PLOT, (usable_bytes, ly), &blocked);
}

/// One knob's curve: the line through its points, each point filled where it fits.
fn draw_series(
    svg: &mut Svg,
    s: &SweepSeries,
    color: &str,
    usable_bytes: u64,
    at: &dyn Fn((u64, u64)) -> (f64, f64),
) {
    let mut pts = s.points.clone();
    pts.sort_unstable();
    svg.raw(&format!(
        r#"<g class="series" data-label="{}">"#,
        escape(&s.label)
    ));
    let mut line = String::new();
    for &p in &pts {
        let (x, y) = at(p);
        let _ = write!(line, "{},{} ", num(x), num(y));
    }
    svg.raw(&format!(
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
        line.trim_end()
    ));
    for &(b, p) in &pts {
        let (x, y) = at((b, p));
        let fill = if p <= usable_bytes { color } else { "#ffffff" };
        svg.raw(&format!(
            r#"<circle class="point" data-batch="{b}" data-bytes="{p}" cx="{}" cy="{}" r="3.5" fill="{fill}" stroke="{color}" stroke-width="1.5"><title>{}: batch_size {b}, {}</title></circle>"#,
            num(x),
            num(y),
            escape(&s.label),
            human(p)
        ));
    }
    svg.raw("</g>");
}

/// The chosen point: a ring, and its label in a box clear of the limit line and the curves.
fn chosen_marker(
    svg: &mut Svg,
    label: &str,
    (b, p): (u64, u64),
    (cx, cy): (f64, f64),
    ly: f64,
    marks: &[Rect],
) {
    let text = format!("chosen: {label}, batch_size {b}: {}", human(p));
    let (w, h) = (text_width(&text, 12.0) + 14.0, 25.0);
    let limit = Rect::new(PLOT.x0, ly - 4.0, PLOT.x1, ly + 4.0);
    let ring = Rect::new(cx - 12.0, cy - 12.0, cx + 12.0, cy + 12.0);
    // Clear of the limit line and of every curve's points.
    let blocked =
        |r: &Rect| r.overlaps(&limit) || r.overlaps(&ring) || marks.iter().any(|m| m.overlaps(r));
    let prefer_left = cx > (PLOT.x0 + PLOT.x1) / 2.0;
    let r = place_box(
        svg,
        (cx, cy),
        (w, h),
        &PLOT.grow(-2.0),
        &blocked,
        prefer_left,
    )
    .unwrap_or_else(|| {
        Rect::new(
            PLOT.x1 - 8.0 - w,
            PLOT.y1 - 8.0 - h,
            PLOT.x1 - 8.0,
            PLOT.y1 - 8.0,
        )
    });
    svg.line(
        cx,
        cy,
        cx.clamp(r.x0, r.x1),
        cy.clamp(r.y0, r.y1),
        r##"stroke="#111" stroke-width="1""##,
    );
    svg.rect(
        r,
        r##"fill="#ffffff" fill-opacity="0.93" stroke="#888" rx="3""##,
    );
    svg.text(
        r.x0 + 7.0,
        r.y0 + 17.0,
        12.0,
        Anchor::Start,
        r#"font-weight="bold" class="chosen-label""#,
        &text,
    );
    svg.raw(&format!(
        r##"<circle id="chosen" data-batch="{b}" data-bytes="{p}" cx="{}" cy="{}" r="9" fill="none" stroke="#111" stroke-width="2.5"/>"##,
        num(cx),
        num(cy)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_reaches_past_the_largest_fit() {
        assert_eq!(batch_grid(&[7, 5], 32), (1..=11).collect::<Vec<_>>());
        let g = batch_grid(&[100, 37], 20);
        assert!(g.len() <= 26, "{g:?}");
        for b in [1, 37, 38, 100, 101, 150] {
            assert!(g.contains(&b), "{b} in {g:?}");
        }
        assert_eq!(*g.last().unwrap(), 150);
    }
}
