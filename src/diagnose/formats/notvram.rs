//! Failures that look like memory errors but are not VRAM exhaustion, so that a diagnosis
//! never tells someone to cut a batch size for them: Triton's on-chip shared memory or
//! registers, host RAM (ENOMEM, PyTorch's CPU allocator, std::bad_alloc, the kernel's OOM
//! killer, /dev/shm in containers), and CUDA illegal memory accesses (a bug, not a size).

use super::{re, Report};
use crate::diagnose::normalize::Normalized;
use crate::diagnose::pattern::Lazy;
use crate::diagnose::types::Format;
use crate::units::human;
use std::sync::OnceLock;

/// (pattern, kind, literals one of which the text must contain for the pattern to be tried).
type Rule = (Lazy, &'static str, &'static [&'static str]);

fn rules() -> &'static Vec<Rule> {
    static R: OnceLock<Vec<Rule>> = OnceLock::new();
    R.get_or_init(|| {
        vec![
            (
                re(r"out\s*of\s*resource:\s*shared\s*memory(?:,\s*Required:\s*(?P<req>\d+),\s*Hardware\s*limit:\s*(?P<lim>\d+))?"),
                "triton_smem",
                &["resource"],
            ),
            (re(r"out\s*of\s*resource:\s*(?P<res>\w+)"), "triton_other", &["resource"]),
            (
                re(r"DefaultCPUAllocator:\s*(?:can't|not\s*enough\s*memory)[^\n]*?(?:you\s*tried\s*to\s*allocate\s*(?P<req>\d+)\s*bytes)?"),
                "cpu_alloc",
                &["CPUAllocator"],
            ),
            (re(r"Cannot\s*allocate\s*memory|\[Errno\s*12\]|std::bad_alloc|\bMemoryError\b|Unable\s*to\s*allocate\s*[\d.]+\s*[KMGT]iB\s*for\s*an\s*array"), "host_ram", HOST_RAM_GATE),
            (re(r"Out\s*of\s*memory:\s*Killed\s*process|oom-kill|killed\s*by\s*signal:\s*Killed|(?m)^Killed\s*$|exitcode\s*:\s*-9\b"), "oom_killer", &["Killed", "oom-kill", "-9"]),
            (re(r"insufficient\s*shared\s*memory\s*\(shm\)|No\s*space\s*left\s*on\s*device[^\n]*/dev/shm"), "shm", &["shm"]),
            (re(r"an\s*illegal\s*memory\s*access\s*was\s*encountered|misaligned\s*address"), "illegal", &["illegal", "misaligned"]),
        ]
    })
}

/// The literals the host-RAM rule's alternatives need: `MemoryError` as a word of its own, as
/// the rule matches it (every PyTorch OOM prints `OutOfMemoryError`, and a gate on the bare
/// literal would compile the rule for all of them).
const HOST_RAM_GATE: &[&str] = &[
    "Cannot",
    "[Errno",
    "std::bad_alloc",
    "Unable",
    r"\bMemoryError\b",
];

pub fn scan(n: &Normalized, out: &mut Vec<Report>) {
    for (re, kind, gate) in rules() {
        if !super::has(&n.text, gate) {
            continue;
        }
        let Some(c) = re.captures(&n.text) else {
            continue;
        };
        let at = c.get(0).map_or(0, |x| x.start());
        let num = |k: &str| c.name(k).and_then(|v| v.as_str().parse::<u64>().ok());
        let what = match *kind {
            "triton_smem" => {
                let sizes = match (num("req"), num("lim")) {
                    (Some(r), Some(l)) => format!(
                        " (the kernel needs {} per block, the GPU has {})",
                        human(r),
                        human(l)
                    ),
                    _ => String::new(),
                };
                format!(
                    "Triton ran out of on-chip shared memory{sizes}: that is per-SM scratchpad, \
                     not VRAM. A kernel configuration (block sizes, num_stages) is too big for \
                     this GPU; batch size does not change it — use smaller autotune configs, \
                     fewer stages, or a GPU with more shared memory per SM"
                )
            }
            "triton_other" => format!(
                "Triton ran out of an on-chip resource ({}), not VRAM: a kernel configuration \
                 is too big for this GPU",
                c.name("res").map_or("registers", |x| x.as_str())
            ),
            "cpu_alloc" => format!(
                "PyTorch's CPU allocator could not get host RAM{}: system memory, not VRAM",
                num("req").map_or(String::new(), |b| format!(" for {}", human(b)))
            ),
            "host_ram" => "the host ran out of RAM (ENOMEM / bad_alloc / MemoryError): system \
                           memory, not VRAM — dataloader workers, a dataset loaded in RAM, or \
                           a checkpoint loaded to CPU"
                .into(),
            "oom_killer" => "the kernel's OOM killer ended the process (SIGKILL): host RAM, \
                             not VRAM"
                .into(),
            "shm" => "a container's /dev/shm is too small for the dataloader's shared \
                      memory: host memory, not VRAM (raise --shm-size or use fewer workers)"
                .into(),
            _ => "an illegal CUDA memory access: a kernel bug or corrupted state, not running \
                  out of memory"
                .into(),
        };
        // Triton is a runtime of its own ("other"); host-RAM failures have no VRAM runtime.
        let format = kind.starts_with("triton").then_some(Format::Other);
        out.push(Report::not_vram(format, at, what));
    }
}
