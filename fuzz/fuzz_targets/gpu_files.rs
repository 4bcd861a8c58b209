#![no_main]
//! cargo fuzz run gpu_files (see fuzz/README.md).

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::gpu_files(data));
