//! Printed sizes → bytes, exactly.
//!
//! Logs print `6.14 GiB`, `4.00MiB`, `0B`, `384.0KiB`, `0 bytes`, `3.84G`, `1,073,741,824 bytes`.
//! The conversion is done in integers (u128) rather than f64 so that `17179869184.00 GiB`, which
//! is exactly 2^64 bytes, is recognised as one more than u64 can hold — a bogus figure from a
//! broken driver query — instead of being silently saturated.

use crate::units::{GIB, KIB, MIB};

/// One printed figure: what it converts to, and the precision it was printed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    /// `None` when the figure does not fit in u64 (absurd: the log's own arithmetic overflowed).
    pub bytes: Option<u64>,
    /// Bytes of one unit of the last printed digit, halved: the figure is exact to ± this.
    pub half_ulp: u64,
    /// The text as printed, for evidence strings.
    pub printed: String,
}

/// The regex fragment that matches a printed size (number, optional space, unit). Two capture
/// groups are NOT used on purpose: callers wrap it in their own named group and hand the whole
/// match to [`parse_size`].
pub const SIZE: &str = r"\d[\d,]*(?:\.\d+)?[ \t]*(?:[KMGT]iB|[KMGT]B|bytes|byte|B|[KMGT])\b";

fn unit_bytes(unit: &str) -> Option<u64> {
    // Every framework in scope prints binary units; TensorFlow's and the MPS allocator's
    // `G`/`GB` are also 1024-based (they divide by 1024^3), so they map to GiB.
    match unit {
        "B" | "byte" | "bytes" => Some(1),
        "KiB" | "KB" | "K" => Some(KIB),
        "MiB" | "MB" | "M" => Some(MIB),
        "GiB" | "GB" | "G" => Some(GIB),
        "TiB" | "TB" | "T" => Some(GIB << 10),
        _ => None,
    }
}

/// Parse one printed size such as `6.14 GiB` or `1,294,336,000 bytes`. Returns `None` only when
/// the text is not a size at all; an overflowing figure returns `Some` with `bytes: None`.
pub fn parse_size(text: &str) -> Option<Size> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let unit = if unit.is_empty() { "B" } else { unit };
    let ub = unit_bytes(unit)? as u128;
    let num: String = num.chars().filter(|c| *c != ',').collect();
    let (int_s, frac_s) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num.as_str(), ""),
    };
    if int_s.is_empty() || !int_s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_digits = frac_s.len().min(12) as u32;
    let half_ulp = (ub / 10u128.pow(frac_digits) / 2) as u64;
    let printed = t.to_string();
    // More than 30 integer digits cannot fit even after dividing by the smallest unit.
    if int_s.trim_start_matches('0').len() > 30 {
        return Some(Size {
            bytes: None,
            half_ulp,
            printed,
        });
    }
    let int: u128 = int_s.parse().unwrap_or(0);
    let frac: u128 = if frac_digits == 0 {
        0
    } else {
        frac_s[..frac_digits as usize].parse().unwrap_or(0)
    };
    let scale = 10u128.pow(frac_digits);
    // Round half up, like the sidecars' own conversion of the two-decimal figures.
    let total = int
        .checked_mul(ub)
        .and_then(|v| v.checked_add((frac * ub + scale / 2) / scale));
    let bytes = total.and_then(|v| u64::try_from(v).ok());
    Some(Size {
        bytes,
        half_ulp,
        printed,
    })
}

/// The unit PyTorch's `format_size` would print `bytes` in (its thresholds are `<=`, so exactly
/// 1 GiB prints as `1024.00 MiB`), halved: the rounding band of a two-decimal figure.
pub fn pytorch_half_ulp(bytes: u64) -> u64 {
    if bytes <= KIB {
        0
    } else if bytes <= MIB {
        KIB / 200
    } else if bytes <= GIB {
        MIB / 200
    } else {
        GIB / 200
    }
}

/// Bytes of one element of a dtype as frameworks spell it (`bf16`, `torch.bfloat16`, `float`,
/// `DT_HALF`, `f32`).
pub fn dtype_bytes(dtype: &str) -> Option<u64> {
    let d = dtype
        .trim()
        .trim_start_matches("torch.")
        .to_ascii_lowercase();
    let d = d.trim_start_matches("dt_");
    Some(match d {
        "bool" | "int8" | "uint8" | "i8" | "u8" | "s8" | "pred" | "qint8" | "quint8" => 1,
        "float8_e4m3fn" | "float8_e5m2" | "fp8" | "f8e4m3fn" | "f8e5m2" => 1,
        "half" | "float16" | "fp16" | "f16" | "bfloat16" | "bf16" | "int16" | "i16" | "s16"
        | "u16" | "uint16" | "short" => 2,
        "float" | "float32" | "fp32" | "f32" | "int32" | "int" | "i32" | "s32" | "u32"
        | "uint32" | "qint32" => 4,
        "double" | "float64" | "fp64" | "f64" | "int64" | "long" | "i64" | "s64" | "u64"
        | "uint64" | "complex64" | "c64" => 8,
        "complex128" | "c128" => 16,
        _ => return None,
    })
}

/// The short dtype name used in reports and candidates (`bf16`, `fp32`, …).
pub fn dtype_short(dtype: &str) -> String {
    let d = dtype
        .trim()
        .trim_start_matches("torch.")
        .to_ascii_lowercase();
    let d = d.trim_start_matches("dt_");
    match d {
        "bfloat16" | "bf16" => "bf16",
        "half" | "float16" | "f16" | "fp16" => "fp16",
        "float" | "float32" | "f32" | "fp32" => "fp32",
        "double" | "float64" | "f64" | "fp64" => "fp64",
        "int32" | "int" | "s32" | "i32" => "int32",
        "int64" | "long" | "s64" | "i64" => "int64",
        other => return other.to_string(),
    }
    .to_string()
}

/// Product of a shape times the element size, or `None` on overflow.
pub fn shape_bytes(shape: &[u64], elem: u64) -> Option<u64> {
    shape.iter().try_fold(elem, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<u64> {
        parse_size(s).and_then(|s| s.bytes)
    }

    #[test]
    fn units_with_and_without_space() {
        assert_eq!(b("4.00MiB"), Some(4 * MIB));
        assert_eq!(b("4.00 MiB"), Some(4 * MIB));
        assert_eq!(b("0B"), Some(0));
        assert_eq!(b("0 bytes"), Some(0));
        assert_eq!(b("384.0KiB"), Some(384 * KIB));
        assert_eq!(b("117440512B"), Some(117_440_512));
        assert_eq!(b("1,294,336,000 bytes"), Some(1_294_336_000));
        assert_eq!(b("3.84G"), Some(4_123_168_604));
        assert_eq!(b("6.14 GiB"), Some(6_592_774_799));
    }

    #[test]
    fn two_to_the_64_is_bogus_not_saturated() {
        let s = parse_size("17179869184.00 GiB").unwrap();
        assert_eq!(s.bytes, None);
        let s = parse_size("99999999999999999999999999999999999999999 GiB").unwrap();
        assert_eq!(s.bytes, None);
        // One byte below 2^64 still fits.
        assert_eq!(b("18446744073709551615 bytes"), Some(u64::MAX));
    }

    #[test]
    fn pytorch_rounding_band() {
        assert_eq!(pytorch_half_ulp(GIB), MIB / 200);
        assert_eq!(pytorch_half_ulp(GIB + 1), GIB / 200);
        assert_eq!(dtype_bytes("torch.bfloat16"), Some(2));
        assert_eq!(dtype_bytes("float"), Some(4));
    }
}
