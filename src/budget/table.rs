//! What `vramplan gpus` and `vramplan gpus --live` print.

use super::catalogue::match_nvml_name;
use super::live::{holders, LiveReading, ProcessKind};
use super::GpuProfile;
use crate::units::human;
use comfy_table::{presets, CellAlignment, Table};

fn new_table(header: &[&str], right_aligned: &[usize]) -> Table {
    // Not fitted to the terminal: wrapped to 80 columns, comfy-table cuts the card names and
    // the process lists into unreadable pieces. Scripts read `gpus --json`.
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    for &i in right_aligned {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn tflops(x: f64) -> String {
    if x <= 0.0 {
        "?".to_string()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// The catalogue as a table: name, key, CUDA total ("11.69 GiB"; `*` where not measured),
/// bf16, compute capability, SMs, bandwidth and dense tensor TFLOPS.
pub fn catalogue_table(profiles: &[GpuProfile]) -> String {
    let mut table = new_table(
        &[
            "GPU",
            "key",
            "memory",
            "bf16",
            "cc",
            "SMs",
            "GB/s",
            "bf16 TFLOPS",
            "fp32 TFLOPS",
        ],
        &[2, 5, 6, 7, 8],
    );
    let mut unmeasured = false;
    let mut fp16_only = false;
    for p in profiles {
        unmeasured |= !p.measured;
        fp16_only |= !p.bf16;
        table.add_row(vec![
            p.name.clone(),
            p.key.clone(),
            format!(
                "{}{}",
                human(p.total_bytes),
                if p.measured { "" } else { "*" }
            ),
            if p.bf16 { "yes" } else { "no" }.to_string(),
            p.compute_capability_string(),
            if p.sm_count == 0 {
                "?".to_string()
            } else {
                p.sm_count.to_string()
            },
            if p.bandwidth_gb_s > 0.0 {
                format!("{:.0}", p.bandwidth_gb_s)
            } else {
                "?".to_string()
            },
            format!(
                "{}{}",
                tflops(p.bf16_tflops),
                if p.bf16 { "" } else { " (fp16)" }
            ),
            tflops(p.fp32_tflops),
        ]);
    }
    let mut out = table.to_string();
    out.push_str(
        "\nmemory: the total CUDA reports (PyTorch's \"total capacity\"), not the nominal size.",
    );
    if unmeasured {
        out.push_str("\n* not measured: the nominal size less a typical driver reservation.");
    }
    if fp16_only {
        out.push_str("\n(fp16): no bf16 on this card; nanoGPT runs it in float16, at this rate.");
    }
    out.push_str(
        "\nTFLOPS: dense tensor-core peaks with fp32 accumulate; fp32 = TF32 on compute capability 8.0 and up.",
    );
    out
}

/// The cards on this machine: memory, the catalogue profile each matches, driver and CUDA
/// versions, and who holds the used memory.
pub fn live_table(readings: &[LiveReading]) -> String {
    let mut table = new_table(
        &[
            "#",
            "GPU",
            "catalogue",
            "total",
            "used",
            "free",
            "driver",
            "CUDA",
            "processes",
        ],
        &[0, 3, 4, 5],
    );
    for r in readings {
        let profile = match_nvml_name(&r.name, r.cuda_total_bytes())
            .map_or_else(|| "(not listed)".to_string(), |p| p.key);
        let processes: Vec<String> = r
            .processes
            .iter()
            .map(|p| {
                let kind = match p.kind {
                    ProcessKind::Compute => "C",
                    ProcessKind::Graphics => "G",
                    ProcessKind::Both => "C+G",
                };
                format!(
                    "{} {} {} {}",
                    p.pid,
                    p.name.as_deref().unwrap_or("?"),
                    kind,
                    p.used_bytes.map_or("?".to_string(), human)
                )
            })
            .collect();
        table.add_row(vec![
            r.index.to_string(),
            r.name.clone(),
            profile,
            human(r.cuda_total_bytes()),
            human(r.used_bytes),
            human(r.free_bytes),
            r.driver_version.clone(),
            r.cuda_version.clone(),
            if processes.is_empty() {
                "-".to_string()
            } else {
                processes.join("\n")
            },
        ]);
    }
    let mut out = table.to_string();
    for r in readings {
        out.push_str(&format!("\nGPU {}: {}", r.index, holders(r)));
    }
    out.push_str("\ntotal: what CUDA can use (NVML's total less the driver's reserved memory).");
    out
}
