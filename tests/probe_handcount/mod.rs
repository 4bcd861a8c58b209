//! The hand count of candle's memory for the probe's GPT: a shape-only replay of candle 0.11.1.
//!
//! Temporary scaffolding, to be replaced by the simulator's `candle` runtime. Tensors carry
//! shapes, strides and byte counts but no data; each holds its storage and its backprop op holds
//! its inputs, as candle's `Arc`s do, so a storage is freed exactly when candle frees it. The
//! rules it encodes are written out in docs/candle-runtime.md.
#![allow(dead_code)]

pub mod backward;
pub mod formula;
pub mod gpt;
pub mod tensor;
