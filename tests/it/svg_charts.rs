//! The pictures, read back as XML: the scale is recovered from the chart's own tick labels,
//! and the limit line, the peak and the chosen point must sit where the numbers say.

use roxmltree::{Document, Node};
use vramplan::budget::{find, Budget, GpuProfile, DEFAULT_MARGIN_BYTES};
use vramplan::config::TrainConfig;
use vramplan::report::svg::{
    batch_grid, sweep_series, sweep_svg, timeline_svg, SweepSeries, MAX_POINTS,
};
use vramplan::run::{run, Run};
use vramplan::sim::replay::live_blocks_at;
use vramplan::sim::{Category, Phase};
use vramplan::units::{human, GIB};

// ---------------------------------------------------------------- reading the SVG back

fn attr(n: Node, name: &str) -> f64 {
    n.attribute(name)
        .unwrap_or_else(|| panic!("<{}> has no {name}", n.tag_name().name()))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn has_class(n: Node, class: &str) -> bool {
    n.attribute("class")
        .is_some_and(|c| c.split(' ').any(|c| c == class))
}

fn by_class<'a>(doc: &'a Document, class: &str) -> Vec<Node<'a, 'a>> {
    doc.descendants().filter(|n| has_class(*n, class)).collect()
}

fn by_id<'a>(doc: &'a Document, id: &str) -> Option<Node<'a, 'a>> {
    doc.descendants().find(|n| n.attribute("id") == Some(id))
}

fn text_of(n: Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect()
}

fn child<'a>(n: Node<'a, 'a>, tag: &str) -> Node<'a, 'a> {
    n.children()
        .find(|c| c.tag_name().name() == tag)
        .unwrap_or_else(|| panic!("no <{tag}> in a tick"))
}

/// value → pixel, from the two ticks farthest apart: each tick group is a line at the tick's
/// position and a label with its value ("12.5 GiB", "0", "2000").
struct Axis {
    v0: f64,
    p0: f64,
    v1: f64,
    p1: f64,
}

impl Axis {
    fn read(doc: &Document, class: &str, coord: &str) -> Axis {
        let mut ticks: Vec<(f64, f64)> = by_class(doc, class)
            .into_iter()
            .map(|g| {
                let label = text_of(child(g, "text"));
                let v: f64 = label
                    .trim_end_matches(" GiB")
                    .parse()
                    .unwrap_or_else(|e| panic!("tick label {label:?}: {e}"));
                (v, attr(child(g, "line"), coord))
            })
            .collect();
        assert!(ticks.len() >= 3, "{class}: {} ticks", ticks.len());
        ticks.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (a, b) = (ticks[0], ticks[ticks.len() - 1]);
        let axis = Axis {
            v0: a.0,
            p0: a.1,
            v1: b.0,
            p1: b.1,
        };
        // The ticks in between agree with the same linear scale.
        for &(v, p) in &ticks {
            assert!((axis.at(v) - p).abs() < 0.15, "{class} tick {v} at {p}");
        }
        axis
    }

    fn at(&self, v: f64) -> f64 {
        self.p0 + (v - self.v0) / (self.v1 - self.v0) * (self.p1 - self.p0)
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / GIB as f64
}

/// Estimated box of every <text>, as the charts' layout estimates it (0.62 em a character,
/// DejaVu Sans' digit width; 0.8 em above the baseline, 0.25 em below).
fn text_boxes(doc: &Document) -> Vec<(String, [f64; 4])> {
    doc.descendants()
        .filter(|n| n.tag_name().name() == "text")
        .map(|n| {
            let s = text_of(n);
            let (x, y, size) = (attr(n, "x"), attr(n, "y"), attr(n, "font-size"));
            let w = s.chars().count() as f64 * size * 0.62;
            let x0 = match n.attribute("text-anchor") {
                Some("middle") => x - w / 2.0,
                Some("end") => x - w,
                _ => x,
            };
            (s, [x0, y - 0.8 * size, x0 + w, y + 0.25 * size])
        })
        .collect()
}

fn assert_no_overlapping_labels(doc: &Document) {
    let boxes = text_boxes(doc);
    let (w, h) = (
        attr(doc.root_element(), "width"),
        attr(doc.root_element(), "height"),
    );
    for (i, (s, a)) in boxes.iter().enumerate() {
        assert!(
            a[0] >= 0.0 && a[1] >= 0.0 && a[2] <= w && a[3] <= h,
            "{s:?} leaves the picture: {a:?}"
        );
        for (t, b) in &boxes[i + 1..] {
            let overlap = a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
            assert!(!overlap, "labels overlap: {s:?} {a:?} and {t:?} {b:?}");
        }
    }
}

// ---------------------------------------------------------------- the runs drawn

fn gpu() -> GpuProfile {
    find("rtx3060").unwrap()
}

fn small() -> TrainConfig {
    TrainConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 128,
        block_size: 64,
        vocab_size: 512,
        batch_size: 4,
        gradient_accumulation_steps: 2,
        compile: false,
        ..TrainConfig::default()
    }
}

/// The seed case at a batch that fits: over 8000 events, so the curves are downsampled.
fn seed_fitting() -> TrainConfig {
    let o: Vec<String> = [
        "--compile=False",
        "--batch_size=7",
        "--gradient_accumulation_steps=10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/configs/seed-rtx3060.py"
    );
    vramplan::config::load(Some(std::path::Path::new(path)), &o)
        .unwrap()
        .config
}

/// Draws the run and checks everything the picture claims against the simulation.
fn check_timeline(cfg: &TrainConfig, usable: Option<u64>) -> String {
    let gpu = gpu();
    let Run {
        timeline: tl,
        profile: p,
        ..
    } = run(cfg, Some(&gpu)).unwrap();
    let ctx = gpu.context_bytes;
    let svg = timeline_svg(&tl, &p, usable, ctx);
    let doc = Document::parse(&svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    let ys = Axis::read(&doc, "y-tick", "y1");
    let xs = Axis::read(&doc, "x-tick", "x1");

    // The limit line at the usable memory, on the y axis's own scale.
    match usable {
        Some(u) => {
            let line = by_id(&doc, "limit").expect("a limit line");
            let want = ys.at(gib(u));
            assert!((attr(line, "y1") - want).abs() < 0.15, "limit at {}", want);
            assert_eq!(attr(line, "y1"), attr(line, "y2"), "horizontal");
        }
        None => assert!(by_id(&doc, "limit").is_none()),
    }

    // The peak marker on the peak event, at the top of the stack there.
    let m = by_id(&doc, "peak-marker").expect("a peak marker");
    assert_eq!(
        m.attribute("data-event"),
        Some(p.peak_event.to_string().as_str())
    );
    let want_x = xs.at(p.peak_event as f64 + 0.5);
    assert!(
        (attr(m, "cx") - want_x).abs() < 0.15,
        "marker x vs {want_x}"
    );
    let want_y = ys.at(gib(p.peak_allocated + ctx));
    assert!(
        (attr(m, "cy") - want_y).abs() < 0.15,
        "marker y vs {want_y}"
    );

    // The stack's highest point is the peak: downsampling kept it, and nothing is higher.
    let areas = by_class(&doc, "area");
    let top = areas
        .iter()
        .flat_map(|a| {
            let d = a.attribute("d").unwrap().to_string();
            d.split('V')
                .skip(1)
                .map(|s| {
                    s.split('H')
                        .next()
                        .unwrap()
                        .trim_end_matches('Z')
                        .parse::<f64>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .fold(f64::INFINITY, f64::min);
    assert!(
        (top - attr(m, "cy")).abs() < 0.15,
        "stack top {top} vs the peak"
    );
    for a in &areas {
        let d = a.attribute("d").unwrap();
        assert!(d.matches('H').count() <= MAX_POINTS + 1, "downsampled");
    }

    // Every category alive at the peak is in the legend, with its bytes there.
    let mut at_peak = [0u64; Category::ALL.len()];
    for (t, block) in live_blocks_at(&tl, &p, p.peak_event) {
        at_peak[tl.tensors[t as usize].category as usize] += block;
    }
    let legend: Vec<String> = by_class(&doc, "legend-entry")
        .into_iter()
        .map(|g| {
            let texts: Vec<String> = g
                .children()
                .filter(|t| t.tag_name().name() == "text")
                .map(text_of)
                .collect();
            texts.join("|")
        })
        .collect();
    for (i, c) in Category::ALL.iter().enumerate() {
        if at_peak[i] > 0 {
            let entry = format!("{}|{}", c.label(), human(at_peak[i]));
            assert!(legend.contains(&entry), "{entry:?} not in {legend:?}");
        }
    }
    assert!(legend.contains(&format!("CUDA context|{}", human(ctx))));
    let total = text_of(by_class(&doc, "legend-total")[0]);
    assert_eq!(total, human(p.peak_allocated + ctx));

    // The peak's label names the largest tensor alive there.
    let largest = live_blocks_at(&tl, &p, p.peak_event)
        .into_iter()
        .map(|(t, _)| &tl.tensors[t as usize])
        .max_by_key(|r| r.bytes)
        .unwrap();
    let label: String = by_class(&doc, "peak-label")
        .into_iter()
        .map(text_of)
        .collect();
    assert!(label.contains(&human(largest.bytes)), "{label}");
    assert!(label.contains(p.peak_phase.key()), "{label}");

    // Each phase labelled once; each occurrence of a phase shaded.
    let mut runs = 0;
    let mut last = None;
    for e in &tl.events {
        if last != Some(e.phase) {
            runs += 1;
            last = Some(e.phase);
        }
    }
    assert_eq!(by_class(&doc, "phase-band").len(), runs);
    for ph in Phase::ALL {
        let seen = tl.events.iter().any(|e| e.phase == ph);
        let labels: Vec<_> = by_class(&doc, "phase-label")
            .into_iter()
            .filter(|n| text_of(*n) == ph.key())
            .collect();
        assert_eq!(labels.len(), usize::from(seen), "{}", ph.key());
    }

    assert_no_overlapping_labels(&doc);
    svg
}

#[test]
fn a_small_run_on_a_big_card() {
    let usable = Budget::from_profile(gpu(), DEFAULT_MARGIN_BYTES)
        .unwrap()
        .usable_bytes;
    check_timeline(&small(), Some(usable));
}

#[test]
fn the_seed_case_downsampled() {
    let usable = Budget::from_profile(gpu(), DEFAULT_MARGIN_BYTES)
        .unwrap()
        .usable_bytes;
    let svg = check_timeline(&seed_fitting(), Some(usable));
    assert!(svg.contains("fits,"), "the subtitle's verdict");
}

#[test]
fn a_run_over_the_limit_and_one_without_a_card() {
    // Half the small run's device peak: the stack crosses the line.
    check_timeline(&small(), Some(200 << 20));
    check_timeline(&small(), None);
}

#[test]
fn names_are_escaped_and_an_empty_timeline_still_draws() {
    let tl = vramplan::sim::Timeline::default();
    let p = vramplan::sim::replay(&tl, false);
    let svg = timeline_svg(&tl, &p, Some(GIB), 0);
    let doc = Document::parse(&svg).unwrap();
    assert!(by_id(&doc, "peak-marker").is_none());
    assert!(by_id(&doc, "limit").is_some());
}

// ---------------------------------------------------------------- the sweep

fn check_sweep(series: &[SweepSeries], usable: u64, chosen: Option<(String, u64)>) -> String {
    let svg = sweep_svg(series, usable, chosen.clone());
    let doc = Document::parse(&svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    let ys = Axis::read(&doc, "y-tick", "y1");
    let xs = Axis::read(&doc, "x-tick", "x1");
    let line = by_id(&doc, "limit").expect("a limit line");
    assert!((attr(line, "y1") - ys.at(gib(usable))).abs() < 0.15);

    // Every point where its numbers say, filled when it fits.
    for s in series {
        let g = by_class(&doc, "series")
            .into_iter()
            .find(|g| g.attribute("data-label") == Some(s.label.as_str()))
            .expect("a group per series");
        let points: Vec<Node> = g.descendants().filter(|n| has_class(*n, "point")).collect();
        assert_eq!(points.len(), s.points.len());
        for &(b, bytes) in &s.points {
            let c = points
                .iter()
                .find(|n| n.attribute("data-batch") == Some(b.to_string().as_str()))
                .unwrap();
            assert!((attr(*c, "cx") - xs.at(b as f64)).abs() < 0.15);
            assert!((attr(*c, "cy") - ys.at(gib(bytes))).abs() < 0.15);
            let hollow = c.attribute("fill") == Some("#ffffff");
            assert_eq!(hollow, bytes > usable, "batch {b}");
        }
        assert!(by_class(&doc, "legend-entry")
            .iter()
            .any(|e| e.attribute("data-label") == Some(s.label.as_str())));
    }

    let point = chosen.as_ref().and_then(|(label, b)| {
        series
            .iter()
            .find(|s| &s.label == label)
            .and_then(|s| s.points.iter().find(|p| p.0 == *b))
    });
    match point {
        Some(&(b, bytes)) => {
            let c = by_id(&doc, "chosen").expect("the chosen point marked");
            assert!((attr(c, "cx") - xs.at(b as f64)).abs() < 0.15);
            assert!((attr(c, "cy") - ys.at(gib(bytes))).abs() < 0.15);
            let label = text_of(by_class(&doc, "chosen-label")[0]);
            assert!(label.contains(&format!("batch_size {b}")), "{label}");
        }
        None => assert!(by_id(&doc, "chosen").is_none()),
    }
    assert_no_overlapping_labels(&doc);
    svg
}

#[test]
fn a_simulated_sweep_marks_the_limit_and_the_chosen_batch() {
    let gpu = gpu();
    let base = small();
    let (base, gpu) = (&base, &gpu);
    let peak = |flash: bool| {
        move |b: u64| {
            let mut c = base.clone();
            c.batch_size = b;
            c.flash = flash;
            let sim = run(&c, Some(gpu))?;
            Ok(sim.profile.final_reserved + gpu.context_bytes)
        }
    };
    let grid = batch_grid(&[24, 40], 16);
    let series = vec![
        sweep_series("manual attention", &grid, &peak(false)).unwrap(),
        sweep_series("flash attention", &grid, &peak(true)).unwrap(),
    ];
    // A limit between the curves' ends, so some points fit and some do not.
    let usable = series[0].points.iter().map(|p| p.1).max().unwrap() * 3 / 4;
    let best = series[1]
        .points
        .iter()
        .filter(|p| p.1 <= usable)
        .max()
        .unwrap()
        .0;
    check_sweep(&series, usable, Some(("flash attention".into(), best)));
    check_sweep(&series, usable, None);
    check_sweep(&series, usable, Some(("no such knob".into(), best)));
}

#[test]
fn a_sweep_of_long_labels_keeps_them_apart() {
    let series: Vec<SweepSeries> = (0..4)
        .map(|k| SweepSeries {
            label: format!("knob number {k}, exact tokens/step & <escaped>"),
            points: (1..=12).map(|b| (b, (b * (k + 2)) << 29)).collect(),
        })
        .collect();
    let svg = check_sweep(&series, 10 * GIB, Some((series[2].label.clone(), 4)));
    assert!(svg.contains("&lt;escaped&gt;"));
}
