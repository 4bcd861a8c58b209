//! LoRA counted by hand: frozen bf16 base weights without gradients or optimizer state, fp32
//! adapters with both, and what a layer keeps for backward once its frozen matmuls keep no
//! inputs.

use crate::support::hf::{after_forward, bytes, preset, SMALL_LLAMA};
use vramplan::config::{load_with_model, ModelSource, TrainConfig};
use vramplan::model::{base_params, lora_params};
use vramplan::run::simulate;
use vramplan::sim::runtime::Runtime;
use vramplan::sim::timeline::Category;

const B: u64 = 2;
const T: u64 = 32;
const C: u64 = 64;
const NH: u64 = 4;
const NKV: u64 = 2;
const HD: u64 = 16;
const I: u64 = 160;
const R: u64 = 8;

fn cfg(extra: &[&str]) -> TrainConfig {
    let o = [SMALL_LLAMA, &["--lora_rank=8", "--compile=False"], extra].concat();
    preset("llama-3.2-1b", &o)
}

#[test]
fn base_frozen_in_bf16_adapters_fp32_with_grads_and_adamw_state() {
    let c = cfg(&["--n_layer=2"]);
    // q_proj (64 -> 64) and v_proj (64 -> 32): r x (in + out) each, per layer.
    let adapters = 2 * (R * (C + NH * HD) + R * (C + NKV * HD));
    assert_eq!(lora_params(&c), adapters);
    let base = base_params(&c);
    let tl = simulate(&c, Runtime::pytorch(&c, None)).unwrap();
    let params = |lora: bool| {
        bytes(&tl, |t| {
            t.category == Category::Parameters && t.name.what.starts_with("lora_") == lora
        })
    };
    assert_eq!(params(false), 2 * base, "bf16 base weights");
    assert_eq!(params(true), 4 * adapters, "fp32 adapters");
    // Gradients: only the adapters' (every 2-D gradient has the rank in its shape).
    let grads: Vec<_> = tl
        .tensors
        .iter()
        .filter(|t| t.category == Category::Gradients && t.shape.dims().len() == 2)
        .filter(|t| !t.shape.dims().contains(&R))
        .map(|t| format!("{} {}", t.name, t.shape))
        .collect();
    assert!(grads.is_empty(), "base weights got gradients: {grads:?}");
    // AdamW: step (fp32 scalar) + exp_avg + exp_avg_sq per adapter, created once.
    let n_adapters = 2 * 2 * 2;
    let adamw = n_adapters * 4 + 2 * 4 * adapters;
    assert_eq!(bytes(&tl, |t| t.category == Category::Optimizer), adamw);
    // With checkpointed layers every adapter still gets its gradient: the frozen embedding's
    // output is made to require grad (enable_input_require_grads), so layer 0 recomputes.
    let c = cfg(&["--n_layer=2", "--activation_checkpointing=True"]);
    let tl = simulate(&c, Runtime::pytorch(&c, None)).unwrap();
    assert_eq!(bytes(&tl, |t| t.category == Category::Optimizer), adamw);
}

#[test]
fn a_lora_layer_keeps_what_the_frozen_matmuls_do_not_need() {
    // Layer 0's input comes from a frozen embedding and needs no gradient; layers after the
    // first LoRA are the steady state: compare 3 layers with 2.
    let (w2, a2) = after_forward(&cfg(&["--n_layer=2"]));
    let (w3, a3) = after_forward(&cfg(&["--n_layer=3"]));
    let (w, a) = (w3 - w2, a3 - a2);
    // bf16 casts of the fp32 adapters (the base is bf16 already: no copies).
    assert_eq!(w, 2 * (R * C + NH * HD * R) + 2 * (R * C + NKV * HD * R));
    let btc = B * T * C;
    // Each RMSNorm of the bf16 stream: its fp32 copy and rstd (the frozen weight's multiply
    // keeps nothing more).
    let norms = 2 * (4 * btc + 4 * B * T);
    // q_proj and v_proj adapters: lora_A's bf16 input (cast back from PEFT's fp32 copy) and
    // lora_A's output (lora_B's input).
    let adapters = 2 * (2 * btc + 2 * B * T * R);
    // SDPA on bf16 rotary outputs (no casts): q, k, v, output, logsumexp, rng.
    let sdpa = 2 * B * NH * T * HD
        + 2 * B * NKV * T * HD
        + 2 * B * T * NKV * HD
        + 2 * B * T * NH * HD
        + 4 * B * NH * T
        + 24;
    // gate (SiLU's input), act and up (the product's); down_proj is frozen: its input is
    // not kept, and neither are the frozen projections' inputs.
    let mlp = 3 * 2 * B * T * I;
    assert_eq!(a, norms + adapters + sdpa + mlp);
}

#[test]
fn lora_keys_are_checked() {
    let o = |extra: &[&str]| -> Vec<String> {
        ["--lora_rank=8"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let load = |model: &str, extra: &[&str]| {
        load_with_model(None, Some(ModelSource::Preset(model)), &o(extra)).map(|l| l.config)
    };
    let e = load("gpt2", &[]).unwrap_err().to_string();
    assert!(e.contains("nanoGPT's GPT has no LoRA"), "{e}");
    let e = load("llama-3.2-1b", &["--lora_targets=q_proj,c_attn"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"),
        "{e}"
    );
    let all = load("llama-3.2-1b", &["--lora_targets=all-linear"]).unwrap();
    assert_eq!(all.lora_target_list().len(), 7);
    let neox = load("pythia-1b", &["--lora_targets=query_key_value"]).unwrap();
    // 16 layers x 8 x (2048 + 6144).
    assert_eq!(lora_params(&neox), 16 * 8 * (2048 + 6144));
}

#[test]
fn llama_8b_lora_r16_fits_80gb_where_full_fine_tuning_does_not() {
    let c = load_with_model(
        None,
        Some(ModelSource::Preset("llama-3.1-8b")),
        &[
            "--lora_rank=16".to_string(),
            "--batch_size=1".to_string(),
            "--block_size=512".to_string(),
            "--compile=False".to_string(),
        ],
    )
    .unwrap()
    .config;
    let gpu = vramplan::budget::find("a100-80gb").unwrap();
    let sim = vramplan::run::run(&c, Some(&gpu)).unwrap();
    let device = sim.profile.peak_reserved + gpu.context_bytes;
    assert!(device < 60 << 30, "peak {device}");
    // The frozen base alone is 2 bytes per parameter.
    assert!(sim.profile.peak_allocated > 2 * 8_030_261_248);
}
