//! What the hand-count tests of the Hugging Face models share: a preset with overrides, bytes
//! of the tensors that match, and what one training forward leaves alive.
#![allow(dead_code)] // each test binary uses its own subset

use super::sim::{alive, eager, run};
use vramplan::config::{load_with_model, ModelSource, TrainConfig};
use vramplan::model::Model;
use vramplan::sim::dtype::DType;
use vramplan::sim::engine::Engine;
use vramplan::sim::timeline::{Category, Name, Shape, TensorRecord};
use vramplan::sim::Timeline;

/// The small Llama the LoRA and QLoRA hand counts use (on top of llama-3.2-1b): batch 2,
/// 32 tokens, vocabulary 100, width 64, 4 query and 2 key/value heads, MLP width 160.
pub const SMALL_LLAMA: &[&str] = &[
    "--batch_size=2",
    "--block_size=32",
    "--vocab_size=100",
    "--n_embd=64",
    "--n_head=4",
    "--n_kv_head=2",
    "--intermediate_size=160",
];

/// A built-in model preset with `--key=value` overrides on top.
pub fn preset(model: &str, overrides: &[&str]) -> TrainConfig {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load_with_model(None, Some(ModelSource::Preset(model)), &o)
        .unwrap_or_else(|e| panic!("{model}: {e}"))
        .config
}

/// Bytes of the tensors of a Timeline that `f` picks.
pub fn bytes(tl: &Timeline, f: impl Fn(&TensorRecord) -> bool) -> u64 {
    tl.tensors.iter().filter(|t| f(t)).map(|t| t.bytes).sum()
}

/// Live bytes after one training forward under bf16 autocast (the region left, the loss
/// kept), without cuBLAS workspaces: (weight casts, everything else but the parameters).
pub fn after_forward(c: &TrainConfig) -> (u64, u64) {
    let mut e = Engine::new(eager(Some(DType::BF16)));
    let model = Model::build(&mut e, c);
    let s = Shape::new(&[c.batch_size, c.block_size]);
    let x = e.alloc(Name::top("batch", "X"), s, DType::I64, Category::Other);
    let y = e.alloc(Name::top("batch", "Y"), s, DType::I64, Category::Other);
    e.grad_mode = true;
    e.training = true;
    e.enter_autocast(Some(DType::BF16));
    let _ = model.forward(&mut e, x, y);
    e.exit_autocast();
    let alive = alive(&e);
    let sum = |f: &dyn Fn(Category) -> bool| -> u64 {
        e.tl.tensors
            .iter()
            .zip(&alive)
            .filter(|(t, a)| **a && f(t.category))
            .map(|(t, _)| t.bytes)
            .sum()
    };
    (
        sum(&|c| c == Category::AutocastCopies),
        sum(&|c| !matches!(c, Category::Parameters | Category::AutocastCopies)),
    )
}

/// After the run of `model` with `base` and each of `knobs`, only what the run still holds
/// is alive: the model states, persistent buffers, what train.py still references, and what
/// the engines keep for the next step as parallel_ddp.rs expects for every model (FSDP's
/// gathered root unit, ZeRO's buckets).
pub fn nothing_left(model: &str, base: &[&str], knobs: &[&[&str]]) {
    for k in knobs {
        let mut o: Vec<&str> = base.to_vec();
        o.extend_from_slice(k);
        let tl = run(&preset(model, &o));
        for t in tl.live_after(tl.events.len() - 1) {
            let r = &tl.tensors[t as usize];
            let expected = matches!(
                r.category,
                Category::Parameters | Category::Optimizer | Category::Workspace
            ) || matches!(
                (r.name.module, r.name.what),
                ("batch" | "rotary_emb", _)
                    | ("fsdp", "gathered_params")
                    | (
                        "zero",
                        "ipg_bucket_flat_buffer" | "grad_partitions_flat_buffer"
                    )
                    | ("loss", "scaled")
                    | ("lm_head", "logits")
            );
            assert!(
                expected,
                "{model} {k:?}: {} {} still alive",
                r.name, r.shape
            );
        }
    }
}

/// `check --json` reports `want` parameters for the model given each way in `sources` (a
/// preset, its Hub name, its config.json): one count, however the model is named.
pub fn assert_n_params_from_each(sources: &[&[&str]], want: u64) {
    for args in sources {
        let (code, v) = super::cli::json(
            &[
                &["check", "--json", "--batch_size=1", "--block_size=64"],
                *args,
            ]
            .concat(),
        );
        assert_eq!(code, 0, "{args:?}");
        assert_eq!(v["n_params"].as_u64(), Some(want), "{args:?}");
    }
}
