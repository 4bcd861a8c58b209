//! The suggest report for people.

use super::search::{Candidate, GpuSummary, SuggestReport};
use crate::units::human;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, ColumnConstraint};
use std::fmt::Write;

fn row(c: &Candidate) -> Vec<Cell> {
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    vec![
        Cell::new(&c.knob),
        right(c.config.batch_size.to_string()),
        right(c.config.accumulation_as_counted().to_string()),
        right(c.config.block_size.to_string()),
        right(c.tokens_per_step.to_string()),
        right(human(c.peak_device_bytes)),
        right(
            c.relative_throughput
                .map_or("?".to_string(), |r| format!("{r:.2}x")),
        ),
    ]
}

/// The first line of a suggestion: the card and the memory the plan may use.
pub(crate) fn gpu_line(out: &mut String, gpu: &GpuSummary, margin_bytes: u64) {
    let _ = writeln!(
        out,
        "GPU: {} — {} usable ({} total, {})",
        gpu.name,
        human(gpu.usable_bytes),
        human(gpu.total_bytes),
        if gpu.safety_bytes == 0 {
            format!("{} margin", human(margin_bytes))
        } else {
            crate::budget::Budget::kept_free(margin_bytes, gpu.safety_pct, gpu.safety_bytes, &human)
        }
    );
}

pub fn render(r: &SuggestReport) -> String {
    let mut out = String::new();
    let b = &r.baseline;
    gpu_line(&mut out, &r.gpu, r.margin_bytes);
    let _ = writeln!(
        out,
        "Your run ({} semantics): batch_size {} x gradient_accumulation_steps {} x block_size {} = {} tokens/step — peak {} on the device: {}",
        b.config.framework.display_name(),
        b.config.batch_size,
        b.config.accumulation_as_counted(),
        b.config.block_size,
        b.tokens_per_step,
        human(b.peak_device_bytes),
        if b.fits { "fits" } else { "does NOT fit" }
    );
    let _ = writeln!(out);
    match &r.best {
        Some(best) => {
            let _ = writeln!(
                out,
                "Best: {} — batch_size {}, gradient_accumulation_steps {} ({} tokens/step), peak {} of {} usable",
                best.label,
                best.config.batch_size,
                best.config.accumulation_as_counted(),
                best.tokens_per_step,
                human(best.peak_device_bytes),
                human(r.gpu.usable_bytes)
            );
            let _ = writeln!(out, "  {}", best.command);
            for c in &best.code_changes {
                let _ = writeln!(out, "  and in {c}");
            }
            let _ = writeln!(out);
            let mut t = crate::terminal::fitted_table(UTF8_BORDERS_ONLY);
            // Short headers leave the candidate's name room to stay on one line at 80 columns;
            // the line under the table says what each column is.
            t.set_header(vec![
                "candidate",
                "batch",
                "accum",
                "block",
                "tokens",
                "peak",
                "speed",
            ]);
            // The figures never wrap; the candidate's name takes what is left of the width.
            for i in 1..7 {
                if let Some(c) = t.column_mut(i) {
                    c.set_constraint(ColumnConstraint::ContentWidth);
                }
            }
            t.add_row(row(best));
            for a in &r.alternatives {
                t.add_row(row(a));
            }
            let _ = writeln!(out, "{t}");
            let _ = writeln!(
                out,
                "tokens: per optimizer step; peak: on the device (reserved + CUDA context); speed: predicted\n\
                 tokens/s relative to your config (FLOPs per token against the card's throughput)."
            );
            for a in &r.alternatives {
                let _ = writeln!(out, "  {}: {}", a.label, a.command);
                for c in &a.code_changes {
                    let _ = writeln!(out, "    and in {c}");
                }
            }
        }
        None => {
            let _ = writeln!(out, "Nothing fits on this card.");
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    if let Some(m) = &r.multi_gpu {
        render_multi(&mut out, m);
    }
    out
}

/// The multi-GPU plan: per-rank figures, one launch line each.
fn render_multi(out: &mut String, m: &super::multi::MultiReport) {
    let _ = writeln!(out);
    match m.smallest_world_size {
        Some(1) => {
            let _ = writeln!(out, "One GPU of this card is enough (above).");
        }
        Some(w) => {
            let _ = writeln!(out, "The smallest world size that fits is {w} GPUs.");
        }
        None => {
            let _ = writeln!(
                out,
                "Up to {} GPUs of this card: nothing fits per rank, whatever the parallelism.",
                m.max_gpus
            );
        }
    }
    if m.fitting.is_empty() {
        if m.smallest_world_size.is_some() {
            let _ = writeln!(
                out,
                "On {} GPUs: nothing fits per rank, whatever the parallelism.",
                m.planned_world_size
            );
        }
        return;
    }
    let _ = writeln!(
        out,
        "Planned for {} GPUs (each rank's peak; least communication first):",
        m.planned_world_size
    );
    for c in &m.fitting {
        let per_rank = c.config.framework.accumulation_per_rank();
        let _ = writeln!(
            out,
            "  {} x {}: batch_size {} per rank, gradient_accumulation_steps {}{} ({} tokens/step), peak {} per GPU",
            c.world_size,
            c.parallelism,
            c.config.batch_size,
            c.config.accumulation_as_counted(),
            if per_rank { " per rank" } else { " over all ranks" },
            c.tokens_per_step,
            human(c.peak_device_bytes)
        );
        let _ = writeln!(out, "    {}", c.launch);
        for change in &c.code_changes {
            let _ = writeln!(out, "    and in {change}");
        }
        if let Some(ds) = &c.ds_config {
            let _ = writeln!(out, "    ds_config.json: {ds}");
        }
    }
}
