//! What `check` reports: the simulated run against a budget, as data (JSON) and as text.

pub mod check;
pub mod explain;
pub mod svg;
pub mod text;

pub use check::{build, CheckReport, Target};
