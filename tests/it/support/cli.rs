//! Running the built `vramplan` as a user would, from the repository root, and reading its JSON.
#![allow(dead_code)] // each test binary uses its own subset

use serde_json::Value;
use std::process::Command;
use vramplan::budget::{find, Budget};
use vramplan::config::TrainConfig;
use vramplan::report::check;

/// Runs `vramplan args` with NO_COLOR=1, without VRAMPLAN_FAKE_NVML, and with `env` on top:
/// (exit code, or -1 when killed by a signal; stdout; stderr).
pub fn vramplan_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vramplan"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env_remove("VRAMPLAN_FAKE_NVML")
        .envs(env.iter().copied())
        .output()
        .expect("run vramplan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `vramplan args` (see [`vramplan_env`]): (exit code, stdout, stderr).
pub fn vramplan(args: &[&str]) -> (i32, String, String) {
    vramplan_env(args, &[])
}

/// Runs `vramplan args` and parses its stdout as JSON, panicking with stdout and stderr when
/// it is not: (exit code, the JSON).
pub fn json(args: &[&str]) -> (i32, Value) {
    let (code, out, err) = vramplan(args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

/// One rank's device peak of `cfg` on `gpu` through `check`'s simulator, and the usable bytes.
pub fn device_peak(cfg: &TrainConfig, gpu: &str) -> (u64, u64) {
    let b = Budget::from_profile(find(gpu).unwrap(), 256 << 20).unwrap();
    let r = check::build(cfg, Some(&b)).unwrap();
    (r.peak.device_bytes, b.usable_bytes)
}

/// `vramplan suggest --json args`: (exit code, the JSON).
pub fn suggest_json(args: &[&str]) -> (i32, Value) {
    json(&[&["suggest", "--json"], args].concat())
}

/// `explain TENSOR` on `base` plus `extra`: its first line and its lifetime line.
pub fn explain(tensor: &str, base: &[&str], extra: &[&str]) -> (String, String) {
    let (code, out, err) = vramplan(&[&["explain", tensor][..], base, extra].concat());
    assert_eq!(code, 0, "explain {tensor}: {err}");
    let mut lines = out.lines();
    let first = lines.next().unwrap().to_string();
    let life = lines
        .find(|l| l.contains(" x born in "))
        .unwrap_or_default()
        .trim()
        .to_string();
    (first, life)
}

/// `explain` has no tensor `tensor` in the run `base` + `extra` (it exits 2 naming none).
pub fn explains_nothing(tensor: &str, base: &[&str], extra: &[&str]) -> bool {
    let (code, _, _) = vramplan(&[&["explain", tensor][..], base, extra].concat());
    code == 2
}

/// The forward phase's allocated bytes at its end (what the forward saved for the backward).
pub fn forward_end(base: &[&str], extra: &[&str]) -> u64 {
    let (code, v) = json(&[&["check", "--json"][..], base, extra].concat());
    assert_eq!(code, 0);
    let phases = v["phases"].as_array().unwrap();
    let fwd = phases.iter().find(|p| p["name"] == "forward").unwrap();
    fwd["end_allocated_bytes"].as_u64().unwrap()
}
