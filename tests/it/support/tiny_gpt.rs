//! Shared by the multi-GPU tests: the tiny GPT-2 they count by hand, and readers of a Timeline.
//!
//! The tiny model (bias=False, n_layer 2, n_embd 128, vocab 1000, block_size 256) has, in
//! nanoGPT's module order and optimizer groups:
//!   decay (2-D): wte 1000·128 = 128000, wpe 256·128 = 32768, per layer c_attn 384·128 = 49152,
//!                attn.c_proj 128·128 = 16384, c_fc 512·128 = 65536, mlp.c_proj 128·512 = 65536
//!                → 128000 + 32768 + 2·196608 = 553984
//!   no decay:    ln_1, ln_2 per layer and ln_f, 128 each → 5·128 = 640
//!   Ψ = 554624 parameters.
#![allow(dead_code)] // each test binary uses its own subset

use vramplan::config::{apply_overrides, TrainConfig};
use vramplan::sim::timeline::EventKind;
use vramplan::sim::{Category, Phase, Timeline};

pub const DECAY: u64 = 553_984;
pub const NO_DECAY: u64 = 640;
pub const PSI: u64 = DECAY + NO_DECAY;

/// The tiny GPT-2 with 8 gradient accumulation steps and `overrides`.
pub fn cfg(overrides: &[&str]) -> TrainConfig {
    tiny(8, overrides)
}

/// The tiny GPT-2 (batch 4) with `gradient_accumulation_steps` and `overrides`.
pub fn tiny(gradient_accumulation_steps: u64, overrides: &[&str]) -> TrainConfig {
    let mut c = TrainConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 128,
        block_size: 256,
        vocab_size: 1000,
        batch_size: 4,
        gradient_accumulation_steps,
        compile: false,
        ..TrainConfig::default()
    };
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    apply_overrides(&mut c, &o).unwrap();
    c
}

/// Ids of the tensors named `module.what`, in creation order.
pub fn named(tl: &Timeline, module: &str, what: &str) -> Vec<usize> {
    (0..tl.tensors.len())
        .filter(|&i| tl.tensors[i].name.module == module && tl.tensors[i].name.what == what)
        .collect()
}

pub fn bytes(tl: &Timeline, ids: &[usize]) -> Vec<u64> {
    ids.iter().map(|&i| tl.tensors[i].bytes).collect()
}

/// The phase in which a tensor was freed, or None if it lives to the end.
pub fn freed_in(tl: &Timeline, t: usize) -> Option<Phase> {
    tl.events
        .iter()
        .rev()
        .find(|e| e.tensor as usize == t && e.kind == EventKind::Free)
        .map(|e| e.phase)
}

/// Live bytes of `cats` right before the first event of `phase`.
pub fn live_before(tl: &Timeline, phase: Phase, cats: &[Category]) -> u64 {
    let mut live = 0u64;
    for e in &tl.events {
        if e.phase == phase {
            break;
        }
        let r = &tl.tensors[e.tensor as usize];
        if cats.contains(&r.category) {
            match e.kind {
                EventKind::Alloc => live += r.bytes,
                EventKind::Free => live -= r.bytes,
            }
        }
    }
    live
}

pub fn forward_passes(tl: &Timeline) -> usize {
    named(tl, "lm_head", "logits")
        .into_iter()
        .filter(|&i| tl.tensors[i].phase == Phase::Forward)
        .count()
}

/// Largest live bytes of `cats` over the events of `phase`.
pub fn peak_in(tl: &Timeline, phase: Phase, cats: &[Category]) -> u64 {
    let (mut live, mut peak) = (0u64, 0u64);
    for e in &tl.events {
        let r = &tl.tensors[e.tensor as usize];
        if !cats.contains(&r.category) {
            continue;
        }
        match e.kind {
            EventKind::Alloc => live += r.bytes,
            EventKind::Free => live -= r.bytes,
        }
        if e.phase == phase {
            peak = peak.max(live);
        }
    }
    peak
}
