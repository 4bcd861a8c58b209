#![no_main]
//! cargo fuzz run config (see fuzz/README.md).

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::config(data));
