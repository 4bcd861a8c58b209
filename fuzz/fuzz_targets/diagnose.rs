#![no_main]
//! cargo fuzz run diagnose (see fuzz/README.md).

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::diagnose(data));
