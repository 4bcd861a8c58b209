//! One decoder layer of each Hugging Face architecture, counted by hand: the bytes a layer
//! keeps from its forward for the backward (the difference between a 2-layer and a 1-layer
//! model after `loss = model(X, Y)`), under bf16 autocast with fp32 master weights.

use crate::support::hf::{after_forward, preset};
use vramplan::config::TrainConfig;

const B: u64 = 2;
const T: u64 = 32;

fn cfg(model: &str, overrides: &[&str]) -> TrainConfig {
    let (b, t) = (format!("--batch_size={B}"), format!("--block_size={T}"));
    let mut o = vec![b.as_str(), t.as_str(), "--vocab_size=100"];
    o.extend_from_slice(overrides);
    preset(model, &o)
}

/// (weight casts, everything else) one layer adds.
fn per_layer(model: &str, overrides: &[&str]) -> (u64, u64) {
    let mut one = overrides.to_vec();
    one.push("--n_layer=1");
    let mut two = overrides.to_vec();
    two.push("--n_layer=2");
    let (w1, a1) = after_forward(&cfg(model, &one));
    let (w2, a2) = after_forward(&cfg(model, &two));
    (w2 - w1, a2 - a1)
}

#[test]
fn llama_layer_with_grouped_query_attention() {
    let (c, nh, nkv, hd, i) = (64u64, 4u64, 2u64, 16u64, 160u64);
    let o = [
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--intermediate_size=160",
    ];
    let (w, a) = per_layer("llama-3.2-1b", &o);
    let btc = B * T * c;
    // bf16 copies of q, k, v, o, gate, up, down (saved by their matmuls).
    assert_eq!(
        w,
        2 * (c * nh * hd + 2 * c * nkv * hd + nh * hd * c + 3 * c * i)
    );
    let norms = 2 * (4 * btc + 4 * B * T + 4 * btc); // input (the residual), rstd, normalized
    let attn = 3 * 2 * btc // q/k/v_proj's bf16 input casts
        + 2 * B * T * nkv * hd // v_proj's output (v, saved by SDPA)
        + 2 * B * nh * T * hd // SDPA's bf16 cast of the fp32 rotated q
        + 2 * B * nkv * T * hd // ... and of k (k/v heads only: GQA is native)
        + 2 * B * T * nh * hd // SDPA's output (o_proj's input)
        + 4 * B * nh * T // logsumexp
        + 16 + 8; // rng state
    let mlp = 2 * 2 * btc // gate/up_proj's input casts
        + 4 * 2 * B * T * i; // gate, act, up, product
    assert_eq!(a, norms + attn + mlp);
}

#[test]
fn qwen2_layer_biases_add_no_saved_activations() {
    let o = [
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--intermediate_size=160",
    ];
    let (w_q, a_q) = per_layer("qwen2.5-0.5b", &o);
    let (w_l, a_l) = per_layer("llama-3.2-1b", &o);
    // addmm keeps no bias: the bias casts go when the autocast region ends.
    assert_eq!((w_q, a_q), (w_l, a_l));
}

#[test]
fn eager_attention_layer_keeps_the_scores() {
    let (c, nh, nkv, hd) = (64u64, 4u64, 2u64, 16u64);
    let o = [
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--intermediate_size=160",
    ];
    let mut eager = o.to_vec();
    eager.push("--flash=False");
    let (_, sdpa) = per_layer("llama-3.2-1b", &o);
    let (_, ea) = per_layer("llama-3.2-1b", &eager);
    let full = B * nh * T * hd;
    let scores = B * nh * T * T;
    // SDPA keeps the casts of q and k, v_proj's output itself, logsumexp and the rng state;
    // eager keeps repeat_kv's copy of v instead of v_proj's output.
    let flash_only =
        2 * B * nh * T * hd + 2 * B * nkv * T * hd + 2 * B * T * nkv * hd + 4 * B * nh * T + 24;
    let eager_only = 2 * full // q cast
        + 2 * full // repeat_kv(k) cast
        + 4 * scores + 2 * scores // fp32 softmax and its bf16 cast
        + 2 * full; // repeat_kv(v)
                    // SDPA's output and eager's contiguous copy are both o_proj's (B, T, C) bf16 input.
    assert_eq!(ea + flash_only, sdpa + eager_only, "c = {c}");
}

#[test]
fn gemma_layer_norms_keep_fp32_normalized_and_one_plus_weight() {
    let o = [
        "--n_embd=64",
        "--n_head=4",
        "--n_kv_head=2",
        "--head_dim=16",
        "--intermediate_size=160",
    ];
    let (w_g, a_g) = per_layer("gemma-2b", &o);
    let (w_l, a_l) = per_layer("llama-3.2-1b", &o);
    assert_eq!(w_g, w_l);
    // Same saved tensors as Llama (GELU keeps its input as SiLU does), plus `1 + weight`
    // (C fp32) per norm.
    assert_eq!(a_g, a_l + 2 * 64 * 4);
}

#[test]
fn neox_parallel_layer() {
    let (c, nh, i) = (64u64, 4u64, 256u64);
    let o = ["--n_embd=64", "--n_head=4", "--intermediate_size=256"];
    let (w, a) = per_layer("pythia-1b", &o);
    let btc = B * T * c;
    assert_eq!(w, 2 * (3 * c * c + c * c + 2 * c * i));
    let a_want = 4 * btc // the layer input, kept by both LayerNorms
        + 2 * (4 * B * T + 4 * B * T) // their mean and rstd
        + 2 * btc // query_key_value's input cast
        + 2 * 3 * btc // its output (v is a view of it, kept by SDPA)
        + 2 * btc + 2 * btc // SDPA's casts of the fp32 rotated q and k
        + 2 * btc // SDPA's output
        + 4 * B * nh * T + 24 // logsumexp, rng
        + 2 * btc // dense_h_to_4h's input cast
        + 2 * 2 * B * T * i; // its output (GELU's input) and GELU's output
    assert_eq!(a, a_want);
}
