//! The memory knobs as mechanisms: what each one keeps and frees, counted by hand, and no
//! tensor outliving the run that the training loop does not still reference.

use crate::support::sim::run;
use crate::support::tiny_gpt::tiny;
use vramplan::config::TrainConfig;
use vramplan::sim::ops::CHUNK_ROWS;
use vramplan::sim::{Category, Timeline};

/// The tiny GPT-2 of tests/support with 2 gradient accumulation steps.
fn cfg(overrides: &[&str]) -> TrainConfig {
    tiny(2, overrides)
}

#[test]
fn nothing_outlives_the_run_but_what_train_py_still_holds() {
    let knobs: &[&[&str]] = &[
        &[],
        &["--dropout=0.1"],
        &["--activation_checkpointing=True"],
        &[
            "--activation_checkpointing=True",
            "--dropout=0.1",
            "--flash=False",
        ],
        &["--loss=chunked"],
        &["--loss=chunked", "--dtype=float32"],
        &["--optimizer=adamw8bit"],
        &["--optimizer=sgd", "--dtype=float32", "--flash=False"],
    ];
    for k in knobs {
        let c = cfg(k);
        let tl = run(&c);
        for t in tl.live_after(tl.events.len() - 1) {
            let r = &tl.tensors[t as usize];
            let expected = matches!(
                r.category,
                Category::Parameters | Category::Optimizer | Category::Workspace
            ) || r.name.module == "batch"
                || (r.name.module == "loss" && r.name.what == "scaled")
                || (r.name.module == "lm_head" && r.name.what == "logits");
            assert!(expected, "{k:?}: {} {} still alive", r.name, r.shape);
        }
    }
}

fn optimizer_bytes(tl: &Timeline) -> u64 {
    tl.tensors
        .iter()
        .filter(|t| t.category == Category::Optimizer)
        .map(|t| t.bytes)
        .sum()
}

#[test]
fn adamw8bit_state_is_two_bytes_per_parameter_plus_block_constants() {
    let c = cfg(&["--optimizer=adamw8bit"]);
    let tl = run(&c);
    // By hand: every parameter of >= 4096 elements gets two uint8 moments and one fp32
    // absmax per 256 elements for each; smaller ones keep two fp32 moments.
    let (v, cc, t) = (c.vocab_size, c.n_embd, c.block_size);
    // nanoGPT's default bias=False: wte, wpe, ln_f.weight; per block ln_1.weight, c_attn,
    // attn.c_proj, ln_2.weight, c_fc, mlp.c_proj.
    let mut sizes = vec![v * cc, t * cc, cc];
    for _ in 0..c.n_layer {
        sizes.extend([cc, 3 * cc * cc, cc * cc, cc, 4 * cc * cc, 4 * cc * cc]);
    }
    let want: u64 = sizes
        .iter()
        .map(|&n| {
            if n >= 4096 {
                2 * (n + 4 * n.div_ceil(256))
            } else {
                2 * 4 * n
            }
        })
        .sum();
    assert_eq!(optimizer_bytes(&tl), want);
    // Full AdamW: 8 bytes per parameter plus a 4-byte step per tensor.
    let full = run(&cfg(&[]));
    let n: u64 = sizes.iter().sum();
    assert_eq!(optimizer_bytes(&full), 8 * n + 4 * sizes.len() as u64);
}

/// The largest bytes of any tensor born in the loss chain.
fn largest_logits_tensor(tl: &Timeline) -> u64 {
    tl.tensors
        .iter()
        .filter(|t| t.category == Category::Logits)
        .map(|t| t.bytes)
        .max()
        .unwrap_or(0)
}

#[test]
fn chunked_loss_never_materialises_the_full_logits() {
    let c = cfg(&["--loss=chunked", "--batch_size=40"]);
    let rows = c.batch_size * c.block_size;
    assert!(rows > CHUNK_ROWS, "the test needs more than one chunk");
    let tl = run(&c);
    // One chunk's fp32 log-probs at most, never B·T·V.
    assert_eq!(largest_logits_tensor(&tl), CHUNK_ROWS * c.vocab_size * 4);
    let standard = run(&cfg(&["--batch_size=40"]));
    assert_eq!(largest_logits_tensor(&standard), rows * c.vocab_size * 4);
}

#[test]
fn checkpointing_keeps_only_block_inputs_through_the_forward() {
    // At the end of the first forward (before backward) the activations alive are, per block,
    // only its fp32 input (B, T, C) — plus what the last layer norm and the loss keep.
    let plain = cfg(&["--gradient_accumulation_steps=1"]);
    let ckpt = cfg(&[
        "--gradient_accumulation_steps=1",
        "--activation_checkpointing=True",
    ]);
    let live_at_backward_start = |c: &TrainConfig| {
        let tl = run(c);
        let first_bwd = tl
            .events
            .iter()
            .position(|e| e.phase == vramplan::sim::Phase::Backward)
            .unwrap();
        tl.live_after(first_bwd - 1)
            .into_iter()
            .map(|t| &tl.tensors[t as usize])
            .filter(|r| r.category == Category::Activations && r.name.layer.is_some())
            .map(|r| r.bytes)
            .sum::<u64>()
    };
    let (b, t, cc) = (plain.batch_size, plain.block_size, plain.n_embd);
    // Checkpointed: block 1 keeps its input (layer 0's output), ln_f keeps its input (layer
    // 1's output); block 0's input is the embedding sum, not a layer tensor. Nothing else of
    // the blocks: two (B, T, C) fp32 tensors.
    assert_eq!(live_at_backward_start(&ckpt), 2 * b * t * cc * 4);
    assert!(live_at_backward_start(&plain) > 10 * b * t * cc * 4);
}
