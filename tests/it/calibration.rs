//! The simulator against PyTorch's reference figures (fixtures/reference, copied from
//! shared/reference; computed by an instrumented PyTorch run on the meta device, not measured
//! on a GPU). The bounds are what the simulator achieves, with a little room: every figure
//! within 0.05% (the worst today is 0.02%, fp32 rows), the medians within 0.01% (today
//! 0.00%). The original targets (allocated median 1% / worst 3%, reserved 3% / 15%) would let
//! a regression of whole percents through unnoticed.

use vramplan::calibration::{evaluate, summary, ALLOCATED_FIGURES, RESERVED_FIGURE};

/// Every figure, allocated or reserved, within this relative error of the reference.
const WORST: f64 = 0.0005;
/// The median relative error of the allocated figures, and of the reserved figure.
const MEDIAN: f64 = 0.0001;

fn check_file(path: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let rows = evaluate(&text).expect("calibration rows simulate");
    assert!(rows.len() >= 40, "{path}: expected the 45 calibration rows");
    let (median, worst) = summary(&rows, &ALLOCATED_FIGURES);
    let (rmedian, rworst) = summary(&rows, &[RESERVED_FIGURE]);
    for r in &rows {
        for f in &r.figures {
            assert!(
                f.relative_error().abs() <= WORST,
                "{}: {} simulated {} vs reference {} ({:+.2}%)",
                r.label,
                f.name,
                f.simulated,
                f.reference,
                100.0 * f.relative_error()
            );
        }
    }
    assert!(
        median <= MEDIAN,
        "allocated median error {:.4}%",
        100.0 * median
    );
    assert!(
        worst <= WORST,
        "allocated worst error {:.4}%",
        100.0 * worst
    );
    assert!(
        rmedian <= MEDIAN,
        "reserved median error {:.4}%",
        100.0 * rmedian
    );
    assert!(
        rworst <= WORST,
        "reserved worst error {:.4}%",
        100.0 * rworst
    );
}

#[test]
fn calibration_file_within_target() {
    check_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/reference/torch-ref-calibration.csv"
    ));
}

/// The shared copy too, when it is beside the checkout (it may hold newer rows).
#[test]
fn shared_calibration_file_within_target() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/torch-ref-calibration.csv"
    );
    if std::path::Path::new(shared).exists() {
        check_file(shared);
    } else {
        eprintln!("note: {shared} not found; the fixtures copy was checked");
    }
}
