//! Event by event against the reference traces: the same allocations and frees, in the same
//! order, with the same block-accounted allocated bytes at every phase peak. The traces omit
//! rows for flash-attention backward's scratch and for buffers freed by autograd's in-place
//! accumulation (their columns count them), so the comparison is on the rows both have and on
//! the columns' peaks.

use std::collections::HashMap;
use vramplan::calibration::reference_runtime;
use vramplan::config::{Precision, TrainConfig};
use vramplan::run::simulate;
use vramplan::sim::timeline::EventKind;
use vramplan::sim::{replay, Phase};

struct Row {
    phase: String,
    op: String,
    alloc: bool,
    bytes: u64,
    allocated_after: u64,
}

fn read(name: &str) -> Vec<Row> {
    let path = format!("{}/fixtures/reference/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Row {
                phase: f[1].to_string(),
                op: f[3].to_string(),
                alloc: f[2] == "alloc",
                bytes: f[6].parse().unwrap(),
                allocated_after: f[8].parse().unwrap(),
            }
        })
        .collect()
}

fn phase_of(trace_phase: &str) -> Phase {
    match trace_phase {
        "init" => Phase::Init,
        "eval" => Phase::Eval,
        "eval2" => Phase::EvalAfterStep,
        p if p.ends_with("fwd") => Phase::Forward,
        p if p.ends_with("bwd") => Phase::Backward,
        _ => Phase::Optimizer,
    }
}

fn tiny(dtype: Precision, flash: bool, dropout: f64, bias: bool, ga: u64) -> TrainConfig {
    TrainConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 64,
        block_size: 32,
        vocab_size: 96,
        batch_size: 3,
        dtype,
        flash,
        dropout,
        bias,
        gradient_accumulation_steps: ga,
        compile: false,
        ..TrainConfig::default()
    }
}

fn compare(name: &str, cfg: &TrainConfig) {
    let rows = read(name);
    let tl = simulate(cfg, reference_runtime(cfg, 9)).unwrap();
    // Phase peaks of the block-accounted column.
    let mut want: HashMap<Phase, u64> = HashMap::new();
    for r in &rows {
        // The first batch is counted with eval here (the init figure is the model alone).
        let ph = match phase_of(&r.phase) {
            Phase::Init if r.op.starts_with("empty.memory_format") => Phase::Eval,
            p => p,
        };
        let p = want.entry(ph).or_default();
        *p = (*p).max(r.allocated_after);
    }
    let prof = replay(&tl, false);
    // Training runs nanoGPT's six phases, never inference's.
    for ph in [Phase::Prefill, Phase::Decode] {
        assert!(!prof.phase(ph).seen, "{name}: {} ran", ph.key());
    }
    for ph in Phase::ALL
        .into_iter()
        .filter(|p| !matches!(p, Phase::Prefill | Phase::Decode))
    {
        assert_eq!(
            prof.phase(ph).peak_allocated,
            want[&ph],
            "{name}: {} peak",
            ph.key()
        );
    }
    // The listed rows, in order, up to the end of the second step.
    let listed: Vec<(bool, u64)> = rows
        .iter()
        .filter(|r| r.bytes > 0 && r.phase != "eval2")
        .map(|r| (r.alloc, r.bytes))
        .collect();
    let mine: Vec<(bool, u64)> = tl
        .events
        .iter()
        .filter(|e| e.phase != Phase::EvalAfterStep)
        .filter(|e| {
            let t = &tl.tensors[e.tensor as usize];
            t.bytes > 0 && t.name.what != "softmax_d" && t.name.what != "dq_accum"
        })
        .map(|e| {
            (
                e.kind == EventKind::Alloc,
                tl.tensors[e.tensor as usize].bytes,
            )
        })
        .collect();
    // Rows the trace omits (frees of in-place accumulation buffers) only ever make ours longer.
    let mut j = 0;
    let mut skipped = 0;
    for (i, want) in listed.iter().enumerate() {
        while j < mine.len() && mine[j] != *want {
            assert!(
                !mine[j].0,
                "{name}: row {i}: extra allocation of {} bytes",
                mine[j].1
            );
            skipped += 1;
            j += 1;
        }
        assert!(j < mine.len(), "{name}: row {i} ({want:?}) never happens");
        j += 1;
    }
    assert!(skipped <= 8, "{name}: {skipped} frees not in the trace");
}

#[test]
fn tiny_bf16_flash_dropout_accumulation() {
    compare(
        "tiny-bf16-flash-dropout-accum2.csv",
        &tiny(Precision::BFloat16, true, 0.1, true, 2),
    );
}

#[test]
fn tiny_fp32_manual_attention() {
    compare(
        "tiny-fp32-manual-attention.csv",
        &tiny(Precision::Float32, false, 0.0, false, 1),
    );
}
