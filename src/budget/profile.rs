//! One GPU profile from TOML: field-by-field reading with errors that name the file, the key
//! and what was expected; the defaults derived from the compute capability.

use super::margin::parse_bytes_for;
use super::GpuProfile;
use crate::error::{Error, Result};
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

    /// Parse one profile from TOML text; `origin` (a path, or `embedded profiles/gpus/x.toml`)
    /// starts every error message.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<GpuProfile> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', "; ");
            match line {
                Some(line) => Error::new(format!("{origin}: line {line}: {message}")),
                None => Error::new(format!("{origin}: {message}")),
            }
        })?;
        let f = Fields {
            table: &table,
            origin,
        };
        f.reject_unknown()?;

        let key = f.string("key", "a short lowercase name such as \"rtx3060\"")?;
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(f.bad(
                "key",
                "lowercase letters, digits and dashes, e.g. \"rtx3060\"",
                &format!("{key:?}"),
            ));
        }
        let name = f.string(
            "name",
            "the name NVML prints, e.g. \"NVIDIA GeForce RTX 3060\"",
        )?;
        if name.trim().is_empty() {
            return Err(f.bad("name", "a non-empty name", "\"\""));
        }
        let aliases = f.string_list("aliases")?;
        let total_bytes = f.bytes("total_bytes", true)?.unwrap_or(0);
        if total_bytes < 256 * MIB {
            return Err(f.bad(
                "total_bytes",
                "the total CUDA reports, at least 256 MiB",
                &total_bytes.to_string(),
            ));
        }
        let compute_capability = f.compute_capability()?;
        let sm_count = f.positive_u32("sm_count")?;
        let bandwidth_gb_s = f.positive_f64("bandwidth_gb_s", "memory bandwidth in GB/s")?;
        let bf16_tflops = f.positive_f64("bf16_tflops", "dense bf16 tensor TFLOPS")?;
        let fp32_tflops = f.positive_f64("fp32_tflops", "dense fp32 (TF32) TFLOPS")?;
        let measured = f.boolean("measured")?.unwrap_or(false);
        let bf16 = f.boolean("bf16")?.unwrap_or(compute_capability.0 >= 8);
        let cublas_workspace_bytes = f
            .bytes("cublas_workspace_bytes", false)?
            .unwrap_or_else(|| default_cublas_workspace_bytes(compute_capability));
        let cublaslt_workspace_bytes = f
            .bytes("cublaslt_workspace_bytes", false)?
            .unwrap_or(CUBLASLT_WORKSPACE_BYTES);
        let context_bytes = f
            .bytes("context_bytes", false)?
            .unwrap_or_else(|| default_context_bytes(compute_capability, sm_count));
        if context_bytes >= total_bytes {
            return Err(f.bad(
                "context_bytes",
                &format!("less than total_bytes ({})", human(total_bytes)),
                &human(context_bytes),
            ));
        }
        Ok(GpuProfile {
            key,
            name,
            aliases,
            total_bytes,
            measured,
            bf16,
            compute_capability,
            sm_count,
            bandwidth_gb_s,
            bf16_tflops,
            fp32_tflops,
            cublas_workspace_bytes,
            cublaslt_workspace_bytes,
            context_bytes,
        })
    }
}

const KNOWN_KEYS: [&str; 14] = [
    "key",
    "name",
    "aliases",
    "total_bytes",
    "measured",
    "bf16",
    "compute_capability",
    "sm_count",
    "bandwidth_gb_s",
    "bf16_tflops",
    "fp32_tflops",
    "cublas_workspace_bytes",
    "cublaslt_workspace_bytes",
    "context_bytes",
];

/// Typed access to a profile's TOML table, with errors that name file, key and expectation.
struct Fields<'a> {
    table: &'a toml::Table,
    origin: &'a str,
}

impl Fields<'_> {
    fn bad(&self, key: &str, expected: &str, got: &str) -> Error {
        Error::new(format!(
            "{}: `{key}`: expected {expected}, got {got}",
            self.origin
        ))
    }

    fn missing(&self, key: &str, expected: &str) -> Error {
        Error::new(format!(
            "{}: missing `{key}` (expected {expected})",
            self.origin
        ))
    }

    fn reject_unknown(&self) -> Result<()> {
        for key in self.table.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                let closest = KNOWN_KEYS
                    .iter()
                    .min_by_key(|k| super::catalogue::edit_distance(k, key))
                    .copied()
                    .unwrap_or("key");
                return Err(Error::new(format!(
                    "{}: unknown key `{key}` (did you mean `{closest}`?)",
                    self.origin
                )));
            }
        }
        Ok(())
    }

    fn describe(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => format!("the string {s:?}"),
            toml::Value::Integer(i) => format!("the integer {i}"),
            toml::Value::Float(x) => format!("the number {x}"),
            toml::Value::Boolean(b) => format!("{b}"),
            toml::Value::Datetime(d) => format!("the date {d}"),
            toml::Value::Array(_) => "a list".to_string(),
            toml::Value::Table(_) => "a table".to_string(),
        }
    }

    fn string(&self, key: &str, expected: &str) -> Result<String> {
        match self.table.get(key) {
            None => Err(self.missing(key, &format!("a string: {expected}"))),
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.bad(key, &format!("a string: {expected}"), &Self::describe(v))),
        }
    }

    fn string_list(&self, key: &str) -> Result<Vec<String>> {
        let expected = "a list of strings, e.g. [\"RTX 3060\", \"3060\"]";
        match self.table.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => {
                        Err(self.bad(key, expected, &format!("{} in it", Self::describe(other))))
                    }
                })
                .collect(),
            Some(v) => Err(self.bad(key, expected, &Self::describe(v))),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(self.bad(key, "true or false", &Self::describe(v))),
        }
    }

    /// Bytes: an integer, or a size string such as "300MiB".
    fn bytes(&self, key: &str, required: bool) -> Result<Option<u64>> {
        let expected = "bytes: an integer, or a size such as \"300MiB\"";
        match self.table.get(key) {
            None if required => Err(self.missing(key, expected)),
            None => Ok(None),
            Some(toml::Value::Integer(i)) => u64::try_from(*i)
                .map(Some)
                .map_err(|_| self.bad(key, expected, &Self::describe(&toml::Value::Integer(*i)))),
            Some(toml::Value::String(s)) => {
                parse_bytes_for(&format!("{}: `{key}`", self.origin), s).map(Some)
            }
            Some(v) => Err(self.bad(key, expected, &Self::describe(v))),
        }
    }

    fn positive_u32(&self, key: &str) -> Result<u32> {
        let expected = "a positive integer";
        match self.table.get(key) {
            None => Err(self.missing(key, expected)),
            Some(toml::Value::Integer(i)) if *i > 0 && *i <= i64::from(u32::MAX) => Ok(*i as u32),
            Some(v) => Err(self.bad(key, expected, &Self::describe(v))),
        }
    }

    fn positive_f64(&self, key: &str, what: &str) -> Result<f64> {
        let expected = format!("a positive number ({what})");
        let x = match self.table.get(key) {
            None => return Err(self.missing(key, &expected)),
            Some(toml::Value::Float(x)) => *x,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(v) => return Err(self.bad(key, &expected, &Self::describe(v))),
        };
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(self.bad(key, &expected, &format!("the number {x}")))
        }
    }

    /// "8.6" or [8, 6].
    fn compute_capability(&self) -> Result<(u32, u32)> {
        let key = "compute_capability";
        let expected = "a compute capability such as \"8.6\" or [8, 6]";
        let pair = match self.table.get(key) {
            None => return Err(self.missing(key, expected)),
            Some(toml::Value::String(s)) => s.trim().split_once('.').and_then(|(a, b)| {
                Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
            }),
            Some(toml::Value::Array(items)) => match items.as_slice() {
                [toml::Value::Integer(a), toml::Value::Integer(b)] => {
                    Some((u32::try_from(*a).ok(), u32::try_from(*b).ok()))
                        .and_then(|(a, b)| Some((a?, b?)))
                }
                _ => None,
            },
            Some(_) => None,
        };
        match pair {
            Some((major, minor)) if (3..=20).contains(&major) && minor < 10 => Ok((major, minor)),
            _ => Err(self.bad(key, expected, &Self::describe(&self.table[key]))),
        }
    }
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
