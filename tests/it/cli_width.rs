//! Issue #18 item 7, from the user's side: every table fits the terminal's width — COLUMNS
//! when set, 80 columns when stdout is no terminal and nothing says otherwise — wrapping
//! cells rather than running past the edge.

use crate::support::cli::vramplan_env;

/// Widths in characters of the lines that belong to a table (box-drawing borders).
fn table_widths(out: &str) -> Vec<usize> {
    out.lines()
        .filter(|l| l.starts_with(['│', '┌', '└', '╞', '├']))
        .map(|l| l.chars().count())
        .collect()
}

#[test]
fn tables_fit_the_width_columns_gives() {
    // (`gpus` lists the catalogue at its natural width: src/budget/table.rs says why.)
    let commands: [&[&str]; 3] = [
        &[
            "check",
            "fixtures/configs/seed-rtx3060.py",
            "--gpu",
            "rtx3060",
            "--compile=False",
        ],
        &[
            "suggest",
            "fixtures/configs/seed-rtx3060.py",
            "--gpu",
            "rtx3060",
        ],
        &[
            "check",
            "--model",
            "llama-3.1-8b",
            "--mode",
            "inference",
            "--gpu",
            "a100-80gb",
            "--batch_size=8",
        ],
    ];
    for columns in [80usize, 100, 60] {
        let env = [("COLUMNS", columns.to_string())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for args in commands {
            let (code, out, err) = vramplan_env(args, &env);
            assert!(code == 0 || code == 1, "{args:?}: {err}");
            let widths = table_widths(&out);
            assert!(!widths.is_empty(), "{args:?}: no table in\n{out}");
            let widest = *widths.iter().max().unwrap();
            assert!(
                widest <= columns,
                "{args:?} at COLUMNS={columns}: a table line of {widest} characters\n{out}"
            );
        }
    }
    // Wrapped, not cut: every category still has its row at 80 columns.
    let (_, out, _) = vramplan_env(
        &[
            "check",
            "fixtures/configs/seed-rtx3060.py",
            "--gpu",
            "rtx3060",
            "--compile=False",
        ],
        &[("COLUMNS", "80")],
    );
    for row in [
        "logits and loss",
        "allocator slack (reserved − allocated)",
        "CUDA context and kernels",
    ] {
        assert!(out.contains(row), "{row} missing:\n{out}");
    }
}
