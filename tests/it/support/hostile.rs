//! Running the built binary on hostile input (issue 16) under a wall-time and a memory limit,
//! and what every answer must look like: a refusal is exit 2 with one plain line on stderr,
//! never a backtrace or Rust's Debug text.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Each run is killed after this long: a refusal takes milliseconds, the slowest valid input
/// here (a mutated log) well under a second in a debug build. The limit is a backstop against
/// unbounded work, not a benchmark: generous, so that a 2-core CI machine running the rest of
/// the suite beside it does not fail a run that is merely waiting for a core.
pub const WALL_LIMIT: Duration = Duration::from_secs(30);
/// Address space per run (ulimit -v, KiB): 4 GiB, a hundred times what a refusal needs.
pub const MEMORY_LIMIT_KIB: u64 = 4 << 20;

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

/// Runs `vramplan args` from the repository root under the limits, with `env` and `stdin`.
pub fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Outcome {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {MEMORY_LIMIT_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_vramplan"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env_remove("VRAMPLAN_FAKE_NVML")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vramplan");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // The binary may refuse before reading it all: a broken pipe is its answer, not ours.
        let _ = input.write_all(bytes);
    }
    drop(input);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > WALL_LIMIT {
            child.kill().unwrap();
            panic!("vramplan {args:?} ran past {WALL_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: format!("{args:?}"),
    }
}

/// No panic, no backtrace, no Rust Debug or serde text in what the user reads.
pub fn assert_plain(o: &Outcome) {
    for bad in [
        "panicked",
        "backtrace",
        "RUST_BACKTRACE",
        "\\u{",
        "borrowed",
        "Error {",
        "Some(",
        "memory allocation of",
    ] {
        assert!(
            !o.stderr.contains(bad),
            "{}: {bad:?} in {}",
            o.args,
            o.stderr
        );
    }
}

/// Refused: exit 2, one line on stderr starting with `vramplan: ` and containing each of `says`.
pub fn assert_refused(o: &Outcome, says: &[&str]) {
    assert_eq!(
        o.code, 2,
        "{}: stdout {} stderr {}",
        o.args, o.stdout, o.stderr
    );
    assert_eq!(
        o.stderr.lines().count(),
        1,
        "{}: one line: {}",
        o.args,
        o.stderr
    );
    assert!(
        o.stderr.starts_with("vramplan: "),
        "{}: {}",
        o.args,
        o.stderr
    );
    assert_plain(o);
    for s in says {
        assert!(o.stderr.contains(s), "{}: {s:?} in {}", o.args, o.stderr);
    }
}

pub fn refused(args: &[&str], says: &[&str]) {
    assert_refused(&run(args, &[], None), says);
}

pub fn temp(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("vramplan-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}
