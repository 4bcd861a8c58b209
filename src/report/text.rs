//! The check report for people: the verdict first, then the phases, the peak's three numbers,
//! the largest tensors and a bar per category.

use super::check::CheckReport;
use crate::sim::Category;
use crate::units::{human, human_signed};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, Table};
use std::fmt::Write;

/// How bytes are printed: `6.14 GiB`, or exact integers with --bytes.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub exact_bytes: bool,
    pub color: bool,
}

impl Style {
    fn b(&self, bytes: u64) -> String {
        if self.exact_bytes {
            bytes.to_string()
        } else {
            human(bytes)
        }
    }

    fn signed(&self, bytes: i64) -> String {
        if self.exact_bytes {
            bytes.to_string()
        } else {
            human_signed(bytes)
        }
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = crate::terminal::fitted_table(UTF8_BORDERS_ONLY);
    t.set_header(header.iter().map(Cell::new));
    t
}

fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

/// The one-line verdict.
pub fn verdict(r: &CheckReport, style: Style) -> String {
    if let (Some(g), Some(v), "vllm_startup") = (&r.gpu, &r.vllm, r.judged_by) {
        return vllm_verdict(&g.name, v, style);
    }
    match (&r.gpu, r.fits, r.headroom_bytes) {
        (Some(g), Some(true), Some(h)) => format!(
            "FITS on {} with {} headroom (peak {} on the device, {} usable)",
            g.name,
            style.signed(h),
            style.b(r.peak.device_bytes),
            style.b(g.usable_bytes)
        ),
        (Some(g), Some(false), Some(h)) => format!(
            "DOES NOT FIT on {}: short by {} — first overflow at phase `{}` (peak {} on the device, {} usable)",
            g.name,
            style.signed(-h),
            r.first_overflow_phase.unwrap_or(r.peak.phase),
            style.b(r.peak.device_bytes),
            style.b(g.usable_bytes)
        ),
        _ => format!(
            "No GPU given: peak {} on the device. Add --gpu NAME (see `vramplan gpus`) or --live for a verdict.",
            style.b(r.peak.device_bytes)
        ),
    }
}

/// Serving over several GPUs: whether vLLM starts on every rank, which is the verdict (the
/// phase table is one GPU holding the whole model, for comparison).
fn vllm_verdict(card: &str, v: &crate::plan::vllm::VllmBudget, style: Style) -> String {
    let gpus = v.world_size;
    match &v.error {
        None => format!(
            "FITS on {gpus} x {card}: vLLM starts on every rank with {} of KV cache ({} tokens) \
             on the binding rank; the phase table below is one GPU holding the whole model, for \
             comparison",
            style.b(v.kv_cache_bytes.max(0) as u64),
            crate::plan::vllm::thousands(v.max_tokens)
        ),
        Some(e) => format!(
            "DOES NOT FIT on {gpus} x {card}: vLLM would not start: {e}; the phase table below is \
             one GPU holding the whole model, for comparison"
        ),
    }
}

pub fn render(r: &CheckReport, style: Style) -> String {
    let mut out = String::new();
    run_lines(&mut out, r, style);
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", verdict(r, style));
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(out);
    phases_table(&mut out, r, style);
    tensors_table(&mut out, r, style);
    categories_table(&mut out, r, style);
    if let Some(v) = &r.vllm {
        vllm_section(&mut out, v);
    }
    out
}

/// The model, the run as simulated (whose semantics, the loss chain, checkpointing), the
/// ranks and the card.
fn run_lines(out: &mut String, r: &CheckReport, style: Style) {
    let c = &r.config;
    let (arch, kv) = match c.model_type {
        crate::config::ModelType::Gpt2 => ("GPT", String::new()),
        m => (
            m.as_str(),
            c.n_kv_head
                .filter(|&k| k != c.n_head)
                .map_or(String::new(), |k| format!(" ({k} key/value)")),
        ),
    };
    let _ = writeln!(
        out,
        "{arch}: {} layers, {} heads{kv}, n_embd {}, vocab {} — {:.1}M parameters",
        c.n_layer,
        c.n_head,
        c.n_embd,
        c.vocab_size,
        r.n_params as f64 / 1e6
    );
    if c.mode == crate::config::Mode::Inference {
        let _ = writeln!(
            out,
            "Inference: batch_size {} sequences x block_size {} tokens of KV cache ({}), prefill of {} tokens, logits of {}, {}, {} attention",
            c.batch_size,
            c.block_size,
            r.runtime.kv_cache_dtype.unwrap_or("?"),
            c.prompt_tokens(),
            if c.logits_all { "every position" } else { "the last position" },
            r.runtime.dtype,
            r.runtime.attention,
        );
    } else {
        let _ = writeln!(
        out,
        "Run ({} semantics): batch_size {} x block_size {} x gradient_accumulation_steps {}{} ({} tokens/step), {}, {} attention, {}{}",
        c.framework.display_name(),
        c.batch_size,
        c.block_size,
        c.accumulation_as_counted(),
        if c.framework.accumulation_per_rank() && c.world_size > 1 {
            " per rank"
        } else {
            ""
        },
        c.tokens_per_step().map_or("?".into(), |t| t.to_string()),
        crate::sim::amp::describe(c, r.runtime.dtype),
        r.runtime.attention,
        r.runtime.name,
        if c.eval_batch_size.is_some() {
            format!(", eval_batch_size {}", c.eval_batch())
        } else {
            String::new()
        }
    );
    }
    decision_lines(out, r);
    card_lines(out, r, style);
}

/// Whose semantics were simulated, and the choices a reader should know: the loss chain of
/// the transformers release and how checkpointing runs.
fn decision_lines(out: &mut String, r: &CheckReport) {
    let _ = writeln!(out, "Simulated: {}", r.runtime.semantics);
    if let (Some(chain), crate::config::Mode::Train) = (r.decisions.loss_chain, r.config.mode) {
        let _ = writeln!(out, "Loss: {}", chain.value.describe());
    }
    if let Some(r) = r.decisions.reentrant_checkpoint {
        let _ = writeln!(
            out,
            "Checkpointing: use_reentrant={} ({})",
            if r.value { "True" } else { "False" },
            r.source
        );
    }
}

/// Per-rank and host-memory lines, and the card the verdict is for.
fn card_lines(out: &mut String, r: &CheckReport, style: Style) {
    if let Some(k) = &r.ranks {
        let _ = writeln!(
            out,
            "Per rank (rank 0 of {}, {}): {} per rank per step; every figure below is one GPU's",
            k.world_size,
            k.parallelism,
            crate::units::count(k.micro_steps_per_rank, "micro-step")
        );
    }
    if r.host_bytes > 0 {
        let _ = writeln!(
            out,
            "Host memory: {} of CPU RAM{} for the offloaded state (not in the GPU figures)",
            style.b(r.host_bytes),
            if r.ranks.is_some() { " per rank" } else { "" }
        );
    }
    if let Some(g) = &r.gpu {
        let _ = writeln!(
            out,
            "GPU: {} — {} total, {} usable after {} ({})",
            g.name,
            style.b(g.total_bytes),
            style.b(g.usable_bytes),
            crate::budget::Budget::kept_free(g.margin_bytes, g.safety_pct, g.safety_bytes, &|b| {
                style.b(b)
            }),
            g.source.label()
        );
    }
}

/// Each phase's allocated, reserved and device peaks, the peak and the first overflow marked.
fn phases_table(out: &mut String, r: &CheckReport, style: Style) {
    let mut t = table(&["phase", "allocated", "reserved", "device", ""]);
    for ph in &r.phases {
        let mark = if r.first_overflow_phase == Some(ph.name) {
            "◀ first overflow"
        } else if r.peak.phase == ph.name {
            "◀ peak"
        } else {
            ""
        };
        t.add_row(vec![
            Cell::new(ph.name),
            right(style.b(ph.peak_allocated_bytes)),
            right(style.b(ph.peak_reserved_bytes)),
            right(style.b(ph.peak_device_bytes)),
            Cell::new(mark),
        ]);
    }
    let _ = writeln!(out, "{t}");
    let _ = writeln!(
        out,
        "allocated = torch.cuda.max_memory_allocated(); reserved = the caching allocator's segments\n\
         (max_memory_reserved, what OOM messages call reserved); device = reserved + {} of CUDA\n\
         context and kernels (what nvidia-smi shows, and what must fit in the card).",
        style.b(r.context_bytes)
    );
    let _ = writeln!(out);
}

/// The largest tensors alive at the peak.
fn tensors_table(out: &mut String, r: &CheckReport, style: Style) {
    let _ = writeln!(
        out,
        "Largest tensors alive at the peak (phase `{}`):",
        r.peak.phase
    );
    let mut t = table(&["tensor", "shape", "dtype", "bytes", "born in"]);
    for tr in &r.tensors {
        let shape: Vec<String> = tr.shape.iter().map(|d| d.to_string()).collect();
        t.add_row(vec![
            Cell::new(&tr.name),
            Cell::new(format!("({})", shape.join(", "))),
            Cell::new(tr.dtype),
            right(style.b(tr.bytes)),
            Cell::new(tr.phase),
        ]);
    }
    let _ = writeln!(out, "{t}");
    let _ = writeln!(out);
}

/// Memory at the peak by category, with bars.
fn categories_table(out: &mut String, r: &CheckReport, style: Style) {
    let _ = writeln!(out, "Memory at the peak by category:");
    let slack = r.peak.reserved_bytes.saturating_sub(r.peak.allocated_bytes);
    let mut rows: Vec<(&str, u64)> = Category::ALL
        .iter()
        .map(|&c| (c.label(), r.categories.get(c)))
        .filter(|(_, b)| *b > 0)
        .collect();
    rows.push(("allocator slack (reserved − allocated)", slack));
    rows.push(("CUDA context and kernels", r.context_bytes));
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let mut t = table(&["category", "bytes", ""]);
    // The bar takes what the label (38 cells at most), the bytes and the borders leave, so
    // the table fits the width instead of wrapping bars: 30 cells at 90 columns and more.
    let bar_cells = usize::from(crate::terminal::terminal_width())
        .saturating_sub(60)
        .clamp(8, 30);
    for (label, bytes) in rows {
        t.add_row(vec![
            Cell::new(label),
            right(style.b(bytes)),
            Cell::new(bar(bytes, max, bar_cells, style.color)),
        ]);
    }
    let _ = writeln!(out, "{t}");
}

/// What vLLM's start-up would find on this card, in the lines vLLM logs.
fn vllm_section(out: &mut String, v: &crate::plan::vllm::VllmBudget) {
    let _ = writeln!(out);
    for line in crate::plan::vllm::startup_lines(v) {
        let _ = writeln!(out, "{line}");
    }
}

/// A unicode bar `width` cells long at `max`.
pub fn bar(value: u64, max: u64, width: usize, color: bool) -> String {
    const PARTS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let eighths = ((value as f64 / max as f64) * (width * 8) as f64).round() as usize;
    let mut s: String = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTS[eighths % 8 - 1]);
    }
    if color && !s.is_empty() {
        format!("\x1b[36m{s}\x1b[0m")
    } else {
        s
    }
}
