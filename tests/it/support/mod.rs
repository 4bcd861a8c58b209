//! What the integration tests share, one module a concern:
//! - [`cli`]: running the built binary as a user would, and reading its JSON;
//! - [`hf`]: the hand-count helpers of the Hugging Face presets;
//! - [`hostile`]: the binary run on hostile input under time and memory limits;
//! - [`sim`]: a whole simulated run, or an eager engine to call ops on;
//! - [`tiny_gpt`]: the tiny GPT-2 of the multi-GPU tests and readers of a Timeline;
//! - [`wrap`]: pastes broken at a fixed width by a terminal or a web page.
//!
//! Each test binary says `mod support;` and uses its own subset.
#![allow(dead_code)]

pub mod cli;
pub mod hf;
pub mod hostile;
pub mod sim;
pub mod tiny_gpt;
pub mod wrap;
