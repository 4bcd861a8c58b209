//! Live readings through NVML, behind a small trait so the whole `--live` path runs in tests
//! against a fake card.
//!
//! NVML's memory figures (nvmlDeviceGetMemoryInfo_v2, which nvml-wrapper 0.13 calls) split the
//! board's memory into `reserved` (the driver's, never usable), `used` and `free`; the CUDA
//! total is `total − reserved`, and `free` is what a new process can still take — which must
//! hold its CUDA context too, so the simulator's *device* peak is compared with it.

use super::catalogue::{match_nvml_name, normalize};
use super::margin::{Budget, BudgetSource};
use super::profile::{default_context_bytes, default_cublas_workspace_bytes};
use super::system::SystemNvml;
use super::GpuProfile;
use crate::error::{Error, Result};
use crate::units::{human, GIB, MIB};
use serde::{Deserialize, Serialize};

/// The one line `--live` prints where there is no NVIDIA driver.
pub const NO_DRIVER_MESSAGE: &str =
    "no NVIDIA driver found (libnvidia-ml.so.1): use --gpu NAME to plan for a card from the catalogue";

/// The one line `--live` prints where the driver answers but lists no card.
pub const NO_CARD_MESSAGE: &str =
    "NVML found no NVIDIA GPU on this machine: use --gpu NAME to plan for a card from the catalogue";

/// Environment variable naming a JSON file of [`LiveReading`]s that [`nvml_from_env`] serves
/// instead of the real NVML: how the CLI tests run `--live` on a machine without a GPU.
pub const FAKE_NVML_ENV: &str = "VRAMPLAN_FAKE_NVML";

/// Source of live readings: every NVIDIA card on this machine.
pub trait Nvml {
    fn devices(&self) -> Result<Vec<LiveReading>>;
    /// true when the readings are given in advance, not read from a driver.
    fn is_fake(&self) -> bool {
        false
    }
}

/// One card as NVML reads it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveReading {
    pub index: u32,
    /// e.g. "NVIDIA GeForce RTX 3060"
    pub name: String,
    /// The board's memory (nvidia-smi's total), reserved included.
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    /// Kept by the driver, never usable (0 where NVML does not say).
    #[serde(default)]
    pub reserved_bytes: u64,
    pub driver_version: String,
    /// Highest CUDA version the driver supports, e.g. "13.0".
    pub cuda_version: String,
    #[serde(default)]
    pub compute_capability: Option<(u32, u32)>,
    #[serde(default)]
    pub sm_count: Option<u32>,
    #[serde(default)]
    pub processes: Vec<GpuProcess>,
}

impl LiveReading {
    /// What CUDA sees as the total: the board's memory less the driver's reservation.
    pub fn cuda_total_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.reserved_bytes)
    }
}

/// A process holding memory on a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    /// From NVML, else /proc/PID/comm; None when neither knows (another container).
    pub name: Option<String>,
    /// None where the driver does not say (Windows WDDM).
    pub used_bytes: Option<u64>,
    pub kind: ProcessKind,
}

/// nvidia-smi's "Type" column: C, G or C+G.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    Compute,
    Graphics,
    /// Listed both as a compute and as a graphics process (counted once).
    Both,
}

/// Readings given in advance (tests, and the CLI through [`FAKE_NVML_ENV`]), or a failure.
#[derive(Debug, Clone, Default)]
pub struct FakeNvml {
    pub readings: Vec<LiveReading>,
    /// When set, `devices()` fails with this message (e.g. [`NO_DRIVER_MESSAGE`]).
    pub error: Option<String>,
}

impl FakeNvml {
    pub fn new(readings: Vec<LiveReading>) -> Self {
        FakeNvml {
            readings,
            error: None,
        }
    }

    /// A machine without a driver.
    pub fn no_driver() -> Self {
        FakeNvml {
            readings: Vec::new(),
            error: Some(NO_DRIVER_MESSAGE.to_string()),
        }
    }

    /// Readings from JSON: a list of [`LiveReading`] objects.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map(FakeNvml::new)
            .map_err(|e| crate::plain::json_error(&e, text, origin, "a list of NVML readings"))
    }
}

impl Nvml for FakeNvml {
    fn devices(&self) -> Result<Vec<LiveReading>> {
        match &self.error {
            Some(message) => Err(Error::new(message.clone())),
            None => Ok(self.readings.clone()),
        }
    }

    fn is_fake(&self) -> bool {
        true
    }
}

/// The real NVML, or the readings in the JSON file named by `VRAMPLAN_FAKE_NVML`.
pub fn nvml_from_env() -> Result<Box<dyn Nvml>> {
    match std::env::var_os(FAKE_NVML_ENV) {
        None => Ok(Box::new(SystemNvml::new())),
        Some(path) => {
            let origin = format!("{FAKE_NVML_ENV}={}", path.to_string_lossy());
            let bytes = crate::input::read_file(
                path.as_ref(),
                "the fake NVML readings",
                crate::input::MAX_CONFIG_BYTES,
            )
            .map_err(|e| Error::new(format!("{FAKE_NVML_ENV}={}", e.message())))?;
            let text = String::from_utf8_lossy(&bytes);
            Ok(Box::new(FakeNvml::from_json(&text, &origin)?))
        }
    }
}

/// The budget on live card `index`: what is free now less the margin (0 when the margin does
/// not fit), the card matched to its catalogue profile — or, for a card the catalogue lacks, a
/// generic profile built from the reading, with a warning — and who holds the rest.
pub fn live_budget(nvml: &dyn Nvml, index: u32, margin_bytes: u64) -> Result<Budget> {
    let reading = reading_at(nvml, index)?;
    let cuda_total = reading.cuda_total_bytes();
    let mut warnings = Vec::new();
    let profile = profile_of(&reading, index, &mut warnings);
    let usable_bytes = reading.free_bytes.saturating_sub(margin_bytes);
    if reading.free_bytes < margin_bytes {
        warnings.push(format!(
            "GPU {index} has only {} free, less than the {} margin: nothing fits",
            human(reading.free_bytes),
            human(margin_bytes)
        ));
    }
    Ok(Budget {
        name: reading.name.clone(),
        total_bytes: cuda_total,
        usable_bytes,
        margin_bytes,
        safety_pct: 0.0,
        safety_bytes: 0,
        source: if nvml.is_fake() {
            BudgetSource::FakeNvml
        } else {
            BudgetSource::Live
        },
        profile,
        others: Some(holders(&reading)),
        live: Some(reading),
        warnings,
    })
}

/// The NVML reading of GPU `index`; a plain error when there is none, or no such index.
fn reading_at(nvml: &dyn Nvml, index: u32) -> Result<LiveReading> {
    let readings = nvml.devices()?;
    match readings.iter().find(|r| r.index == index) {
        Some(r) => Ok(r.clone()),
        None if readings.is_empty() => Err(Error::new(NO_CARD_MESSAGE)),
        None => {
            let cards: Vec<String> = readings
                .iter()
                .map(|r| format!("{} {}", r.index, r.name))
                .collect();
            Err(Error::new(format!(
                "--gpu-index {index}: no such GPU; this machine has {}",
                cards.join(", ")
            )))
        }
    }
}

/// The catalogue's profile for the card NVML names, else one built from NVML's figures; a
/// warning where they disagree or the card is unknown.
fn profile_of(reading: &LiveReading, index: u32, warnings: &mut Vec<String>) -> GpuProfile {
    let cuda_total = reading.cuda_total_bytes();
    match match_nvml_name(&reading.name, cuda_total) {
        Some(profile) => {
            if profile.total_bytes.abs_diff(cuda_total) > GIB / 2 {
                warnings.push(format!(
                    "GPU {index} reports {} for CUDA, the catalogue's {} has {}: the budget uses \
                     the card's own figure",
                    human(cuda_total),
                    profile.key,
                    human(profile.total_bytes)
                ));
            }
            profile
        }
        None => {
            let profile = generic_profile(reading);
            warnings.push(format!(
                "{} is not in the catalogue: using a profile built from NVML (compute capability \
                 {}, {} SMs; cuBLAS workspace {}, CUDA context {} by default{}); throughput is \
                 unknown",
                crate::plain::quote(&reading.name),
                profile.compute_capability_string(),
                if profile.sm_count == 0 {
                    "unknown".to_string()
                } else {
                    profile.sm_count.to_string()
                },
                human(profile.cublas_workspace_bytes),
                human(profile.context_bytes),
                if profile.compute_capability == (0, 0) {
                    "; bf16 assumed unsupported"
                } else {
                    ""
                }
            ));
            profile
        }
    }
}

/// A profile for a card the catalogue lacks, from what NVML says: the generic card
/// ([`GpuProfile::generic`]) with the compute capability and SM count NVML gives, and the
/// defaults they imply.
fn generic_profile(reading: &LiveReading) -> GpuProfile {
    let compute_capability = reading.compute_capability.unwrap_or((0, 0));
    let sm_count = reading.sm_count.unwrap_or(0);
    let key = normalize(&reading.name);
    let key = if key.is_empty() {
        format!("gpu{}", reading.index)
    } else {
        key
    };
    GpuProfile {
        measured: true,
        bf16: compute_capability.0 >= 8,
        compute_capability,
        sm_count,
        cublas_workspace_bytes: default_cublas_workspace_bytes(compute_capability),
        context_bytes: default_context_bytes(compute_capability, sm_count),
        ..GpuProfile::generic(key, reading.name.clone(), reading.cuda_total_bytes())
    }
}

/// Who holds the used memory, in one sentence: "2 other processes hold 1.97 GiB: pid 1234
/// python 1.80 GiB, pid 88 Xorg 0.17 GiB", largest first, plus what no listed process
/// accounts for (processes in other containers are invisible to NVML's process list).
pub fn holders(reading: &LiveReading) -> String {
    let mut processes: Vec<&GpuProcess> = reading.processes.iter().collect();
    processes.sort_by_key(|p| (std::cmp::Reverse(p.used_bytes), p.pid));
    let listed: u64 = processes.iter().filter_map(|p| p.used_bytes).sum();
    let unlisted = reading.used_bytes.saturating_sub(listed);
    let mut sentence = match processes.len() {
        0 => String::new(),
        n => {
            let each: Vec<String> = processes
                .iter()
                .map(|p| {
                    let name = p.name.as_deref().unwrap_or("(name unknown)");
                    let bytes = p.used_bytes.map_or("(memory unknown)".to_string(), human);
                    format!("pid {} {name} {bytes}", p.pid)
                })
                .collect();
            format!(
                "{n} other process{} hold{} {}: {}",
                if n == 1 { "" } else { "es" },
                if n == 1 { "s" } else { "" },
                human(listed),
                each.join(", ")
            )
        }
    };
    // The driver itself shows a few MiB as used on an idle card; say nothing below 64 MiB.
    if unlisted >= 64 * MIB {
        if sentence.is_empty() {
            sentence = format!(
                "{} is in use by processes NVML does not list (another container or VM?)",
                human(unlisted)
            );
        } else {
            sentence.push_str(&format!(
                "; {} more is in use outside them (another container or VM?)",
                human(unlisted)
            ));
        }
    }
    if sentence.is_empty() {
        sentence = "no other process holds memory on this card".to_string();
    }
    sentence
}
