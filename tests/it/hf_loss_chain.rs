//! Issue #12 item 4: the Hugging Face loss chain as each transformers release runs it, and
//! which training loops hold the logits through the backward. The chain table is held to what
//! `scripts/hf-loss-chain/extract.py` read out of the released wheels
//! (fixtures/hf-loss-chain.json); the bytes are counted by hand from the source quoted in
//! src/model/hf_loss.rs.

use crate::support::cli::vramplan;
use crate::support::hf::preset;
use crate::support::sim::run;
use crate::support::tiny_gpt::peak_in;
use vramplan::config::transformers::TransformersVersion;
use vramplan::config::ModelType;
use vramplan::sim::timeline::{Category, Phase};

#[test]
fn each_release_runs_the_chain_its_source_has() {
    let text = std::fs::read_to_string("fixtures/hf-loss-chain.json").unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let chains = fixture["chains"].as_object().unwrap();
    assert!(chains.len() >= 20, "the fixture reads 4.36 to 5.25");
    let mut checked = 0;
    for (release, row) in chains {
        let v = TransformersVersion::parse(release).unwrap();
        for (model, chain) in row.as_object().unwrap() {
            // Classes the simulator does not build yet are in the fixture for later.
            let Some(m) = ModelType::ALL
                .into_iter()
                .find(|m| fixture_key(*m) == model)
            else {
                continue;
            };
            assert_eq!(
                v.loss_chain(m).as_str(),
                chain.as_str().unwrap(),
                "{model} in transformers {release}"
            );
            assert_eq!(v.refusal(m), None, "{model} exists in {release}");
            checked += 1;
        }
        // A class the release does not have is refused, not run with a neighbour's chain.
        for m in ModelType::ALL {
            if m != ModelType::Gpt2 && !row.as_object().unwrap().contains_key(fixture_key(m)) {
                assert!(v.refusal(m).is_some(), "{} in {release}", m.as_str());
            }
        }
    }
    assert!(checked > 150, "{checked} (release, class) pairs checked");
}

/// The fixture names a class by its modeling file (models/gemma3/modeling_gemma3.py holds
/// Gemma3ForCausalLM, the text model config.json calls `gemma3_text`).
fn fixture_key(m: ModelType) -> &'static str {
    match m {
        ModelType::Gemma3 => "gemma3",
        m => m.as_str(),
    }
}

/// A small Llama whose loss is the forward's peak: batch 2, 16 tokens, vocabulary 4096.
const B: u64 = 2;
const T: u64 = 16;
const V: u64 = 4096;

fn small_llama(extra: &[&str]) -> vramplan::config::TrainConfig {
    let mut o = vec![
        "--batch_size=2",
        "--block_size=16",
        "--vocab_size=4096",
        "--n_layer=1",
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--intermediate_size=160",
        "--dtype=bfloat16",
        "--compile=False",
        "--framework=hf-trainer",
    ];
    o.extend_from_slice(extra);
    preset("llama-3.2-1b", &o)
}

fn peak(phase: Phase, extra: &[&str]) -> u64 {
    peak_in(&run(&small_llama(extra)), phase, &Category::ALL)
}

#[test]
fn each_chain_adds_its_copies_of_the_logits_to_the_forward_peak() {
    let (btv, bsv) = (B * T * V, B * (T - 1) * V);
    // The loss's own tensors at its peak, counted from the source (scalars: nll, total_weight):
    // 4.49+: bf16 logits, the fp32 copy, padded labels (B, T+1), shift_labels (B, T), the fp32
    // log-probs.
    let pad = 2 * btv + 4 * btv + 8 * B * (T + 1) + 8 * B * T + 4 * btv + 8;
    // 4.46-4.48: bf16 logits, the fp32 copy, its shifted copy, shift_labels (B, T-1), log-probs
    // of the T-1 shifted positions.
    let in_loss = 2 * btv + 4 * btv + 4 * bsv + 8 * B * (T - 1) + 4 * bsv + 8;
    // Up to 4.45: the fp32 logits replace the bf16 ones (both alive during the cast), then the
    // shifted copy, shift_labels and the log-probs.
    let in_forward = (2 * btv + 4 * btv).max(4 * btv + 4 * bsv + 8 * B * (T - 1) + 4 * bsv + 8);
    let newest = peak(Phase::Forward, &[]);
    assert_eq!(
        peak(Phase::Forward, &["--transformers_version=4.49"]),
        newest
    );
    assert_eq!(
        peak(Phase::Forward, &["--transformers_version=4.47"]) - newest,
        in_loss - pad
    );
    assert_eq!(
        peak(Phase::Forward, &["--transformers_version=4.44"]) - newest,
        in_forward - pad
    );
}

#[test]
fn neox_before_4_49_copies_the_bf16_logits_without_upcasting() {
    let cfg = |v: &str| {
        preset(
            "pythia-1b",
            &[
                "--batch_size=2",
                "--block_size=16",
                "--vocab_size=4096",
                "--n_layer=1",
                "--n_embd=64",
                "--n_head=4",
                "--intermediate_size=160",
                "--dtype=bfloat16",
                "--compile=False",
                "--framework=hf-trainer",
                v,
            ],
        )
    };
    let fwd = |v: &str| peak_in(&run(&cfg(v)), Phase::Forward, &Category::ALL);
    let (btv, bsv) = (B * T * V, B * (T - 1) * V);
    let pad = 2 * btv + 4 * btv + 8 * B * (T + 1) + 8 * B * T + 4 * btv + 8;
    // GPTNeoXForCausalLM.forward to 4.48: bf16 logits, their shifted bf16 copy, shift labels,
    // then cross_entropy under autocast: bf16 log-probs and the fp32 copy nll_loss reads.
    let no_upcast = 2 * btv + 2 * bsv + 8 * B * (T - 1) + 2 * bsv + 4 * bsv + 8;
    assert_eq!(
        fwd("--transformers_version=4.48") + pad,
        fwd("--transformers_version=4.49") + no_upcast
    );
}

#[test]
fn a_trainer_lets_go_of_the_logits_before_the_backward_and_nanogpt_does_not() {
    let btv = B * T * V;
    let backward = |extra: &[&str]| peak(Phase::Backward, extra);
    // nanoGPT's `logits, loss = model(X, Y)` keeps the output's logits (bf16 from 4.46, fp32
    // up to 4.45) alive through the whole backward; Trainer.compute_loss returns the loss only.
    assert_eq!(backward(&["--framework=nanogpt"]) - backward(&[]), 2 * btv);
    assert_eq!(
        backward(&["--framework=nanogpt", "--transformers_version=4.44"])
            - backward(&["--transformers_version=4.44"]),
        4 * btv
    );
}

#[test]
fn the_release_is_read_as_written_and_refused_where_the_class_is_missing() {
    let (code, out, _) = vramplan(&[
        "check",
        "--model",
        "llama-3.2-1b",
        "--transformers_version=4.40",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("Loss: transformers up to 4.45"), "{out}");
    // A number keeps its trailing zero: 4.40 is not 4.4 (which would be refused).
    let (code, _, err) = vramplan(&[
        "check",
        "--model",
        "qwen3-0.6b",
        "--transformers_version=4.50",
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("4.51") && err.contains("Qwen3ForCausalLM"),
        "{err}"
    );
    let (code, _, err) = vramplan(&[
        "check",
        "--model",
        "llama-3.2-1b",
        "--transformers_version=4.3",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("4.36 or later"), "{err}");
}

#[test]
fn gemma_2_keeps_the_unscaled_embeddings_until_transformers_5_4() {
    // Gemma2Model.forward up to 5.3: `hidden_states = inputs_embeds * normalizer`, the unscaled
    // (B, T, C) lookup a local until the decoder's forward returns, after the last layer; from
    // 5.4 the scale is inside Gemma2TextScaledWordEmbedding and the lookup a temporary, gone
    // before the first layer runs. Where the first training forward frees the lookup:
    let freed_after_layer = |v: &str| -> Option<u32> {
        let tl = run(&preset(
            "gemma-2-2b",
            &[
                "--batch_size=2",
                "--block_size=16",
                "--vocab_size=64",
                "--n_layer=2",
                "--n_embd=64",
                "--n_head=4",
                "--n_kv_head=2",
                "--head_dim=16",
                "--intermediate_size=160",
                "--dtype=bfloat16",
                "--compile=False",
                "--framework=hf-trainer",
                v,
            ],
        ));
        let is_lookup = |t: u32| {
            let r = &tl.tensors[t as usize];
            r.name.module == "embed_tokens" && r.name.what == "out" && r.phase == Phase::Forward
        };
        let lookup = tl.events.iter().position(|e| is_lookup(e.tensor))?;
        let freed = lookup
            + tl.events[lookup + 1..]
                .iter()
                .position(|e| e.tensor == tl.events[lookup].tensor)?;
        // The deepest layer with an allocation before that free.
        tl.events[lookup..freed]
            .iter()
            .filter_map(|e| tl.tensors[e.tensor as usize].name.layer)
            .max()
    };
    assert_eq!(freed_after_layer("--transformers_version=5.3"), Some(1));
    assert_eq!(freed_after_layer("--transformers_version=5.4"), None);
    // An unknown release keeps the older, longer-lived form.
    assert_eq!(freed_after_layer("--transformers_version=None"), Some(1));
}
