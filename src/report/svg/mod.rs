//! Pictures, as SVG: the run's memory over time (`check --svg`) and the peak against
//! batch_size for each knob (`suggest --svg`).
//!
//! Written by hand rather than with plotters: both charts are rectangles, step paths, lines and
//! text, and what takes the code is the layout plotters leaves to the caller anyway (a legend
//! outside the plot, a phase strip under the axis, labels kept apart — with no font library
//! its SVG backend estimates text the same way as here). Writing the elements ourselves gives
//! them ids and classes (`#limit`, `#peak-marker`, `.y-tick`, `.legend-entry`) that tests and
//! stylesheets can find by meaning, `<title>` tooltips in a browser, and no dependency.

mod annotate;
mod draw;
mod layout;
mod sweep;
mod sweep_chart;
mod timeline;

pub use sweep::{batch_grid, sweep_series, sweep_svg, SweepSeries};
pub use sweep_chart::sweep_chart;
pub use timeline::{timeline_svg, MAX_POINTS};
