//! The timeline chart's page, shared by the chart (`timeline`) and its annotations
//! (`annotate`): the page's width and plot area, each layer's colour and names, each phase's
//! colour, and where the chart has put ink.

use super::draw::Rect;
use crate::sim::{Category, Phase};

pub(super) const W: f64 = 1200.0;
/// The plot area; the legend sits to its right, the phases under it.
pub(super) const PLOT: Rect = Rect {
    x0: 78.0,
    y0: 70.0,
    x1: 900.0,
    y1: 500.0,
};

/// Layer 0 is the CUDA context, then the categories in `Category::ALL` order (bottom to top).
pub(super) const LAYERS: usize = Category::ALL.len() + 1;
const CONTEXT_LABEL: &str = "CUDA context";

pub(super) fn layer_color(l: usize) -> &'static str {
    [
        "#cfcfcf", // context
        "#4e79a7", // parameters
        "#f28e2b", // gradients
        "#59a14f", // optimizer state
        "#edc948", // activations
        "#b07aa1", // logits and loss
        "#76b7b2", // autocast copies
        "#9c755f", // workspace
        "#8c8c8c", // other
        "#e15759", // KV cache
        "#edc948", // communication buffers
    ][l]
}

pub(super) fn layer_label(l: usize) -> &'static str {
    if l == 0 {
        CONTEXT_LABEL
    } else {
        Category::ALL[l - 1].label()
    }
}

pub(super) fn layer_key(l: usize) -> &'static str {
    if l == 0 {
        "context"
    } else {
        Category::ALL[l - 1].key()
    }
}

pub(super) fn phase_color(p: Phase) -> &'static str {
    match p {
        Phase::Init => "#9a9a9a",
        Phase::Eval => "#6baed6",
        Phase::Forward => "#74c476",
        Phase::Backward => "#fd8d3c",
        Phase::Optimizer => "#9e9ac8",
        Phase::EvalAfterStep => "#3182bd",
        Phase::Prefill => "#74c476",
        Phase::Decode => "#fd8d3c",
    }
}

/// Where the chart has ink, per bucket: (x from, x to, y of the stack's top, y of the device
/// line), in pixels.
pub(super) struct Ink {
    pub(super) columns: Vec<(f64, f64, f64, f64)>,
}

impl Ink {
    fn over(&self, x0: f64, x1: f64) -> impl Iterator<Item = &(f64, f64, f64, f64)> {
        self.columns.iter().filter(move |c| c.0 <= x1 && c.1 >= x0)
    }

    /// The highest (smallest y) the stack reaches between x0 and x1.
    pub(super) fn stack_top(&self, x0: f64, x1: f64) -> f64 {
        self.over(x0, x1).map(|c| c.2).fold(f64::INFINITY, f64::min)
    }

    /// The device line's y range between x0 and x1 (risers included).
    pub(super) fn device_span(&self, x0: f64, x1: f64) -> (f64, f64) {
        self.over(x0, x1)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
                (lo.min(c.3), hi.max(c.3))
            })
    }
}
