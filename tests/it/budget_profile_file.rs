//! `--gpu-file`: one profile from a user's TOML file, the defaults the architecture implies,
//! and errors that name the file, the key and what was expected.

use vramplan::budget::{find, from_file};
use vramplan::units::{human, MIB};

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vramplan-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const MINIMAL: &str = r#"
key = "rtx-pro-6000"
name = "NVIDIA RTX PRO 6000 Blackwell Workstation Edition"
total_bytes = "94.97GiB"
compute_capability = [12, 0]
sm_count = 188
bandwidth_gb_s = 1792
bf16_tflops = 251.9
fp32_tflops = 126.0
"#;

#[test]
fn a_profile_file_fills_in_what_the_architecture_implies() {
    let path = write_temp("minimal.toml", MINIMAL);
    let p = from_file(&path).unwrap();
    assert_eq!(p.key, "rtx-pro-6000");
    assert_eq!(human(p.total_bytes), "94.97 GiB");
    assert!(p.aliases.is_empty() && !p.measured && p.bf16);
    assert_eq!(p.compute_capability, (12, 0));
    assert_eq!(p.cublas_workspace_bytes, 8_519_680);
    assert_eq!(p.cublaslt_workspace_bytes, MIB);
    assert_eq!(p.context_bytes, 192 * MIB + 1536 * 188 * 1024);
    assert_eq!(p.bandwidth_gb_s, 1792.0);

    let hopper = MINIMAL.replace("[12, 0]", "\"9.0\"") + "context_bytes = \"300MiB\"\n";
    let p = from_file(write_temp("hopper.toml", &hopper)).unwrap();
    assert_eq!(
        (p.cublas_workspace_bytes, p.context_bytes),
        (32 * MIB, 300 * MIB)
    );

    // A catalogue file read through --gpu-file gives the same profile.
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/gpus/rtx3060.toml");
    assert_eq!(from_file(file).unwrap(), find("rtx3060").unwrap());
}

#[test]
fn bad_profile_files_name_the_file_the_key_and_what_was_expected() {
    let cases: Vec<(String, &str)> = vec![
        (
            MINIMAL.replace("total_bytes = \"94.97GiB\"\n", ""),
            "missing `total_bytes` (expected the total CUDA reports",
        ),
        (
            MINIMAL.replace("sm_count = 188", "sm_count = \"many\""),
            "`sm_count`: expected a positive integer, at most 4096, got the string \"many\"",
        ),
        (
            MINIMAL.replace("sm_count = 188", "sm_count = 0"),
            "`sm_count`: expected a positive integer, at most 4096, got the integer 0",
        ),
        (
            MINIMAL.replace("[12, 0]", "\"twelve\""),
            "`compute_capability`: expected a compute capability such as \"8.6\" or [8, 6], got the string \"twelve\"",
        ),
        (
            MINIMAL.replace("\"94.97GiB\"", "-5"),
            "`total_bytes`: expected bytes: an integer, or a size such as \"300MiB\", got the integer -5",
        ),
        (
            MINIMAL.replace("\"94.97GiB\"", "\"lots\""),
            "`total_bytes`: no number",
        ),
        (
            MINIMAL.replace("key = \"rtx-pro-6000\"", "key = \"RTX Pro\""),
            "`key`: expected lowercase letters, digits and dashes",
        ),
        (
            MINIMAL.replace("bf16_tflops = 251.9", "bf16_tflops = -1.0"),
            "`bf16_tflops`: expected a positive number (dense bf16 tensor TFLOPS), at most 1000000, got the number -1",
        ),
        (
            format!("{MINIMAL}sm_cout = 3\n"),
            "unknown key `sm_cout` (did you mean `sm_count`?)",
        ),
        (
            format!("{MINIMAL}context_bytes = \"200GiB\"\n"),
            "`context_bytes`: expected less than total_bytes (94.97 GiB), got 200.00 GiB",
        ),
        (
            MINIMAL.replace("sm_count = 188", "sm_count = "),
            ":6:12: not valid TOML: invalid string; expected",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write_temp(&format!("bad{i}.toml"), text);
        let e = from_file(&path).expect_err(expected).message().to_string();
        assert!(
            e.starts_with(&format!("{}:", path.display())),
            "names the file: {e}"
        );
        assert!(
            e.contains(expected),
            "case {i}: expected {expected:?} in {e:?}"
        );
        assert!(!e.contains('\n'), "one line: {e:?}");
    }
    let e = from_file("/nonexistent/card.toml").unwrap_err();
    assert!(e
        .message()
        .starts_with("/nonexistent/card.toml: cannot read the --gpu-file profile: no such file"));
}

#[test]
fn only_the_total_is_required_and_every_problem_is_reported_at_once() {
    // Only the total: the generic card's defaults (compute capability unknown, so the 32 MiB
    // cuBLAS workspace and the 520 MiB context default of src/budget/profile.rs).
    let p = from_file(write_temp("only-total.toml", "total_bytes = \"47.5GiB\"\n")).unwrap();
    assert_eq!(p.total_bytes, 47 * 1024 * MIB + 512 * MIB);
    assert_eq!(p.key, "onlytotal");
    assert_eq!(p.compute_capability, (0, 0));
    assert_eq!(
        (p.cublas_workspace_bytes, p.context_bytes),
        (32 * MIB, 520 * MIB)
    );
    assert!(!p.bf16 && p.bf16_tflops == 0.0);

    // Three problems, one line naming each: an unknown key, an absurd total, an absurd workspace.
    let text = "sm_cout = 3\ntotal_bytes = \"2000TiB\"\ncublas_workspace_bytes = \"100GiB\"\n";
    let path = write_temp("three.toml", text);
    let e = from_file(&path).unwrap_err().message().to_string();
    assert!(!e.contains('\n'), "{e}");
    for part in [
        "unknown key `sm_cout` (did you mean `sm_count`?)",
        "`total_bytes`: expected a total between 256.00 MiB and 1024.00 GiB",
        "`cublas_workspace_bytes`: expected between 0 bytes and 4.00 GiB",
    ] {
        assert!(e.contains(part), "{part} in {e}");
    }
}
