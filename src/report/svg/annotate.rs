//! The timeline chart's annotations: the phase strip under the axis, the legend and the
//! peak's marker and label.

use super::draw::{escape, num, place_box, text_width, Anchor, Rect, Scale, Svg};
use super::layout::{layer_color, layer_key, layer_label, phase_color, Ink, LAYERS, PLOT, W};
use crate::sim::replay::live_blocks_at;
use crate::sim::{MemoryProfile, Phase, Timeline};
use crate::units::human;

/// Each occurrence of a phase as a coloured band under the axis; each phase named once, under
/// its longest occurrence, on the first row where the name has room.
pub(super) fn phase_strip(svg: &mut Svg, xs: &Scale, runs: &[(Phase, usize, usize)]) {
    let top = PLOT.y1 + 25.0;
    let bottom = top + 12.0;
    for &(p, a, b) in runs {
        svg.rect(
            Rect::new(xs.at(a as f64), top, xs.at(b as f64), bottom),
            &format!(
                r#"class="phase-band" data-phase="{}" fill="{}""#,
                p.key(),
                phase_color(p)
            ),
        );
    }
    for p in Phase::ALL {
        let Some(&(_, a, b)) = runs
            .iter()
            .filter(|r| r.0 == p)
            .max_by_key(|r| (r.2 - r.1, std::cmp::Reverse(r.1)))
        else {
            continue;
        };
        let mid = (xs.at(a as f64) + xs.at(b as f64)) / 2.0;
        let w = text_width(p.key(), 12.0);
        let x = mid.clamp(PLOT.x0 + w / 2.0, PLOT.x1 - w / 2.0);
        let rows = (0..3).map(|r| bottom + 14.0 + 15.0 * r as f64);
        let mut placed = None;
        for y in rows {
            let r = Rect::of_text(x, y, 12.0, Anchor::Middle, p.key());
            if svg.is_free(&r.grow(2.0)) {
                placed = Some(y);
                break;
            }
        }
        let y = placed.unwrap_or(bottom + 14.0 + 30.0);
        if y > bottom + 14.0 || (x - mid).abs() > 1.0 {
            svg.line(
                mid,
                bottom,
                x,
                y - 10.0,
                r##"stroke="#999" stroke-width="0.8""##,
            );
        }
        svg.text(
            x,
            y,
            12.0,
            Anchor::Middle,
            &format!(
                r##"class="phase-label" data-phase="{}" fill="#222""##,
                p.key()
            ),
            p.key(),
        );
    }
}

pub(super) fn legend(svg: &mut Svg, present: &[usize], at_peak: &[u64; LAYERS], has_limit: bool) {
    let x = PLOT.x1 + 24.0;
    let right = W - 12.0;
    let mut y = PLOT.y0 + 4.0;
    svg.text(
        x,
        y,
        13.0,
        Anchor::Start,
        r#"font-weight="bold" class="legend-title""#,
        "At the peak",
    );
    y += 22.0;
    y = legend_layers(svg, (x, right, y), present, at_peak);
    y = legend_lines(svg, x, y, has_limit);
    legend_notes(svg, x, y);
}

/// One entry per category present at the peak, then the total: returns where the next row goes.
fn legend_layers(
    svg: &mut Svg,
    (x, right, mut y): (f64, f64, f64),
    present: &[usize],
    at_peak: &[u64; LAYERS],
) -> f64 {
    for &l in present.iter().rev() {
        svg.raw(&format!(
            r#"<g class="legend-entry" data-layer="{}">"#,
            layer_key(l)
        ));
        svg.rect(
            Rect::new(x, y - 10.0, x + 12.0, y + 2.0),
            &format!(r#"fill="{}""#, layer_color(l)),
        );
        svg.text(x + 18.0, y, 12.0, Anchor::Start, "", layer_label(l));
        svg.text(
            right,
            y,
            12.0,
            Anchor::End,
            r##"fill="#333""##,
            &human(at_peak[l]),
        );
        svg.raw("</g>");
        y += 19.0;
    }
    let total: u64 = at_peak.iter().sum();
    svg.line(x, y - 8.0, right, y - 8.0, r##"stroke="#999""##);
    y += 8.0;
    svg.text(
        x + 18.0,
        y,
        12.0,
        Anchor::Start,
        r#"font-weight="bold""#,
        "total",
    );
    svg.text(
        right,
        y,
        12.0,
        Anchor::End,
        r#"font-weight="bold" class="legend-total""#,
        &human(total),
    );
    y
}

/// The device line, the card's limit and the allocated peak's ring: returns where the next row goes.
fn legend_lines(svg: &mut Svg, x: f64, mut y: f64, has_limit: bool) -> f64 {
    y += 30.0;
    svg.line(
        x,
        y - 4.0,
        x + 12.0,
        y - 4.0,
        r##"stroke="#222" stroke-width="1.5" stroke-dasharray="4 2""##,
    );
    svg.text(
        x + 18.0,
        y,
        12.0,
        Anchor::Start,
        "",
        "device: reserved + context",
    );
    y += 19.0;
    if has_limit {
        svg.line(
            x,
            y - 4.0,
            x + 12.0,
            y - 4.0,
            r##"stroke="#d62728" stroke-width="2""##,
        );
        svg.text(
            x + 18.0,
            y,
            12.0,
            Anchor::Start,
            "",
            "the card's usable memory",
        );
        y += 19.0;
    }
    svg.raw(&format!(
        r##"<circle cx="{}" cy="{}" r="4.5" fill="#fff" stroke="#111" stroke-width="2"/>"##,
        num(x + 6.0),
        num(y - 4.0)
    ));
    svg.text(x + 18.0, y, 12.0, Anchor::Start, "", "allocated peak");
    y
}

/// How to read the chart.
fn legend_notes(svg: &mut Svg, x: f64, mut y: f64) {
    y += 30.0;
    for line in [
        "Areas: allocator blocks of live",
        "tensors (memory_allocated) on",
        "top of the CUDA context.",
        "Dashed: the allocator's segments",
        "(memory_reserved) + context:",
        "what nvidia-smi shows, and what",
        "must stay under the red line.",
    ] {
        svg.text(x, y, 11.0, Anchor::Start, r##"fill="#555""##, line);
        y += 14.0;
    }
}

/// The peak label's lines: the allocated peak and where, and the largest tensor alive there.
fn peak_label(tl: &Timeline, profile: &MemoryProfile) -> Vec<String> {
    let e = profile.peak_event;
    let mut largest: Option<u32> = None;
    for (t, _) in live_blocks_at(tl, profile, e) {
        if largest.is_none_or(|b| tl.tensors[t as usize].bytes > tl.tensors[b as usize].bytes) {
            largest = Some(t);
        }
    }
    let line1 = format!(
        "peak: {} allocated in {} (event {e})",
        human(profile.peak_allocated),
        profile.peak_phase.key()
    );
    let line2 = largest.map(|t| {
        let r = &tl.tensors[t as usize];
        format!(
            "largest tensor: {} {} {} = {}",
            r.name,
            r.dtype.short(),
            r.shape,
            human(r.bytes)
        )
    });
    std::iter::once(line1).chain(line2).collect()
}

/// Where the peak label's box goes: near the peak, covering none of the limit line, the device
/// line and the areas if it can, giving up the last of them first; in a top corner otherwise.
fn peak_box(
    svg: &mut Svg,
    (mx, my): (f64, f64),
    (bw, bh): (f64, f64),
    limit_y: Option<f64>,
    ink: &Ink,
) -> Rect {
    let prefer_left = mx > (PLOT.x0 + PLOT.x1) / 2.0;
    // What the box should not cover, most important first: the limit line, then the device
    // line, then the areas. Each pass gives up the last of them.
    let crosses_limit = |r: &Rect| limit_y.is_some_and(|ly| r.y0 - 4.0 <= ly && ly <= r.y1 + 4.0);
    let crosses_device = |r: &Rect| {
        let (lo, hi) = ink.device_span(r.x0, r.x1);
        !(r.y1 + 3.0 < lo || r.y0 - 3.0 > hi)
    };
    let covers_area = |r: &Rect| r.y1 + 3.0 > ink.stack_top(r.x0, r.x1);
    let passes: [&dyn Fn(&Rect) -> bool; 3] = [
        &|r| crosses_limit(r) || crosses_device(r) || covers_area(r),
        &|r| crosses_limit(r) || crosses_device(r),
        &|r| crosses_limit(r),
    ];
    let bounds = PLOT.grow(-2.0);
    let chosen = passes
        .iter()
        .find_map(|blocked| place_box(svg, (mx, my), (bw, bh), &bounds, *blocked, prefer_left));
    chosen.unwrap_or_else(|| {
        let x0 = if prefer_left {
            PLOT.x0 + 8.0
        } else {
            PLOT.x1 - 8.0 - bw
        };
        Rect::new(x0, PLOT.y0 + 8.0, x0 + bw, PLOT.y0 + 8.0 + bh)
    })
}

/// The allocated peak: a ring on the top of the stack, a dashed drop to the axis, and a boxed
/// label with the largest tensor alive there, placed where it covers no other label.
pub(super) fn peak_marker(
    svg: &mut Svg,
    tl: &Timeline,
    profile: &MemoryProfile,
    xs: &Scale,
    my: f64,
    limit_y: Option<f64>,
    ink: &Ink,
) {
    let e = profile.peak_event;
    let mx = xs.at(e as f64 + 0.5);
    let owned = peak_label(tl, profile);
    let lines: Vec<&str> = owned.iter().map(String::as_str).collect();
    let bw = lines
        .iter()
        .map(|l| text_width(l, 12.0))
        .fold(0.0, f64::max)
        + 14.0;
    let bh = 15.0 * lines.len() as f64 + 10.0;
    let r = peak_box(svg, (mx, my), (bw, bh), limit_y, ink);
    svg.line(
        mx,
        my,
        mx,
        PLOT.y1,
        r##"stroke="#111" stroke-width="1" stroke-dasharray="2 3""##,
    );
    let (ax, ay) = (mx.clamp(r.x0, r.x1), my.clamp(r.y0, r.y1));
    svg.line(mx, my, ax, ay, r##"stroke="#111" stroke-width="1""##);
    svg.rect(
        r,
        r##"class="peak-label-box" fill="#ffffff" fill-opacity="0.93" stroke="#888" rx="3""##,
    );
    for (i, l) in lines.iter().enumerate() {
        svg.text(
            r.x0 + 7.0,
            r.y0 + 17.0 + 15.0 * i as f64,
            12.0,
            Anchor::Start,
            if i == 0 {
                r#"font-weight="bold" class="peak-label""#
            } else {
                r#"class="peak-label""#
            },
            l,
        );
    }
    svg.raw(&format!(
        r##"<circle id="peak-marker" data-event="{e}" cx="{}" cy="{}" r="5" fill="#fff" stroke="#111" stroke-width="2"><title>{}</title></circle>"##,
        num(mx),
        num(my),
        escape(&lines.join("; "))
    ));
}
