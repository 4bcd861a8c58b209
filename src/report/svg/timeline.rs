//! The run's memory over time: live allocator blocks stacked by category over the Timeline's
//! events, the device line (reserved + context), the card's usable memory, the peak and its
//! largest tensor, and the phases along the x axis.

use super::annotate::{legend, peak_marker, phase_strip};
use super::draw::{self, num, ticks, x_axis, y_axis_gib, Anchor, Rect, Scale, Svg};
use super::layout::{layer_color, layer_key, layer_label, phase_color, Ink, LAYERS, PLOT, W};
use crate::sim::timeline::EventKind;
use crate::sim::{MemoryProfile, Phase, Timeline};
use crate::units::{human, GIB};
use std::fmt::Write;

/// At most this many points per curve: each keeps its bucket's highest moment, so no peak is
/// lost to the downsampling.
pub const MAX_POINTS: usize = 2000;

const H: f64 = 612.0;

/// Events `start..end` drawn as one point: the category bytes at the bucket's highest
/// allocated moment, and the highest reserved.
struct Bucket {
    start: usize,
    end: usize,
    layers: [u64; LAYERS],
    reserved: u64,
}

impl Bucket {
    fn through(&self, l: usize) -> u64 {
        self.layers[..=l].iter().sum()
    }
}

struct Series {
    buckets: Vec<Bucket>,
    at_peak: [u64; LAYERS],
}

/// Walks the events once: category bytes (the profile's allocator blocks, so they add up to
/// the allocated figure) and the run's reserved bytes after each event (the profile's, from
/// the one replay the run made, in the allocator mode it decided).
fn collect(tl: &Timeline, profile: &MemoryProfile, context: u64) -> Series {
    let n = tl.events.len();
    let per = n.div_ceil(MAX_POINTS).max(1);
    // A tensor holds a block from its Alloc to its Free; empty tensors hold none.
    let mut holds = vec![false; tl.tensors.len()];
    let mut layers = [0u64; LAYERS];
    layers[0] = context;
    let mut buckets: Vec<Bucket> = Vec::with_capacity(n.div_ceil(per));
    let mut best = 0u64;
    let mut at_peak = layers;
    for (i, ev) in tl.events.iter().enumerate() {
        let t = ev.tensor as usize;
        let l = 1 + tl.tensors[t].category as usize;
        match ev.kind {
            EventKind::Alloc => {
                holds[t] = profile.block_bytes[t] > 0;
                layers[l] += profile.block_bytes[t];
            }
            EventKind::Free => {
                if std::mem::take(&mut holds[t]) {
                    layers[l] = layers[l].saturating_sub(profile.block_bytes[t]);
                }
            }
        }
        let reserved = profile.reserved_after[i];
        if i == profile.peak_event {
            at_peak = layers;
        }
        let total: u64 = layers.iter().sum();
        if i % per == 0 {
            buckets.push(Bucket {
                start: i,
                end: i + 1,
                layers,
                reserved,
            });
            best = total;
        } else if let Some(b) = buckets.last_mut() {
            b.end = i + 1;
            b.reserved = b.reserved.max(reserved);
            if total > best {
                best = total;
                b.layers = layers;
            }
        }
    }
    Series { buckets, at_peak }
}

/// Runs of one phase: (phase, first event, one past the last).
fn phase_runs(tl: &Timeline) -> Vec<(Phase, usize, usize)> {
    let mut runs: Vec<(Phase, usize, usize)> = Vec::new();
    for (i, ev) in tl.events.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if r.0 == ev.phase => r.2 = i + 1,
            _ => runs.push((ev.phase, i, i + 1)),
        }
    }
    runs
}

/// A step outline through `value` of each bucket: `close` makes it an area down to the axis.
fn step_path(buckets: &[Bucket], xs: &Scale, y: &dyn Fn(&Bucket) -> f64, close: bool) -> String {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return String::new();
    };
    let base = PLOT.y1;
    let mut d = String::new();
    let mut level = num(y(first));
    if close {
        let _ = write!(
            d,
            "M{},{}V{}",
            num(xs.at(first.start as f64)),
            num(base),
            level
        );
    } else {
        let _ = write!(d, "M{},{}", num(xs.at(first.start as f64)), level);
    }
    for b in &buckets[1..] {
        let next = num(y(b));
        if next != level {
            let _ = write!(d, "H{}V{}", num(xs.at(b.start as f64)), next);
            level = next;
        }
    }
    let _ = write!(d, "H{}", num(xs.at(last.end as f64)));
    if close {
        let _ = write!(d, "V{}Z", num(base));
    }
    d
}

/// The timeline chart. `usable_bytes`: the card's usable memory, drawn as a line (None: no
/// card). `context_bytes`: the CUDA context, stacked under the tensors so the stack and the
/// device line compare with the card's usable memory.
///
/// The device line is the profile's reserved bytes after every event: the chart replays
/// nothing.
pub fn timeline_svg(
    tl: &Timeline,
    profile: &MemoryProfile,
    usable_bytes: Option<u64>,
    context_bytes: u64,
) -> String {
    let s = collect(tl, profile, context_bytes);
    let n = tl.events.len();
    let gib = |b: u64| b as f64 / GIB as f64;
    let peak_total = profile.peak_allocated.saturating_add(context_bytes);
    let (device_peak, top) = extents(&s.buckets, usable_bytes, context_bytes);
    let yt = ticks(gib(top) * 1.12, 6, false);
    let (xs, ys) = draw::plot_scales(&PLOT, n.max(1) as f64, *yt.last().unwrap_or(&1.0));
    let yb = |b: u64| ys.at(gib(b));
    let present: Vec<usize> = (0..LAYERS)
        .filter(|&l| s.at_peak[l] > 0 || s.buckets.iter().any(|b| b.layers[l] > 0))
        .collect();

    let mut svg = Svg::new(W, H, "vramplan: simulated GPU memory over a training run");
    let sub = subtitle(profile, device_peak, usable_bytes);
    svg.heading(PLOT.x0, W, "Simulated GPU memory over a training run", &sub);

    let runs = phase_runs(tl);
    phase_tints(&mut svg, &xs, &runs);
    y_axis_gib(&mut svg, &ys, &yt, PLOT.x0, PLOT.x1);

    areas_and_device_line(&mut svg, &s.buckets, &xs, &yb, &present, context_bytes);

    axes(&mut svg, &xs, n);

    // Where the stack and the device line are, to keep labels off them.
    let ink = ink_of(&s.buckets, &xs, &yb, context_bytes);
    if let Some(u) = usable_bytes {
        limit_line(&mut svg, u, yb(u), &ink);
    }

    phase_strip(&mut svg, &xs, &runs);
    svg.text(
        (PLOT.x0 + PLOT.x1) / 2.0,
        H - 12.0,
        12.0,
        Anchor::Middle,
        r##"fill="#333" class="axis-title""##,
        &format!("allocator events in run order ({n} allocations and frees)"),
    );
    legend(&mut svg, &present, &s.at_peak, usable_bytes.is_some());
    if n > 0 {
        peak_marker(
            &mut svg,
            tl,
            profile,
            &xs,
            yb(peak_total),
            usable_bytes.map(yb),
            &ink,
        );
    }
    svg.finish()
}

/// The device peak (reserved + context) and the top the y axis must reach: the stack, the
/// device line and the card's usable memory.
fn extents(buckets: &[Bucket], usable_bytes: Option<u64>, context_bytes: u64) -> (u64, u64) {
    let max_stack = buckets.iter().map(|b| b.through(LAYERS - 1)).max();
    let device_peak = buckets
        .iter()
        .map(|b| b.reserved)
        .max()
        .unwrap_or(0)
        .saturating_add(context_bytes);
    let top = [
        max_stack.unwrap_or(0),
        device_peak,
        usable_bytes.unwrap_or(0),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    (device_peak, top)
}

/// Each column's x span, the stack's top and the device line's height.
fn ink_of(buckets: &[Bucket], xs: &Scale, yb: &dyn Fn(u64) -> f64, context_bytes: u64) -> Ink {
    Ink {
        columns: buckets
            .iter()
            .map(|b| {
                (
                    xs.at(b.start as f64),
                    xs.at(b.end as f64),
                    yb(b.through(LAYERS - 1)),
                    yb(b.reserved.saturating_add(context_bytes)),
                )
            })
            .collect(),
    }
}

/// "allocated peak … · device peak … · … usable: fits / does not fit".
fn subtitle(profile: &MemoryProfile, device_peak: u64, usable_bytes: Option<u64>) -> String {
    let mut sub = format!(
        "allocated peak {} in {}",
        human(profile.peak_allocated),
        profile.peak_phase.key()
    );
    let _ = write!(
        sub,
        " · device peak {} (reserved + context)",
        human(device_peak)
    );
    if let Some(u) = usable_bytes {
        let verdict = if device_peak <= u {
            format!("fits, {} headroom", human(u - device_peak))
        } else {
            format!("does not fit, short by {}", human(device_peak - u))
        };
        let _ = write!(sub, " · {} usable: {verdict}", human(u));
    }
    sub
}

/// The stacked areas, painted top layer first so each lower one covers its share, then the
/// device line (reserved + context) over them.
fn areas_and_device_line(
    svg: &mut Svg,
    buckets: &[Bucket],
    xs: &Scale,
    yb: &dyn Fn(u64) -> f64,
    present: &[usize],
    context_bytes: u64,
) {
    for &l in present.iter().rev() {
        let d = step_path(buckets, xs, &|b| yb(b.through(l)), true);
        svg.raw(&format!(
            r#"<path class="area" data-layer="{}" d="{d}" fill="{}" stroke="none"><title>{}</title></path>"#,
            layer_key(l),
            layer_color(l),
            layer_label(l)
        ));
    }
    let d = step_path(
        buckets,
        xs,
        &|b| yb(b.reserved.saturating_add(context_bytes)),
        false,
    );
    svg.raw(&format!(
        r##"<path id="device-line" d="{d}" fill="none" stroke="#222" stroke-width="1.5" stroke-dasharray="6 4"><title>reserved + CUDA context (what nvidia-smi shows)</title></path>"##
    ));
}

/// The card's usable memory as a red line at `y`, its label placed off the stack and the
/// device line.
fn limit_line(svg: &mut Svg, usable: u64, y: f64, ink: &Ink) {
    let blocked = |r: &Rect| {
        let (lo, hi) = ink.device_span(r.x0, r.x1);
        r.y1 > ink.stack_top(r.x0, r.x1) || !(r.y1 < lo || r.y0 > hi)
    };
    draw::limit_line(svg, &PLOT, (usable, y), &blocked);
}

/// Phases as faint bands behind everything in the plot.
fn phase_tints(svg: &mut Svg, xs: &Scale, runs: &[(Phase, usize, usize)]) {
    for &(p, a, b) in runs {
        svg.rect(
            Rect::new(xs.at(a as f64), PLOT.y0, xs.at(b as f64), PLOT.y1),
            &format!(
                r#"class="phase-tint" data-phase="{}" fill="{}" fill-opacity="0.12""#,
                p.key(),
                phase_color(p)
            ),
        );
    }
}

/// The two axis lines and the event ticks.
fn axes(svg: &mut Svg, xs: &Scale, n: usize) {
    svg.line(PLOT.x0, PLOT.y0, PLOT.x0, PLOT.y1, r##"stroke="#333""##);
    svg.line(PLOT.x0, PLOT.y1, PLOT.x1, PLOT.y1, r##"stroke="#333""##);
    x_axis(
        svg,
        xs,
        &ticks(n.max(1) as f64, 8, true)
            .into_iter()
            .filter(|&t| t <= n as f64)
            .collect::<Vec<_>>(),
        PLOT.y1,
        PLOT.y1 + 19.0,
    );
}
