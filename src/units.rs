//! Bytes shown the way PyTorch prints them: binary units, two decimals.

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// `6593445888` → `6.14 GiB`, `235825152` → `224.90 MiB`, `512` → `512 bytes`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= GIB {
        format!("{:.2} GiB", b / GIB as f64)
    } else if bytes >= MIB {
        format!("{:.2} MiB", b / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.2} KiB", b / KIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// "1 micro-step", "8 micro-steps": a count and its noun, plural unless the count is 1.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Signed variant for headroom (negative when a run does not fit).
pub fn human_signed(bytes: i64) -> String {
    if bytes < 0 {
        format!("-{}", human(bytes.unsigned_abs()))
    } else {
        human(bytes as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_pytorch() {
        // 64 x 1024 x 50304 x 2 bytes: the seed case's logits.
        assert_eq!(human(64 * 1024 * 50304 * 2), "6.14 GiB");
        assert_eq!(human(235_825_152), "224.90 MiB");
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human_signed(-(GIB as i64)), "-1.00 GiB");
    }
}
