//! The GPU catalogue: profiles/gpus/*.toml embedded at build time, parsed once, and looked up
//! by key, NVML name or alias.
//!
//! # How names match
//!
//! Case, spaces, dashes and other punctuation are ignored, and so are the vendor words NVML
//! puts in front ("NVIDIA", "GeForce", "Tesla"); a leading "RTX" is optional. So "RTX 3060",
//! "rtx-3060", "3060" and "NVIDIA GeForce RTX 3060" all name `rtx3060`.
//!
//! # Ambiguous names are errors, never a silent guess
//!
//! Where one name covers cards with different memory — "a100" (40 or 80 GB), "v100" (16 or
//! 32 GB), "RTX 4060 Ti" (8 or 16 GB, and NVML names both the same) — [`find`] fails and lists
//! the choices with their totals: planning a 40 GB card as an 80 GB one is the silent error this
//! tool exists to prevent, and the fix costs one word. A family whose members share their memory
//! resolves to its common form instead: "h100" is the SXM card (`h100-80gb`), the PCIe card is
//! `h100-pcie`. `--live` needs no such choice: it tells cards apart by their measured total.

use super::GpuProfile;
use crate::error::{Error, ErrorKind, Result};
use crate::plain::quote;
use crate::units::human;
use std::path::Path;
use std::sync::OnceLock;

macro_rules! embed {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../../profiles/gpus/", $file)))),*]
    };
}

/// Every profile file, in the order `vramplan gpus` lists them: GeForce cards by generation,
/// then data-centre cards by generation.
const FILES: &[(&str, &str)] = embed!(
    "rtx2060.toml",
    "rtx2080ti.toml",
    "rtx3060.toml",
    "rtx3060-laptop.toml",
    "rtx3070.toml",
    "rtx3080.toml",
    "rtx3090.toml",
    "rtx4060ti-8gb.toml",
    "rtx4060ti-16gb.toml",
    "rtx4070.toml",
    "rtx4080.toml",
    "rtx4090.toml",
    "rtx5090.toml",
    "p100.toml",
    "t4.toml",
    "v100-16gb.toml",
    "v100-32gb.toml",
    "a10.toml",
    "a10g.toml",
    "rtx-a6000.toml",
    "a40.toml",
    "l4.toml",
    "l40s.toml",
    "rtx6000-ada.toml",
    "a100-40gb.toml",
    "a100-80gb.toml",
    "h100-80gb.toml",
    "h100-pcie.toml",
    "h200.toml",
    "gh200.toml",
    "b200.toml",
);

/// The file names embedded in the binary (a test checks none in profiles/gpus/ is missing).
pub fn embedded_files() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(file, _)| *file)
}

/// All catalogue profiles, parsed once, in listing order.
pub fn catalogue() -> &'static [GpuProfile] {
    static CATALOGUE: OnceLock<Vec<GpuProfile>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        FILES
            .iter()
            .map(|(file, text)| {
                // The embedded files are part of the program, not user input: a test parses
                // every one, so a failure here is a build defect.
                GpuProfile::from_toml_str(text, &format!("embedded profiles/gpus/{file}"))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    })
}

/// Look a card up by key, NVML name or alias (see the module documentation for the rules).
pub fn find(name: &str) -> Result<GpuProfile> {
    let wanted = normalize(name);
    if wanted.is_empty() {
        return Err(Error::with(
            ErrorKind::Gpu,
            format!(
            "--gpu {}: give a card's name or key, e.g. --gpu rtx3060 (`vramplan gpus` lists them)",
            quote(name)
        ),
        ));
    }
    let matches: Vec<&GpuProfile> = catalogue()
        .iter()
        .filter(|p| forms(p).contains(&wanted))
        .collect();
    if matches.is_empty() && is_amd(&wanted) {
        return Err(Error::with(ErrorKind::Gpu, format!(
            "--gpu {name:?}: AMD cards (Instinct MI-class, Radeon) are out of scope: vramplan models \
             PyTorch on CUDA (its caching allocator, cuBLAS workspaces, NVIDIA's attention kernels), \
             and ROCm's HIP allocator and kernels were never checked against it"
        )));
    }
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::with(
            ErrorKind::Gpu,
            format!(
            "--gpu {}: no such card in the catalogue; closest: {}. `vramplan gpus` lists them all, \
             or describe your card in a file for --gpu-file",
            quote(name),
            closest(&wanted, 3)
                .iter()
                .map(|p| describe(p))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        )),
        several => Err(Error::with(
            ErrorKind::Gpu,
            format!(
                "--gpu {} names {} cards with different memory: {}; say which",
                quote(name),
                several.len(),
                several
                    .iter()
                    .map(|p| describe(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// `--gpu 48GiB`: a generic card ([`GpuProfile::generic`]) whose total, as CUDA reports it, is
/// that size; None when `spec` is not a size with a unit (then it is a card's name). Binary
/// units only: a "24 GB" card has 24 GiB of memory, of which CUDA reports about 23.6 GiB, so
/// `24GB` (10^9 bytes each) would mean neither; it is refused with that explanation.
pub fn generic_card(spec: &str) -> Result<Option<GpuProfile>> {
    let text = spec.trim();
    // A size has a unit ("48GiB"); a bare number ("3060") is a card's name.
    if !text.starts_with(|c: char| c.is_ascii_digit())
        || !text.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        return Ok(None);
    }
    let unit = text
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '_')
        .trim()
        .to_ascii_lowercase();
    if matches!(unit.as_str(), "kb" | "mb" | "gb" | "tb") {
        return Err(Error::with(ErrorKind::Gpu, format!(
            "--gpu {}: a card's size in GB is ambiguous (a \"24 GB\" card has 24 GiB, of which CUDA reports about 23.6 GiB): give the total CUDA reports in binary units, e.g. --gpu 23.6GiB, or name the card",
            quote(spec)
        )));
    }
    // Not a size after all ("5060ti"): the caller looks the name up.
    let Ok(total) = super::margin::parse_bytes(text) else {
        return Ok(None);
    };
    if let Some(why) = super::profile::total_problem(total) {
        return Err(Error::with(
            ErrorKind::Gpu,
            format!("--gpu {}: {why}", quote(spec)),
        ));
    }
    let shown = crate::units::human(total);
    let key = format!("generic-{}", normalize(&shown));
    let mut card = GpuProfile::generic(key, format!("generic {shown} card"), total);
    // The user gave the total CUDA reports: it is not a nominal size to correct.
    card.measured = true;
    Ok(Some(card))
}

/// Load one profile from a TOML file (`--gpu-file`), with the same fields as the catalogue's.
pub fn from_file(path: impl AsRef<Path>) -> Result<GpuProfile> {
    let path = path.as_ref();
    let bytes = crate::input::read_file(
        path,
        "the --gpu-file profile",
        crate::input::MAX_CONFIG_BYTES,
    )?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::with(
            ErrorKind::Gpu,
            format!(
                "{}: expected a UTF-8 TOML GPU profile, found invalid UTF-8 at byte {}",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    GpuProfile::from_toml_str(&text, &path.display().to_string())
}

/// The catalogue profile for a name NVML printed, telling same-named cards (the 8 and 16 GB
/// RTX 4060 Ti) apart by the CUDA-visible total measured on the card. None for a card the
/// catalogue lacks.
pub fn match_nvml_name(name: &str, cuda_total_bytes: u64) -> Option<GpuProfile> {
    let wanted = normalize(name);
    catalogue()
        .iter()
        .filter(|p| forms(p).contains(&wanted))
        .min_by_key(|p| p.total_bytes.abs_diff(cuda_total_bytes))
        .cloned()
}

/// A normalized name of an AMD card: "mi300x", "amd instinct mi250", "radeon rx 7900 xtx".
fn is_amd(wanted: &str) -> bool {
    let mi_class = wanted
        .strip_prefix("mi")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    mi_class
        || ["amd", "instinct", "radeon"]
            .iter()
            .any(|w| wanted.contains(w))
}

fn describe(p: &GpuProfile) -> String {
    format!("{} ({}, {})", p.key, p.name, human(p.total_bytes))
}

/// Lowercase alphanumerics only, without the vendor words NVML prefixes.
pub(crate) fn normalize(s: &str) -> String {
    let mut n: String = s
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    while let Some(rest) = ["nvidia", "geforce", "tesla"]
        .iter()
        .find_map(|prefix| n.strip_prefix(prefix))
    {
        n = rest.to_string();
    }
    n
}

/// Every normalized spelling that names a profile.
fn forms(p: &GpuProfile) -> Vec<String> {
    let mut out = Vec::new();
    for spelling in std::iter::once(&p.key)
        .chain(std::iter::once(&p.name))
        .chain(p.aliases.iter())
    {
        let n = normalize(spelling);
        if let Some(rest) = n.strip_prefix("rtx").filter(|r| !r.is_empty()) {
            out.push(rest.to_string());
        }
        if !n.is_empty() {
            out.push(n);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The `n` profiles whose spellings are nearest to `wanted`: first those with a spelling that
/// contains it or that it contains ("4090 laptop" → rtx4090), then by edit distance, then in
/// catalogue order.
fn closest(wanted: &str, n: usize) -> Vec<&'static GpuProfile> {
    let mut scored: Vec<(bool, usize, usize, &GpuProfile)> = catalogue()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let spellings = forms(p);
            let contains = spellings
                .iter()
                .any(|f| f.contains(wanted) || (f.len() >= 3 && wanted.contains(f.as_str())));
            let distance = spellings
                .iter()
                .map(|f| edit_distance(wanted, f))
                .min()
                .unwrap_or(usize::MAX);
            (!contains, distance, i, p)
        })
        .collect();
    scored.sort_by_key(|&(c, d, i, _)| (c, d, i));
    scored.into_iter().take(n).map(|(.., p)| p).collect()
}

/// Levenshtein distance over chars.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_vendor_words_and_punctuation() {
        assert_eq!(normalize("NVIDIA GeForce RTX 3060"), "rtx3060");
        assert_eq!(normalize("rtx-3060"), "rtx3060");
        assert_eq!(normalize("Tesla T4"), "t4");
        assert_eq!(normalize("NVIDIA A100-SXM4-40GB"), "a100sxm440gb");
        assert_eq!(normalize(" nvidia "), "");
    }

    #[test]
    fn amd_names_are_recognised_and_nvidia_names_are_not() {
        for amd in [
            "MI300X",
            "mi250",
            "AMD Instinct MI210",
            "Radeon RX 7900 XTX",
        ] {
            assert!(is_amd(&normalize(amd)), "{amd}");
        }
        for nvidia in ["rtx3060", "a100-40gb", "H100", "mig", "RTX A6000"] {
            assert!(!is_amd(&normalize(nvidia)), "{nvidia}");
        }
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("rtx3070", "rtx3060"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
