//! `suggest`: the largest configuration that fits, keeping the tokens per optimizer step,
//! ranked by predicted speed. Every candidate is re-simulated; nothing here estimates memory.

pub mod batch;
mod candidate;
pub mod command;
pub mod convention;
mod ctx;
pub mod hf_args;
pub mod infer;
pub mod knobs;
pub mod multi;
pub mod parallel;
pub mod render;
pub mod script;
pub mod search;
pub mod speed;
pub mod vllm;

pub use search::{suggest, suggest_multi, Candidate, SuggestReport};
