//! The budget a run must fit in, the `--margin` it keeps free, and how the command-line flags
//! choose between a catalogue profile, a profile file and the live card.

use super::live::{live_budget, LiveReading, Nvml};
use super::{catalogue, GpuProfile};
use crate::error::{Error, Result};
use crate::units::{human, GIB, KIB, MIB};
use serde::Serialize;
use std::path::PathBuf;

/// `--margin`'s default: 256 MiB kept free for what no model predicts (allocator retries,
/// a monitoring process starting, driver growth).
pub const DEFAULT_MARGIN_BYTES: u64 = 256 * MIB;

/// Where a budget's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetSource {
    /// A catalogue profile or a `--gpu-file`: the card's CUDA total.
    Profile,
    /// NVML on this machine: what is free now.
    Live,
    /// Readings from a file named by `VRAMPLAN_FAKE_NVML` (tests, demos): shaped like a live
    /// budget, but no card was read, so it never prints as "live".
    #[serde(rename = "fake-nvml")]
    FakeNvml,
}

impl BudgetSource {
    /// How a report names the source: "profile", "live", or "VRAMPLAN_FAKE_NVML readings, not
    /// a live card".
    pub fn label(self) -> &'static str {
        match self {
            BudgetSource::Profile => "profile",
            BudgetSource::Live => "live",
            BudgetSource::FakeNvml => "VRAMPLAN_FAKE_NVML readings, not a live card",
        }
    }
}

/// What a run may use on one card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    /// The card's name, as NVML prints it.
    pub name: String,
    /// CUDA-visible total (profile: as CUDA reports it; live: NVML total less its reserved).
    pub total_bytes: u64,
    /// What a run may use: total − margin (profile), free now − margin (live; 0 when the
    /// margin does not fit in what is free).
    pub usable_bytes: u64,
    /// Everything kept free: `--margin` plus `safety_bytes`.
    pub margin_bytes: u64,
    /// `--safety`: the percentage of the total kept free on top of `--margin`.
    pub safety_pct: f64,
    /// `safety_pct` of `total_bytes`, in bytes (inside `margin_bytes`).
    pub safety_bytes: u64,
    pub source: BudgetSource,
    /// The card's profile: from the catalogue, a file, or (unknown live card) built from NVML.
    pub profile: GpuProfile,
    /// The NVML reading behind a live budget.
    pub live: Option<LiveReading>,
    /// Live only: who holds the memory that is not free, in one sentence, e.g.
    /// "2 other processes hold 1.97 GiB: pid 1234 python 1.80 GiB, pid 88 Xorg 0.17 GiB".
    pub others: Option<String>,
    /// Things the user should know about these figures (unmeasured total, unknown card, …).
    pub warnings: Vec<String>,
}

impl Budget {
    /// A profile's budget: total − margin. A margin as large as the card is an error.
    pub fn from_profile(profile: GpuProfile, margin_bytes: u64) -> Result<Budget> {
        let usable_bytes = profile
            .total_bytes
            .checked_sub(margin_bytes)
            .filter(|&usable| usable > 0)
            .ok_or_else(|| {
                Error::new(format!(
                    "--margin {} leaves nothing of {}'s {}: use a smaller margin",
                    human(margin_bytes),
                    profile.key,
                    human(profile.total_bytes)
                ))
            })?;
        let mut warnings = Vec::new();
        if !profile.measured {
            warnings.push(format!(
                "{}'s total ({}) is the nominal size less a typical driver reservation, not a \
                 measurement; --live on the card reads the real figure",
                profile.key,
                human(profile.total_bytes)
            ));
        }
        Ok(Budget {
            name: profile.name.clone(),
            total_bytes: profile.total_bytes,
            usable_bytes,
            margin_bytes,
            safety_pct: 0.0,
            safety_bytes: 0,
            source: BudgetSource::Profile,
            profile,
            live: None,
            others: None,
            warnings,
        })
    }

    /// Keep `pct` percent of the total free as well (`--safety`). Keeping the whole usable
    /// budget is an error, as a margin larger than the card is.
    pub fn keep_free_pct(mut self, pct: f64) -> Result<Budget> {
        if pct == 0.0 {
            return Ok(self);
        }
        let safety = (self.total_bytes as f64 * pct / 100.0).round() as u64;
        self.usable_bytes = self
            .usable_bytes
            .checked_sub(safety)
            .filter(|&usable| usable > 0)
            .ok_or_else(|| {
                Error::new(format!(
                    "--safety {pct}: {} of {}'s {} leaves nothing usable after the margin: use a \
                     smaller percentage",
                    human(safety),
                    self.name,
                    human(self.total_bytes)
                ))
            })?;
        self.margin_bytes = self.margin_bytes.saturating_add(safety);
        self.safety_pct = pct;
        self.safety_bytes = safety;
        Ok(self)
    }

    /// Less what other processes hold on the card now (a log's "in use by other
    /// processes"): what this run may still use.
    pub fn less_held_by_others(mut self, held_bytes: u64) -> Budget {
        self.usable_bytes = self.usable_bytes.saturating_sub(held_bytes);
        self
    }

    /// What is kept free, in words: "a 256.00 MiB margin", or with `--safety`, "1.42 GiB kept
    /// free (256.00 MiB margin + 10% safety)".
    /// `show` writes a byte count.
    pub fn kept_free(
        margin_bytes: u64,
        safety_pct: f64,
        safety_bytes: u64,
        show: &dyn Fn(u64) -> String,
    ) -> String {
        if safety_bytes == 0 {
            format!("a {} margin", show(margin_bytes))
        } else {
            format!(
                "{} kept free ({} margin + {safety_pct}% safety)",
                show(margin_bytes),
                show(margin_bytes.saturating_sub(safety_bytes))
            )
        }
    }

    /// Whether a run whose device peak (reserved + CUDA context) is `device_peak_bytes` fits.
    pub fn fits(&self, device_peak_bytes: u64) -> bool {
        device_peak_bytes <= self.usable_bytes
    }

    /// usable − device peak; negative when the run does not fit.
    pub fn headroom_bytes(&self, device_peak_bytes: u64) -> i64 {
        let headroom = i128::from(self.usable_bytes) - i128::from(device_peak_bytes);
        headroom.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// One line for a report, e.g. "NVIDIA GeForce RTX 3060 (rtx3060): 11.69 GiB total,
    /// margin 256.00 MiB, usable 11.44 GiB".
    pub fn summary(&self) -> String {
        match self.source {
            BudgetSource::Profile => format!(
                "{} ({}): {} total, margin {}, usable {}",
                self.name,
                self.profile.key,
                human(self.total_bytes),
                human(self.margin_bytes),
                human(self.usable_bytes)
            ),
            BudgetSource::Live | BudgetSource::FakeNvml => {
                let (index, free) = self
                    .live
                    .as_ref()
                    .map_or((0, 0), |r| (r.index, r.free_bytes));
                format!(
                    "{} (GPU {index}, {}): {} free of {}, margin {}, usable {}",
                    self.name,
                    self.source.label(),
                    human(free),
                    human(self.total_bytes),
                    human(self.margin_bytes),
                    human(self.usable_bytes)
                )
            }
        }
    }
}

/// Parse a `--safety` value: a percentage in [0, 100), with or without a `%` sign.
pub fn parse_safety(s: &str) -> Result<f64> {
    let number = s.trim().trim_end_matches('%').trim();
    number
        .parse::<f64>()
        .ok()
        .filter(|p| p.is_finite() && (0.0..100.0).contains(p))
        .ok_or_else(|| {
            Error::new(format!(
                "--safety: expected a percentage of the card to keep free, from 0 to below 100 \
                 (e.g. 5 or 7.5), got {s:?}"
            ))
        })
}

/// Parse a `--margin` value; errors name `--margin`. See [`parse_bytes_for`].
pub fn parse_bytes(s: &str) -> Result<u64> {
    parse_bytes_for("--margin", s)
}

/// Parse a size: a whole number of bytes (`1000000`, `1_000_000`, `0`), or a number with a
/// unit (`256MiB`, `0.5GiB`, `1.5 GB`). Binary units: KiB, MiB, GiB, TiB, and the short K, M,
/// G, T (as in `docker --memory 512m`, `free -h`). Decimal SI units: kB/KB, MB, GB, TB, so
/// `1.5 GB` is 1 500 000 000 bytes. Case is ignored; fractions round to the nearest byte.
/// Errors start with `what` (the flag or the file and key).
pub fn parse_bytes_for(what: &str, s: &str) -> Result<u64> {
    let fail = |why: &str| {
        Error::new(format!(
            "{what}: {why}: expected a size such as 256MiB, 0.5GiB, 1.5GB (GB = 10^9 bytes) or a \
             byte count such as 1000000, got {}",
            crate::plain::quote(s)
        ))
    };
    let text: String = s.trim().chars().filter(|&c| c != '_').collect();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(fail(if text.starts_with('-') {
            "a size cannot be negative"
        } else {
            "no number"
        }));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(fail(&format!("unknown unit {}", crate::plain::quote(unit)))),
    };
    if !number.contains('.') {
        return number
            .parse::<u64>()
            .ok()
            .and_then(|whole| whole.checked_mul(multiplier))
            .ok_or_else(|| fail("too large"));
    }
    if multiplier == 1 {
        return Err(fail("a byte count must be a whole number"));
    }
    let value: f64 = number.parse().map_err(|_| fail("not a number"))?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(fail("too large"));
    }
    Ok(bytes as u64)
}

/// The budget flags of `check`, `suggest` and `probe`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetRequest {
    /// `--gpu NAME`
    pub gpu: Option<String>,
    /// `--gpu-file PATH`
    pub gpu_file: Option<PathBuf>,
    /// `--live`
    pub live: bool,
    /// `--gpu-index N` (with `--live`, or when the live card is used by default)
    pub gpu_index: u32,
    /// `--margin` as typed
    pub margin: String,
    /// `--safety` as typed (a percentage of the total)
    pub safety: String,
}

/// Turn the flags into a budget. `--gpu`, `--gpu-file` and `--live` exclude each other. With
/// none of them the live card is used when NVML finds one, and `Ok(None)` (no verdict, the
/// caller says how to get one) when it does not; with `--live`, no driver is an error.
pub fn resolve(request: &BudgetRequest, nvml: &dyn Nvml) -> Result<Option<Budget>> {
    let safety = parse_safety(&request.safety)?;
    Ok(match resolve_margin(request, nvml)? {
        Some(budget) => Some(budget.keep_free_pct(safety)?),
        None => None,
    })
}

/// [`resolve`] with `--margin` alone.
fn resolve_margin(request: &BudgetRequest, nvml: &dyn Nvml) -> Result<Option<Budget>> {
    let margin = parse_bytes(&request.margin)?;
    let chosen = [
        request.gpu.as_ref().map(|_| "--gpu"),
        request.gpu_file.as_ref().map(|_| "--gpu-file"),
        request.live.then_some("--live"),
    ];
    let chosen: Vec<&str> = chosen.into_iter().flatten().collect();
    if chosen.len() > 1 {
        return Err(Error::new(format!(
            "{} exclude each other: plan for a catalogue card (--gpu), a profile file \
             (--gpu-file) or the card on this machine (--live)",
            chosen.join(" and ")
        )));
    }
    if let Some(name) = &request.gpu {
        let found = catalogue::find(name);
        if found.is_err() {
            if let Some(card) = catalogue::generic_card(name)? {
                let mut budget = Budget::from_profile(card, margin)?;
                budget.warnings.push(format!(
                    "--gpu {}: a generic card with {} as CUDA reports it; assumed: {}",
                    name.trim(),
                    human(budget.total_bytes),
                    budget.profile.assumptions()
                ));
                return Ok(Some(budget));
            }
        }
        return Budget::from_profile(found?, margin).map(Some);
    }
    if let Some(path) = &request.gpu_file {
        let mut budget = Budget::from_profile(catalogue::from_file(path)?, margin)?;
        let p = &budget.profile;
        if p.compute_capability == (0, 0) || p.sm_count == 0 || !p.has_throughput() {
            let assumed = format!(
                "{}: fields left out take the generic card's defaults: {}",
                path.display(),
                p.assumptions()
            );
            budget.warnings.push(assumed);
        }
        return Ok(Some(budget));
    }
    match live_budget(nvml, request.gpu_index, margin) {
        Ok(budget) => Ok(Some(budget)),
        Err(e) if request.live => Err(e),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_signed() {
        let p = catalogue::find("rtx3060").unwrap();
        let b = Budget::from_profile(p, DEFAULT_MARGIN_BYTES).unwrap();
        assert_eq!(b.headroom_bytes(b.usable_bytes + 5), -5);
        assert!(!b.fits(b.usable_bytes + 1));
        assert!(b.fits(b.usable_bytes));
    }
}
