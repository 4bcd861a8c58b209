//! The op-level memory simulator: a small FakeTensor in Rust.
//!
//! `Engine` hands out tensors with reference counts (Python variables, autograd's saved
//! tensors, autocast's cache, `.grad`, optimizer state); an op allocates its outputs and saves
//! what its backward needs; a tensor is freed when its last reference goes. `backward` walks
//! the recorded nodes in reverse creation order, as PyTorch's engine does for a sequential
//! graph. The result is a `Timeline` of named tensors and alloc/free events; `replay` runs it
//! through a model of the CUDA caching allocator to get allocated, reserved and device peaks.

pub mod allocator;
pub mod amp;
pub mod autograd;
pub mod candle;
pub mod dtype;
pub mod engine;
mod free_list;
mod fused;
pub mod ops;
pub mod optim;
pub mod parallel;
pub mod replay;
pub mod runtime;
pub mod sac;
pub mod spare;
pub mod timeline;

pub use candle::{candle_phase_peaks, phase_bytes, simulate_candle, PhaseBytes};
pub use dtype::DType;
pub use replay::{replay, MemoryProfile, PhasePeak};
pub use runtime::Runtime;
pub use timeline::{Category, Name, Phase, Residency, Shape, Timeline};
