//! The GPU catalogue: every embedded profile, the documented values, lookups by the spellings
//! people type and the `vramplan gpus` table.

use std::collections::BTreeSet;
use vramplan::budget::{
    catalogue, catalogue_table, default_context_bytes, embedded_files, find, GpuProfile,
};
use vramplan::units::{human, MIB};

fn key_of(name: &str) -> String {
    match find(name) {
        Ok(p) => p.key,
        Err(e) => panic!("find({name:?}) failed: {e}"),
    }
}

fn error_of(name: &str) -> String {
    match find(name) {
        Ok(p) => panic!("find({name:?}) gave {} instead of an error", p.key),
        Err(e) => e.message().to_string(),
    }
}

#[test]
fn every_profile_file_is_embedded_and_named_by_its_key() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/gpus");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".toml"))
        .collect();
    let embedded: BTreeSet<String> = embedded_files().map(str::to_string).collect();
    assert_eq!(
        on_disk, embedded,
        "profiles/gpus/ and the embedded list differ"
    );
    let keys: Vec<String> = catalogue()
        .iter()
        .map(|p| format!("{}.toml", p.key))
        .collect();
    assert_eq!(keys, embedded_files().collect::<Vec<_>>());
}

#[test]
fn the_catalogue_has_every_card_the_issue_asks_for() {
    let keys: BTreeSet<&str> = catalogue().iter().map(|p| p.key.as_str()).collect();
    for key in [
        "rtx2060",
        "rtx3060",
        "rtx3060-laptop",
        "rtx3070",
        "rtx3080",
        "rtx3090",
        "rtx4060ti-16gb",
        "rtx4070",
        "rtx4080",
        "rtx4090",
        "rtx5090",
        "t4",
        "v100-16gb",
        "v100-32gb",
        "a10",
        "a10g",
        "l4",
        "l40s",
        "a100-40gb",
        "a100-80gb",
        "h100-80gb",
        "h200",
    ] {
        assert!(keys.contains(key), "{key} missing");
    }
}

#[test]
fn totals_print_as_the_measured_figures() {
    // (key, what PyTorch printed as total capacity, measured)
    let expected = [
        ("rtx2060", "5.79 GiB", true),
        ("rtx2080ti", "10.76 GiB", false),
        ("rtx3060", "11.69 GiB", true),
        ("rtx3060-laptop", "5.80 GiB", true),
        ("rtx3070", "7.78 GiB", true),
        ("rtx3080", "9.78 GiB", true),
        ("rtx3090", "23.69 GiB", true),
        ("rtx4060ti-8gb", "7.75 GiB", false),
        ("rtx4060ti-16gb", "15.55 GiB", true),
        ("rtx4070", "11.55 GiB", false),
        ("rtx4080", "15.55 GiB", false),
        ("rtx4090", "23.55 GiB", true),
        ("rtx5090", "31.36 GiB", true),
        ("p100", "15.90 GiB", true),
        ("t4", "14.57 GiB", true),
        ("v100-16gb", "15.77 GiB", true),
        ("v100-32gb", "31.74 GiB", true),
        ("a10", "21.99 GiB", true),
        ("a10g", "21.99 GiB", true),
        ("rtx-a6000", "47.54 GiB", false),
        ("a40", "44.40 GiB", false),
        ("l4", "22.03 GiB", true),
        ("l40s", "44.42 GiB", true),
        ("rtx6000-ada", "44.43 GiB", true),
        ("a100-40gb", "39.56 GiB", true),
        ("a100-80gb", "79.15 GiB", true),
        ("h100-80gb", "79.19 GiB", true),
        ("h100-pcie", "79.11 GiB", false),
        ("h200", "139.72 GiB", true),
        // Spec-sheet derivations (the files say how): nominal GiB less the H100 80GB's 0.81 GiB.
        ("gh200", "95.19 GiB", false),
        ("b200", "179.19 GiB", false),
    ];
    assert_eq!(expected.len(), catalogue().len());
    for (key, printed, measured) in expected {
        let p = find(key).unwrap();
        assert_eq!(human(p.total_bytes), printed, "{key}");
        assert_eq!(p.measured, measured, "{key}");
    }
    // The seed: 11.69 GiB x 2^30, rounded.
    assert_eq!(find("rtx3060").unwrap().total_bytes, 12_552_041_923);
}

#[test]
fn workspaces_context_and_bf16_follow_the_architecture() {
    for p in catalogue() {
        let sm90 = p.compute_capability.0 == 9;
        assert_eq!(p.is_sm90(), sm90);
        assert_eq!(
            p.cublas_workspace_bytes == 32 * MIB,
            sm90,
            "{}: sm90 <=> 32 MiB cuBLAS workspace",
            p.key
        );
        if !sm90 {
            assert_eq!(p.cublas_workspace_bytes, 8_519_680, "{}", p.key);
        }
        assert_eq!(p.cublaslt_workspace_bytes, MIB, "{}", p.key);
        assert_eq!(
            p.context_bytes,
            default_context_bytes(p.compute_capability, p.sm_count),
            "{}: context is the documented default",
            p.key
        );
        assert!(
            (200 * MIB..=520 * MIB).contains(&p.context_bytes),
            "{}: {}",
            p.key,
            human(p.context_bytes)
        );
        assert_eq!(p.bf16, p.compute_capability.0 >= 8, "{}", p.key);
        assert!(p.has_throughput() && p.sm_count > 0, "{}", p.key);
        assert!(p.fp32_tflops < p.bf16_tflops, "{}", p.key);
    }
    for key in ["t4", "v100-16gb", "v100-32gb", "rtx2060"] {
        assert!(!find(key).unwrap().bf16, "{key} has no bf16");
    }
    let h100 = find("h100-80gb").unwrap();
    assert_eq!((h100.compute_capability, h100.sm_count), ((9, 0), 132));
    assert_eq!(h100.context_bytes, 456 * MIB);
    let rtx3060 = find("rtx3060").unwrap();
    assert_eq!(rtx3060.compute_capability, (8, 6));
    assert_eq!(rtx3060.sm_count, 28);
    assert_eq!(rtx3060.context_bytes, 192 * MIB + 1536 * 28 * 1024);
    assert_eq!(rtx3060.matmul_workspace_bytes(), 8_519_680 + MIB);
}

#[test]
fn lookups_by_the_spellings_people_type() {
    for spelling in [
        "rtx3060",
        "RTX 3060",
        "rtx-3060",
        "NVIDIA GeForce RTX 3060",
        "GeForce RTX 3060",
        "3060",
        " Rtx_3060 ",
    ] {
        assert_eq!(key_of(spelling), "rtx3060", "{spelling}");
    }
    let cases = [
        ("NVIDIA GeForce RTX 3060 Laptop GPU", "rtx3060-laptop"),
        ("rtx3060-laptop", "rtx3060-laptop"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
        ("a100 40gb", "a100-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb"),
        ("A100-80GB", "a100-80gb"),
        ("Tesla T4", "t4"),
        ("t4", "t4"),
        ("Tesla V100-SXM2-16GB", "v100-16gb"),
        ("Tesla V100-PCIE-32GB", "v100-32gb"),
        ("NVIDIA H100 80GB HBM3", "h100-80gb"),
        ("h100", "h100-80gb"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A10", "a10"),
        ("a10", "a10"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("4090", "rtx4090"),
        ("NVIDIA GeForce RTX 5090", "rtx5090"),
        ("rtx 4060 ti 16gb", "rtx4060ti-16gb"),
        ("RTX 2060", "rtx2060"),
    ];
    for (spelling, key) in cases {
        assert_eq!(key_of(spelling), key, "{spelling}");
    }
}

#[test]
fn every_listed_spelling_finds_its_own_card_or_names_it_among_the_choices() {
    for p in catalogue() {
        for spelling in std::iter::once(&p.key)
            .chain(std::iter::once(&p.name))
            .chain(p.aliases.iter())
        {
            match find(spelling) {
                Ok(found) => assert_eq!(found.key, p.key, "{spelling:?}"),
                Err(e) => {
                    assert!(e.message().contains("say which"), "{spelling:?}: {e}");
                    assert!(e.message().contains(&p.key), "{spelling:?}: {e}");
                }
            }
        }
    }
}

#[test]
fn names_that_cover_cards_of_different_memory_are_errors_listing_the_choices() {
    let e = error_of("a100");
    assert!(
        e.contains("a100-40gb (NVIDIA A100-SXM4-40GB, 39.56 GiB)"),
        "{e}"
    );
    assert!(
        e.contains("a100-80gb (NVIDIA A100-SXM4-80GB, 79.15 GiB)"),
        "{e}"
    );
    assert!(e.starts_with("--gpu \"a100\" names 2 cards"), "{e}");
    let e = error_of("V100");
    assert!(e.contains("v100-16gb") && e.contains("v100-32gb"), "{e}");
    // NVML names the 8 and 16 GB RTX 4060 Ti alike.
    let e = error_of("NVIDIA GeForce RTX 4060 Ti");
    assert!(
        e.contains("rtx4060ti-8gb") && e.contains("rtx4060ti-16gb"),
        "{e}"
    );
}

#[test]
fn an_unknown_name_lists_the_closest_three() {
    let e = error_of("rtx 3070 ti");
    assert!(
        e.starts_with("--gpu \"rtx 3070 ti\": no such card in the catalogue; closest: "),
        "{e}"
    );
    let closest = e.split("closest: ").nth(1).unwrap();
    assert!(
        closest.starts_with("rtx3070 (NVIDIA GeForce RTX 3070, 7.78 GiB)"),
        "{e}"
    );
    assert_eq!(
        closest.split(" GiB)").count() - 1,
        3,
        "three suggestions: {e}"
    );
    assert!(e.contains("--gpu-file"), "{e}");

    let e = error_of("a100 sxm");
    let closest = e.split("closest: ").nth(1).unwrap();
    assert!(
        closest.starts_with("a100-40gb") && closest.contains("a100-80gb"),
        "{e}"
    );

    let e = error_of("4090 laptop");
    let closest = e.split("closest: ").nth(1).unwrap();
    assert!(closest.starts_with("rtx4090 ("), "{e}");

    let e = error_of("h300");
    assert!(e.contains("h100-80gb") || e.contains("h200"), "{e}");
    assert!(error_of("NVIDIA").contains("give a card's name"));
}

#[test]
fn the_gpus_table_shows_every_card_with_its_figures() {
    let out = catalogue_table(catalogue());
    for header in [
        "GPU",
        "key",
        "memory",
        "bf16",
        "cc",
        "SMs",
        "GB/s",
        "bf16 TFLOPS",
        "fp32 TFLOPS",
    ] {
        assert!(out.contains(header), "{header}");
    }
    let row = out
        .lines()
        .find(|l| l.contains("NVIDIA GeForce RTX 3060 ") && l.contains(" rtx3060 "))
        .expect("rtx3060 row");
    for cell in ["11.69 GiB", "yes", "8.6", "28", "360", "25.5", "12.7"] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    let t4 = out.lines().find(|l| l.contains("Tesla T4")).unwrap();
    assert!(
        t4.contains("14.57 GiB") && t4.contains("65.0 (fp16)") && t4.contains(" no "),
        "{t4}"
    );
    assert!(out.contains("11.55 GiB*"), "unmeasured totals are starred");
    for p in catalogue() {
        assert!(out.contains(&format!(" {} ", p.key)), "{}", p.key);
    }
}

#[test]
fn profiles_round_trip_through_json() {
    let p = find("h200").unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("\"compute_capability\":[9,0]"), "{json}");
    let back: GpuProfile = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}
