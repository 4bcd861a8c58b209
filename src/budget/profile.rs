//! One GPU profile from TOML: field-by-field reading with errors that name the file, the key
//! and what was expected; the defaults derived from the compute capability.

use super::profile_fields::Fields;
use super::GpuProfile;
use crate::error::{Error, ErrorKind, Result};
use crate::units::{human, KIB, MIB};

/// PyTorch's cuBLAS workspace below sm90: 4096·1024·2 + 16·1024·8 bytes (8.125 MiB).
pub const CUBLAS_WORKSPACE_BYTES: u64 = 4096 * 1024 * 2 + 16 * 1024 * 8;
/// PyTorch's cuBLAS workspace on compute capability 9.x: 32 MiB.
pub const CUBLAS_WORKSPACE_SM90_BYTES: u64 = 32 * MIB;
/// cuBLASLt's workspace per matmul thread: 1 MiB.
pub const CUBLASLT_WORKSPACE_BYTES: u64 = MIB;

/// The fixed part of the CUDA-context default (see the module documentation of `budget`).
const CONTEXT_BASE_BYTES: u64 = 192 * MIB;
/// Default stack per thread the driver reserves local memory for (`cudaLimitStackSize`).
const STACK_PER_THREAD_BYTES: u64 = KIB;
/// Context default when the SM count is unknown: the top of the 200–520 MiB range seen on
/// single-GPU desktop and data-centre cards.
const CONTEXT_UNKNOWN_BYTES: u64 = 520 * MIB;

/// Most resident threads per SM for a compute capability (CUDA programming guide, table of
/// technical specifications); 2048, the largest, for an unknown one.
pub fn threads_per_sm(cc: (u32, u32)) -> u64 {
    match cc {
        (7, 5) => 1024,
        (8, 6) | (8, 7) | (8, 9) | (12, _) => 1536,
        _ => 2048,
    }
}

/// FP32 CUDA cores per SM, to turn NVML's core count into SMs.
pub(crate) fn cores_per_sm(cc: (u32, u32)) -> Option<u32> {
    match cc {
        (7, _) | (8, 0) => Some(64),
        (8, _) | (9, _) | (10, _) | (12, _) => Some(128),
        _ => None,
    }
}

/// The local memory the driver reserves at context creation for the default stack of every
/// thread that can be resident (the second term of [`default_context_bytes`]).
pub fn context_stack_bytes(cc: (u32, u32), sm_count: u32) -> u64 {
    STACK_PER_THREAD_BYTES * threads_per_sm(cc) * u64::from(sm_count)
}

/// The CUDA-context default: 192 MiB + 1 KiB × resident threads per SM × SMs; 520 MiB when
/// the SM count is unknown (0).
pub fn default_context_bytes(cc: (u32, u32), sm_count: u32) -> u64 {
    if sm_count == 0 {
        return CONTEXT_UNKNOWN_BYTES;
    }
    CONTEXT_BASE_BYTES + context_stack_bytes(cc, sm_count)
}

/// PyTorch's cuBLAS workspace for a compute capability: 32 MiB on 9.x, else 8.125 MiB.
/// Unknown ((0, 0)) takes the larger, so a plan errs on the safe side.
pub fn default_cublas_workspace_bytes(cc: (u32, u32)) -> u64 {
    if cc.0 == 9 || cc == (0, 0) {
        CUBLAS_WORKSPACE_SM90_BYTES
    } else {
        CUBLAS_WORKSPACE_BYTES
    }
}

impl GpuProfile {
    /// "8.6", or "unknown" for a generic profile without one.
    pub fn compute_capability_string(&self) -> String {
        match self.compute_capability {
            (0, 0) => "unknown".to_string(),
            (major, minor) => format!("{major}.{minor}"),
        }
    }

    /// Compute capability 9.x (Hopper): the 32 MiB cuBLAS workspace.
    pub fn is_sm90(&self) -> bool {
        self.compute_capability.0 == 9
    }

    /// Whether the throughput figures are known (a generic live profile has none): a planner
    /// ranking by step time must not divide by them otherwise.
    pub fn has_throughput(&self) -> bool {
        self.bf16_tflops > 0.0 && self.fp32_tflops > 0.0 && self.bandwidth_gb_s > 0.0
    }

    /// cuBLAS + cuBLASLt workspace for one thread that runs matmuls.
    pub fn matmul_workspace_bytes(&self) -> u64 {
        self.cublas_workspace_bytes
            .saturating_add(self.cublaslt_workspace_bytes)
    }

    /// A card known only by its memory: compute capability unknown ((0, 0): no bf16, the
    /// larger cuBLAS workspace), SM count unknown (the 520 MiB context default), throughput
    /// unknown. `--gpu 48GiB`, a `--gpu-file` that gives only `total_bytes`, and a live card
    /// the catalogue lacks all start from it.
    pub fn generic(key: String, name: String, total_bytes: u64) -> GpuProfile {
        GpuProfile {
            key,
            name,
            aliases: Vec::new(),
            total_bytes,
            measured: false,
            bf16: false,
            compute_capability: (0, 0),
            sm_count: 0,
            bandwidth_gb_s: 0.0,
            bf16_tflops: 0.0,
            fp32_tflops: 0.0,
            cublas_workspace_bytes: default_cublas_workspace_bytes((0, 0)),
            cublaslt_workspace_bytes: CUBLASLT_WORKSPACE_BYTES,
            context_bytes: default_context_bytes((0, 0), 0),
        }
    }

    /// The defaults a generic profile holds, in one sentence, for the report's warnings.
    pub fn assumptions(&self) -> String {
        format!(
            "compute capability {}, {} SMs, bf16 {}, cuBLAS workspace {}, CUDA context {}, throughput {}",
            self.compute_capability_string(),
            if self.sm_count == 0 {
                "unknown".to_string()
            } else {
                self.sm_count.to_string()
            },
            if self.bf16 {
                "supported"
            } else {
                "assumed unsupported (float16 instead)"
            },
            human(self.cublas_workspace_bytes),
            human(self.context_bytes),
            if self.has_throughput() {
                "as given"
            } else {
                "unknown (no step-time ranking)"
            }
        )
    }

    /// Parse one profile from TOML text; `origin` (a path, or `embedded profiles/gpus/x.toml`)
    /// starts the error message. Only `total_bytes` is required; every other field takes the
    /// generic card's default ([`GpuProfile::generic`]) or the one its compute capability
    /// implies. All problems are reported at once, separated by semicolons.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<GpuProfile> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| crate::plain::toml_error(&e, text, origin))?;
        let f = Fields::new(&table);
        let profile = read_profile(&f, origin);
        let problems = f.problems();
        match profile {
            Some(p) if problems.is_empty() => Ok(p),
            _ => Err(Error::with(
                ErrorKind::Gpu,
                format!("{origin}: {}", problems.join("; ")),
            )),
        }
    }
}

/// The smallest total a profile may give: 256 MiB, below any CUDA card PyTorch supports.
pub const MIN_TOTAL_BYTES: u64 = 256 * MIB;
/// The largest: 1 TiB, over three times the largest card announced (B300: 288 GB).
pub const MAX_TOTAL_BYTES: u64 = 1 << 40;

/// Why a card's total is refused, or None when it is one a card can have.
pub fn total_problem(total: u64) -> Option<String> {
    (!(MIN_TOTAL_BYTES..=MAX_TOTAL_BYTES).contains(&total)).then(|| {
        format!(
            "expected a total between {} and {} (the largest cards have 192 to 288 GB: B200, B300), got {}",
            human(MIN_TOTAL_BYTES),
            human(MAX_TOTAL_BYTES),
            human(total)
        )
    })
}
/// cuBLAS workspaces: PyTorch's defaults are 1 to 32 MiB; CUBLAS_WORKSPACE_CONFIG sets a few
/// MiB per stream. 4 GiB is past any of them.
const MAX_WORKSPACE_BYTES: u64 = 4 << 30;
const WORKSPACE_WHY: &str = "PyTorch's cuBLAS workspaces are 1 to 32 MiB";
/// SMs: the largest GPUs have 132 (H100) to 148 (B200).
const MAX_SM_COUNT: i64 = 4096;

/// The profile's fields, each problem recorded in `f`; None when the total is missing or wrong.
/// `key` (lowercase letters, digits and dashes) and `name` (non-empty), each checked.
fn key_and_name(f: &Fields) -> (Option<String>, Option<String>) {
    let key = f.string("key", "a short lowercase name such as \"rtx3060\"");
    if let Some(key) = &key {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if key.is_empty() || !key.chars().all(allowed) {
            f.bad(
                "key",
                "lowercase letters, digits and dashes, e.g. \"rtx3060\"",
                &crate::plain::quote(key),
            );
        }
    }
    let name = f.string(
        "name",
        "the name NVML prints, e.g. \"NVIDIA GeForce RTX 3060\"",
    );
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        f.bad("name", "a non-empty name", "\"\"");
    }
    (key, name)
}

/// `total_bytes`, the one required field, within what a card can be.
fn total_bytes(f: &Fields) -> Option<u64> {
    if !f.has("total_bytes") {
        f.missing(
            "total_bytes",
            "the total CUDA reports, e.g. \"47.4GiB\"; every other field has a default",
        );
    }
    f.bytes("total_bytes").filter(|&t| match total_problem(t) {
        Some(why) => {
            f.push(format!("`total_bytes`: {why}"));
            false
        }
        None => true,
    })
}

fn read_profile(f: &Fields, origin: &str) -> Option<GpuProfile> {
    f.reject_unknown();
    let stem = std::path::Path::new(origin)
        .file_stem()
        .map(|s| super::catalogue::normalize(&s.to_string_lossy()))
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "custom".to_string());
    let (key, name) = key_and_name(f);
    let aliases = f.string_list("aliases");
    let total = total_bytes(f);
    let cc = f.compute_capability().unwrap_or((0, 0));
    let sm_count = f.positive_u32("sm_count", MAX_SM_COUNT).unwrap_or(0);
    let bandwidth_gb_s = f.positive_f64("bandwidth_gb_s", "memory bandwidth in GB/s");
    let bf16_tflops = f.positive_f64("bf16_tflops", "dense bf16 tensor TFLOPS");
    let fp32_tflops = f.positive_f64("fp32_tflops", "dense fp32 (TF32) TFLOPS");
    let measured = f.boolean("measured").unwrap_or(false);
    let bf16 = f.boolean("bf16").unwrap_or(cc.0 >= 8);
    let workspace = |key: &str, default: u64| {
        f.bytes(key)
            .filter(|&b| f.within(key, b, 0, MAX_WORKSPACE_BYTES, WORKSPACE_WHY))
            .unwrap_or(default)
    };
    let cublas_workspace_bytes =
        workspace("cublas_workspace_bytes", default_cublas_workspace_bytes(cc));
    let cublaslt_workspace_bytes = workspace("cublaslt_workspace_bytes", CUBLASLT_WORKSPACE_BYTES);
    let context_bytes = f
        .bytes("context_bytes")
        .unwrap_or_else(|| default_context_bytes(cc, sm_count));
    let total = total?;
    if context_bytes >= total {
        f.bad(
            "context_bytes",
            &format!("less than total_bytes ({})", human(total)),
            &human(context_bytes),
        );
    }
    let generic = GpuProfile::generic(
        key.unwrap_or_else(|| stem.clone()),
        name.unwrap_or_else(|| format!("custom GPU ({stem})")),
        total,
    );
    Some(GpuProfile {
        aliases: aliases.unwrap_or_default(),
        measured,
        bf16,
        compute_capability: cc,
        sm_count,
        bandwidth_gb_s: bandwidth_gb_s.unwrap_or(0.0),
        bf16_tflops: bf16_tflops.unwrap_or(0.0),
        fp32_tflops: fp32_tflops.unwrap_or(0.0),
        cublas_workspace_bytes,
        cublaslt_workspace_bytes,
        context_bytes,
        ..generic
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_formula_matches_the_documented_examples() {
        // RTX 3060: 192 MiB + 1 KiB x 1536 x 28.
        assert_eq!(
            default_context_bytes((8, 6), 28),
            192 * MIB + 1536 * 28 * KIB
        );
        // H100 SXM: 192 MiB + 1 KiB x 2048 x 132 = 456 MiB.
        assert_eq!(default_context_bytes((9, 0), 132), 456 * MIB);
        assert_eq!(default_context_bytes((8, 9), 0), 520 * MIB);
    }

    #[test]
    fn workspace_by_architecture() {
        assert_eq!(CUBLAS_WORKSPACE_BYTES, 8_519_680);
        assert_eq!(default_cublas_workspace_bytes((9, 0)), 32 * MIB);
        assert_eq!(default_cublas_workspace_bytes((8, 0)), 8_519_680);
        assert_eq!(default_cublas_workspace_bytes((12, 0)), 8_519_680);
        assert_eq!(default_cublas_workspace_bytes((0, 0)), 32 * MIB);
    }

    #[test]
    fn cores_per_sm_by_architecture() {
        assert_eq!(cores_per_sm((7, 0)), Some(64));
        assert_eq!(cores_per_sm((7, 5)), Some(64));
        assert_eq!(cores_per_sm((8, 0)), Some(64));
        assert_eq!(cores_per_sm((8, 6)), Some(128));
        assert_eq!(cores_per_sm((8, 9)), Some(128));
        assert_eq!(cores_per_sm((9, 0)), Some(128));
        assert_eq!(cores_per_sm((12, 0)), Some(128));
        assert_eq!(cores_per_sm((6, 1)), None);
    }
}
