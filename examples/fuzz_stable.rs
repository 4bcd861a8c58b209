//! The fuzz targets of fuzz/targets.rs on stable Rust, without libFuzzer: inputs are mutated
//! from the fixture corpus (configs, config.json files, GPU profiles, NVML readings, OOM logs)
//! by a seeded generator, so a run reproduces. Panics and inputs over 1 s of CPU time are counted
//! and the first 20 of each are written to fuzz/artifacts/stable-<target>-<kind>-<n>.bin.
//!
//!     nice -n 19 cargo run --example fuzz_stable -- 1000000 [seed [target]]
//!
//! runs that many inputs, split over the four targets (or a quarter of them for one target). This is a mutational fuzzer without
//! coverage feedback: it finds what mutations of real inputs reach, not what coverage-guided
//! search would (see fuzz/README.md for cargo-fuzz).

#[path = "../fuzz/targets.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

/// One input taking longer than this, in CPU time of this thread, is a finding (debug build).
const SLOW: Duration = Duration::from_secs(1);
/// Inputs of each finding kind saved per target.
const SAVED: u64 = 20;

/// CPU time of this thread (Linux: /proc/thread-self/schedstat, first field in ns), so a
/// shared machine's load does not make inputs look slow; wall time elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// How long `f` took: CPU time where the system says, else wall time.
fn timed(f: impl FnOnce()) -> Duration {
    let (cpu, wall) = (cpu_time(), Instant::now());
    f();
    match (cpu, cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => wall.elapsed(),
    }
}

type Target = (&'static str, fn(&[u8]), &'static [&'static str]);

const TARGETS: [Target; 4] = [
    (
        "config",
        targets::config,
        &["fixtures/configs", "profiles/models"],
    ),
    ("hf_config", targets::hf_config, &["fixtures/hf"]),
    (
        "gpu_files",
        targets::gpu_files,
        &["profiles/gpus", "fixtures/nvml"],
    ),
    ("diagnose", targets::diagnose, &["fixtures/oom"]),
];

/// Bytes mutations insert: syntax, odd characters, numbers past every limit.
const TOKENS: &[&str] = &[
    "\u{200b}",
    "\u{a0}",
    "\u{feff}",
    "\u{2019}",
    "\0",
    "\n",
    "=",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ".",
    "#",
    "\\",
    "-1",
    "0",
    "1e999",
    "nan",
    "inf",
    "2**64",
    "99999999999999999999",
    "18446744073709551616",
    "4294967296",
    "1024",
    "1025",
    "16777217",
    "True",
    "None",
    "[[x]]",
    "n_layer = 1000000\n",
    "\"num_hidden_layers\": 100000000,",
    "GiB",
    " MiB",
    "Tried to allocate ",
    "total_bytes = \"2000TiB\"\n",
    "torch.OutOfMemoryError: CUDA out of memory. ",
];

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus(dirs: &[&str]) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = dirs.iter().map(|d| Path::new(d).into()).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_none_or(|e| e != "md") {
            files.push(std::fs::read(&p).unwrap());
        }
    }
    files.sort();
    files
}

/// One to four mutations of a corpus file, sometimes spliced with another.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, t.iter().copied());
            }
            2 => {
                let end = (at + rng.below(64)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(256)).min(data.len());
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            4 => data.truncate(at),
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                data.splice(at.., other[from..].iter().copied());
            }
            _ => {
                // A digit run replaced by a huge number.
                if let Some(i) = data[at..].iter().position(u8::is_ascii_digit) {
                    let i = at + i;
                    let big = TOKENS[20 + rng.below(7)].as_bytes();
                    data.splice(i..i + 1, big.iter().copied());
                }
            }
        }
    }
    data
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0x5eed);
    // Optionally one target only: the inputs are the same as in a full run with this seed.
    let only = args.get(3).cloned();
    std::panic::set_hook(Box::new(|_| {})); // counted below, not printed for each input
    std::fs::create_dir_all("fuzz/artifacts").unwrap();
    let mut failed = false;
    for (name, target, dirs) in TARGETS {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let corpus = corpus(dirs);
        let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
        let (mut panics, mut slow, mut slowest) = (0u64, 0u64, Duration::ZERO);
        let start = Instant::now();
        let n = total / TARGETS.len() as u64;
        for i in 0..n {
            // Every corpus file once as it is, then mutations.
            let data = match corpus.get(i as usize) {
                Some(file) => file.clone(),
                None => mutate(&mut rng, &corpus),
            };
            let mut ok = false;
            let took = timed(|| ok = catch_unwind(AssertUnwindSafe(|| target(&data))).is_ok());
            slowest = slowest.max(took);
            if !ok || took > SLOW {
                let count = if ok { &mut slow } else { &mut panics };
                *count += 1;
                if *count <= SAVED {
                    let kind = if ok { "slow" } else { "panic" };
                    let path = format!("fuzz/artifacts/stable-{name}-{kind}-{i}.bin");
                    std::fs::write(&path, &data).unwrap();
                    println!("{name}: {kind} on input {i}, saved to {path}");
                }
            }
        }
        println!(
            "{name}: {n} inputs from {} corpus files in {:.0?}: {panics} panics, {slow} over {SLOW:?}, slowest {slowest:.1?}",
            corpus.len(),
            start.elapsed()
        );
        failed |= panics > 0 || slow > 0;
    }
    std::process::exit(i32::from(failed));
}
