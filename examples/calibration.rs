//! Prints the simulator's error against PyTorch's reference figures, row by row.
//!
//!     cargo run --release --example calibration [-- path/to/torch-ref-calibration.csv]

use vramplan::calibration::{evaluate, summary, ALLOCATED_FIGURES, RESERVED_FIGURE};

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/torch-ref-calibration.csv"
        )
        .to_string()
    });
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("calibration: cannot read {path}: {e}");
            std::process::exit(2);
        }
    };
    let rows = match evaluate(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("calibration: {path}: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "{:<58} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "config", "init", "train", "eval", "eval2", "reserved"
    );
    for r in &rows {
        let cells: Vec<String> = r
            .figures
            .iter()
            .map(|f| format!("{:+.2}%", 100.0 * f.relative_error()))
            .collect();
        println!(
            "{:<58} {:>8} {:>8} {:>8} {:>8} {:>9}",
            r.label, cells[0], cells[1], cells[2], cells[3], cells[4]
        );
    }
    let (m, w) = summary(&rows, &ALLOCATED_FIGURES);
    let (rm, rw) = summary(&rows, &[RESERVED_FIGURE]);
    println!(
        "\nallocated: median {:.2}%, worst {:.2}% | reserved: median {:.2}%, worst {:.2}% ({} rows)",
        100.0 * m,
        100.0 * w,
        100.0 * rm,
        100.0 * rw,
        rows.len()
    );
}
