//! Issue #18 item 5, from the user's side: the cards people rent and own are in the catalogue
//! with the total their cited source gives, and AMD cards get a plain "out of scope" line.

use crate::support::cli::vramplan;

/// `check --gpu NAME` on nanoGPT's defaults: exit 0 or 1 (a verdict, not a usage error), and
/// the GPU line names the card with the total its profile's cited source prints.
#[test]
fn each_new_card_is_found_and_prints_its_sourced_total() {
    // (what the user types, the name printed, the total as the file's source gives it)
    let cards = [
        ("RTX A6000", "NVIDIA RTX A6000", "47.54 GiB"),
        ("A40", "NVIDIA A40", "44.40 GiB"),
        (
            "RTX 6000 Ada",
            "NVIDIA RTX 6000 Ada Generation",
            "44.43 GiB",
        ),
        ("L40S", "NVIDIA L40S", "44.42 GiB"),
        ("L4", "NVIDIA L4", "22.03 GiB"),
        ("RTX 2080 Ti", "NVIDIA GeForce RTX 2080 Ti", "10.76 GiB"),
        ("P100", "Tesla P100-PCIE-16GB", "15.90 GiB"),
        ("B200", "NVIDIA B200", "179.19 GiB"),
        ("GH200", "NVIDIA GH200 480GB", "95.19 GiB"),
    ];
    for (typed, name, total) in cards {
        let (code, out, err) = vramplan(&["check", "--gpu", typed, "--compile=False"]);
        assert!(
            code == 0 || code == 1,
            "--gpu {typed:?}: exit {code}: {err}"
        );
        let gpu_line = out
            .lines()
            .find(|l| l.starts_with("GPU: "))
            .unwrap_or_else(|| panic!("--gpu {typed:?}: no GPU line in\n{out}"));
        assert!(
            gpu_line.starts_with(&format!("GPU: {name} — {total} total")),
            "--gpu {typed:?}: {gpu_line}"
        );
    }
}

/// AMD Instinct cards: exit 2 and one plain line saying they are out of scope, not a list of
/// NVIDIA cards whose names happen to be close.
#[test]
fn amd_cards_are_named_out_of_scope() {
    for typed in ["MI300X", "mi250", "AMD Instinct MI210"] {
        let (code, out, err) = vramplan(&["check", "--gpu", typed]);
        assert_eq!(code, 2, "--gpu {typed:?}: {out}{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("out of scope"), "--gpu {typed:?}: {err}");
        assert!(!err.contains("closest"), "{err}");
    }
}
