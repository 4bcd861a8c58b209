//! The fuzz targets' bodies, shared by the cargo-fuzz targets (fuzz/fuzz_targets/*.rs) and the
//! stable-Rust fallback (examples/fuzz_stable.rs). Each takes arbitrary bytes, calls a loader
//! as the CLI does, and checks what the user would read: any panic is a failure, and every
//! error must be one plain line (no Rust Debug escapes, no serde jargon).

use vramplan::budget::{FakeNvml, GpuProfile};
use vramplan::config::{load_hf_str, load_str};

/// What no error message may contain.
const JARGON: [&str; 4] = ["\\u{", "borrowed", "Error {", "Some("];

/// `message` is one line without jargon, unless the input itself holds the word (a message
/// may quote the user's text).
fn check_message(what: &str, message: &str, input: &str) {
    assert!(!message.contains('\n'), "{what}: two lines: {message}");
    for j in JARGON.iter().filter(|j| !input.contains(*j)) {
        assert!(!message.contains(j), "{what}: {j:?} in {message}");
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A config file as .py, as .toml and without an extension (the format found by content).
pub fn config(data: &[u8]) {
    let text = text(data);
    for name in ["fuzz.py", "fuzz.toml", "fuzz"] {
        match load_str(name, &text, &[]) {
            // What loads must pass the checks every config passes (limits included).
            Ok(loaded) => assert!(
                loaded.config.validate().is_ok(),
                "{name}: loaded but invalid"
            ),
            Err(e) => check_message(name, e.message(), &text),
        }
    }
}

/// A Hugging Face config.json, as --hf-config reads it.
pub fn hf_config(data: &[u8]) {
    let text = text(data);
    match load_hf_str("config.json", &text) {
        Ok(loaded) => assert!(loaded.config.validate().is_ok(), "loaded but invalid"),
        Err(e) => check_message("config.json", e.message(), &text),
    }
}

/// A --gpu-file profile and a VRAMPLAN_FAKE_NVML reading list.
pub fn gpu_files(data: &[u8]) {
    let text = text(data);
    if let Err(e) = GpuProfile::from_toml_str(&text, "gpu.toml") {
        check_message("gpu.toml", e.message(), &text);
    }
    if let Err(e) = FakeNvml::from_json(&text, "nvml.json") {
        check_message("nvml.json", e.message(), &text);
    }
}

/// An OOM log as `vramplan diagnose` reads it (lossy UTF-8), without a config.
pub fn diagnose(data: &[u8]) {
    let d = vramplan::diagnose::analyze(&text(data), None);
    let _ = vramplan::diagnose::render_text(&d);
}
