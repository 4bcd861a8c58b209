//! The human report: facts as printed units, what they imply, the culprit, ranked causes with
//! their evidence, and fixes with their predicted peaks.

use super::culprit::shape_text;
use super::{Diagnosis, Phase};
use crate::units::human;
use std::fmt::Write;

fn row(out: &mut String, label: &str, v: Option<u64>) {
    if let Some(b) = v {
        let _ = writeln!(out, "  {label:<34}{:>12}", human(b));
    }
}

/// Render a diagnosis for a terminal: the headline, the facts and what they imply, the
/// culprit, the causes, the fixes, then other ranks' reports and notes.
pub fn render_text(d: &Diagnosis) -> String {
    let mut out = String::new();
    if !d.is_oom {
        out.push_str("Not a VRAM out-of-memory.\n");
        for c in &d.causes {
            let _ = writeln!(out, "  {}", c.evidence);
        }
        for n in &d.notes {
            let _ = writeln!(out, "  ({n})");
        }
        return out;
    }
    for section in [headline, facts, culprit, causes, fixes, others] {
        section(&mut out, d);
    }
    out
}

/// "Out of GPU memory (runtime, GPU, phase)" and, for PyTorch, how the log was dated.
fn headline(out: &mut String, d: &Diagnosis) {
    // A caching-allocator message names the releases that printed it, not just a major.
    let fmt = match &d.pytorch_version {
        Some(v) => format!("PyTorch caching allocator, pytorch {v}"),
        None => d
            .format
            .map_or("an unknown runtime", |f| f.describe())
            .to_string(),
    };
    let dev = d
        .device
        .as_deref()
        .map_or_else(String::new, |x| format!(", GPU {x}"));
    let phase = if d.phase == Phase::Unknown {
        "phase unknown".to_string()
    } else {
        format!("phase: {}", d.phase)
    };
    let _ = writeln!(out, "Out of GPU memory ({fmt}{dev}, {phase})");
    if let Some(v) = &d.pytorch_version {
        let layout = d
            .message_layout
            .map_or("a message cut before its figures", |l| l.describe());
        let _ = writeln!(
            out,
            "  format {}: read as {layout}; dated by: {}",
            d.format.map_or("unknown", |f| f.as_str()),
            v.evidence.join("; ")
        );
    }
    out.push('\n');
}

/// The facts as the log states them, then what they imply.
fn facts(out: &mut String, d: &Diagnosis) {
    let f = &d.facts;
    if f.is_empty() {
        return;
    }
    out.push_str("Facts (as the log states them)\n");
    row(out, "tried to allocate", f.tried_to_allocate_bytes);
    row(out, "total capacity", f.total_capacity_bytes);
    row(out, "free", f.free_bytes);
    row(
        out,
        "this process (incl. non-PyTorch)",
        f.process_in_use_bytes,
    );
    row(
        out,
        "allocated by the framework",
        f.allocated_by_framework_bytes,
    );
    row(out, "  of which in private pools", f.private_pools_bytes);
    row(
        out,
        "reserved but unallocated",
        f.reserved_unallocated_bytes,
    );
    row(out, "reserved in total", f.reserved_total_bytes);
    for p in &f.other_processes {
        row(out, &format!("process {}", p.pid), p.bytes);
    }
    for (k, v) in &f.extra {
        row(
            out,
            &k.trim_end_matches("_bytes").replace('_', " "),
            Some(*v),
        );
    }
    let mut implied = String::new();
    if let (Some(o), Some(t), Some(fr), Some(p)) = (
        f.outside_process_bytes(),
        f.total_capacity_bytes,
        f.free_bytes,
        f.process_in_use_bytes,
    ) {
        let _ = writeln!(
            implied,
            "  held outside this process          {:>12}   = {} − {} free − {} this process\n  \
             {:>48}(other processes, the display, the driver)",
            human(o),
            human(t),
            human(fr),
            human(p),
            ""
        );
    }
    if let Some(nf) = f.non_framework_in_process_bytes() {
        let _ = writeln!(
            implied,
            "  non-PyTorch memory in this process {:>12}   (CUDA context, library workspaces; ±10 MiB of rounding)",
            human(nf)
        );
    }
    if !implied.is_empty() {
        out.push_str("Implied by those figures\n");
        out.push_str(&implied);
    }
    out.push('\n');
}

/// The simulated tensor that asked, or without a config the shapes a GPT would have.
fn culprit(out: &mut String, d: &Diagnosis) {
    if let Some(c) = &d.culprit {
        let _ = writeln!(
            out,
            "Culprit\n  {} {} = {}",
            c.name,
            shape_text(&c.shape, &c.dtype),
            human(c.bytes)
        );
        if let Some(before) = c.simulated_allocated_before_bytes {
            let logged = d
                .facts
                .allocated_by_framework_bytes
                .map_or(String::new(), |a| format!(" (the log: {})", human(a)));
            let _ = writeln!(
                out,
                "  the simulated run had {} allocated when it asked for it{logged}",
                human(before)
            );
        }
        out.push('\n');
    } else if !d.hypotheses.is_empty() {
        out.push_str(
            "Culprit: no config given — shapes a GPT would have at this size (hypotheses)\n",
        );
        for h in &d.hypotheses {
            let _ = writeln!(
                out,
                "  ? {}",
                h.why.trim_start_matches("hypothesis (no config): ")
            );
        }
        out.push('\n');
    }
}

fn causes(out: &mut String, d: &Diagnosis) {
    if d.causes.is_empty() {
        return;
    }
    out.push_str("Causes (most likely first)\n");
    for (i, c) in d.causes.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}: {}", i + 1, c.kind.as_str(), c.evidence);
    }
    out.push('\n');
}

/// Each fix with its predicted peak, the command and the code changes it needs.
fn fixes(out: &mut String, d: &Diagnosis) {
    if d.fixes.is_empty() {
        return;
    }
    out.push_str("Fixes\n");
    for x in &d.fixes {
        let _ = write!(out, "  - {}", x.change);
        if let Some(p) = x.predicted_peak_bytes {
            let verdict = match x.fits {
                Some(true) => "fits",
                Some(false) => "does not fit",
                None => "unverified",
            };
            let _ = write!(out, " (predicted peak {}: {verdict})", human(p));
        }
        out.push('\n');
        if let Some(cmd) = &x.command {
            let _ = writeln!(out, "      {cmd}");
        }
        for change in &x.code_changes {
            let _ = writeln!(out, "      and in {change}");
        }
    }
    out.push('\n');
}

/// Other ranks' failures in the same log, then notes.
fn others(out: &mut String, d: &Diagnosis) {
    for r in &d.other_reports {
        let dev = r.device.as_deref().unwrap_or("?");
        let t = r
            .facts
            .tried_to_allocate_bytes
            .map_or_else(|| "?".into(), human);
        let _ = writeln!(
            out,
            "Also: GPU {dev} failed to allocate {t} ({})",
            r.format.as_str()
        );
    }
    for n in &d.notes {
        let _ = writeln!(out, "Note: {n}");
    }
}
