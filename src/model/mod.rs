//! Architectures as sequences of ops on the simulator's engine.

pub mod gpt2;

pub use gpt2::Gpt2;
