#![no_main]
//! cargo fuzz run diagnose (see fuzz/README.md).

#[path = "../targets.rs"]
#[allow(dead_code)] // each target uses one of the four bodies
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::diagnose(data));
