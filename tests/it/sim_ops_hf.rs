//! The Hugging Face decoders' ops on their own, with the bytes each keeps for backward
//! counted by hand (the style of sim_ops.rs): what stays alive once the forward's Python
//! references are gone is exactly what the backward needs.

use crate::support::sim::{activation, alive, engine, live_bytes};
use vramplan::sim::dtype::DType;
use vramplan::sim::engine::{Engine, V};
use vramplan::sim::ops::{self, Heads, RmsStyle, ScoresKind, SdpaKernel};
use vramplan::sim::timeline::{Category, Name, Shape};

const B: u64 = 2;
const T: u64 = 16;
const C: u64 = 64;

/// Drop the output, run the backward from it, and check nothing but gradients is left.
fn backward_leaves_only_grads(mut e: Engine, y: V) -> Engine {
    e.exit_autocast();
    let loss = ops::div_scalar(&mut e, y);
    e.drop_value(y);
    e.backward(loss);
    e.drop_value(loss);
    for (t, a) in e.tl.tensors.iter().zip(alive(&e)) {
        assert!(
            !a || matches!(t.category, Category::Parameters | Category::Gradients),
            "{} {} alive after backward",
            t.name,
            t.shape
        );
    }
    e
}

#[test]
fn rms_norm_fp32_keeps_input_rstd_and_normalized() {
    let mut e = engine(Some(DType::BF16));
    let x = activation(&mut e, &[B, T, C], DType::F32);
    let w = e.add_param(Name::top("norm", "weight"), &[C], false);
    let y = ops::rms_norm(&mut e, x, w, RmsStyle::Llama, Name::top("norm", "out"));
    assert_eq!(e.dtype(y.t), DType::F32, "fp32 weight * fp32 normalized");
    e.drop_value(x);
    let out = B * T * C * 4;
    // x (saved by pow and the multiply) + rstd (B, T, 1) + the fp32 normalized tensor
    // (saved by weight * it) + the output.
    assert_eq!(
        live_bytes(&e),
        B * T * C * 4 + B * T * 4 + B * T * C * 4 + out
    );
    let e = backward_leaves_only_grads(e, y);
    let g = e.params[w].grad.expect("the weight gets a gradient");
    assert_eq!(e.tl.tensors[g as usize].bytes, C * 4);
}

#[test]
fn rms_norm_of_bf16_input_keeps_its_fp32_copy_and_bf16_cast() {
    let mut e = engine(Some(DType::BF16));
    let x = activation(&mut e, &[B, T, C], DType::BF16);
    let w = e.add_param(Name::top("norm", "weight"), &[C], false);
    let y = ops::rms_norm(&mut e, x, w, RmsStyle::Llama, Name::top("norm", "out"));
    e.drop_value(x);
    e.drop_value(y);
    // x.to(float32) (the bf16 x itself is not kept) + rstd + hidden_states.to(bf16).
    assert_eq!(live_bytes(&e), B * T * C * 4 + B * T * 4 + B * T * C * 2);
}

#[test]
fn gemma_rms_norm_keeps_fp32_normalized_and_one_plus_weight() {
    let mut e = engine(Some(DType::BF16));
    let x = activation(&mut e, &[B, T, C], DType::F32);
    let w = e.add_param(Name::top("norm", "weight"), &[C], false);
    let y = ops::rms_norm(&mut e, x, w, RmsStyle::Gemma, Name::top("norm", "out"));
    e.drop_value(x);
    let out = B * T * C * 4;
    assert_eq!(
        live_bytes(&e),
        B * T * C * 4 + B * T * 4 + B * T * C * 4 + C * 4 + out
    );
    backward_leaves_only_grads(e, y);
}

#[test]
fn rms_norm_without_grad_keeps_nothing() {
    let mut e = engine(Some(DType::BF16));
    e.grad_mode = false;
    let x = activation(&mut e, &[B, T, C], DType::F32);
    let w = e.add_param(Name::top("norm", "weight"), &[C], false);
    let y = ops::rms_norm(&mut e, x, w, RmsStyle::Llama, Name::top("norm", "out"));
    e.drop_value(x);
    assert_eq!(live_bytes(&e), B * T * C * 4, "only the output");
    e.drop_value(y);
    assert_eq!(live_bytes(&e), 0);
}

#[test]
fn rope_keeps_only_the_shared_tables_and_promotes_to_fp32() {
    let (h, d) = (4, 16);
    let mut e = engine(Some(DType::BF16));
    let (cos, sin) = ops::rotary_tables(&mut e, T, d, DType::F32);
    let tables = 2 * T * d * 4;
    assert_eq!(live_bytes(&e), tables, "(1, T, head_dim) fp32 cos and sin");
    let q = activation(&mut e, &[B, h, T, d], DType::BF16);
    let y = ops::rope(
        &mut e,
        q,
        cos,
        sin,
        [B, h, T, d],
        d,
        Name::top("q", "embed"),
    );
    assert_eq!(e.dtype(y.t), DType::F32, "bf16 q * fp32 cos");
    e.drop_value(q);
    e.release(cos);
    e.release(sin);
    // The bf16 q is not kept: the multiplies keep cos and sin only.
    assert_eq!(live_bytes(&e), tables + B * h * T * d * 4);
    backward_leaves_only_grads(e, y);
}

#[test]
fn partial_rope_concatenates_the_pass_through_dims() {
    let (h, d, rot) = (4, 32, 8);
    let mut e = engine(Some(DType::BF16));
    let (cos, sin) = ops::rotary_tables(&mut e, T, rot, DType::F32);
    let q = activation(&mut e, &[B, h, T, d], DType::BF16);
    let y = ops::rope(
        &mut e,
        q,
        cos,
        sin,
        [B, h, T, d],
        rot,
        Name::top("q", "embed"),
    );
    assert_eq!(e.record(y.t).shape.dims(), &[B, h, T, d]);
    e.drop_value(q);
    e.release(cos);
    e.release(sin);
    assert_eq!(live_bytes(&e), 2 * T * rot * 4 + B * h * T * d * 4);
    backward_leaves_only_grads(e, y);
}

fn heads(nh: u64, nkv: u64, hd: u64) -> Heads {
    Heads {
        b: B,
        t: T,
        nh,
        nkv,
        hd,
        layer: None,
        module: "self_attn",
    }
}

#[test]
fn flash_gqa_keeps_bf16_casts_of_q_and_k_unexpanded_v_output_and_logsumexp() {
    let (nh, nkv, hd) = (8, 2, 16);
    let mut e = engine(Some(DType::BF16));
    let q = activation(&mut e, &[B, nh, T, hd], DType::F32);
    let k = activation(&mut e, &[B, nkv, T, hd], DType::F32);
    let v = activation(&mut e, &[B, nkv, T, hd], DType::BF16);
    let hs = heads(nh, nkv, hd);
    let y = ops::sdpa(&mut e, q, k, v, SdpaKernel::Flash, hs);
    for x in [q, k, v] {
        e.drop_value(x);
    }
    let qb = B * nh * T * hd;
    let kvb = B * nkv * T * hd;
    // q, k autocast casts (bf16), v as it is (bf16, k/v heads only), the output (bf16,
    // also the caller's), logsumexp fp32 (B, nh, T), rng state 16 + 8 bytes.
    assert_eq!(
        live_bytes(&e),
        qb * 2 + kvb * 2 + kvb * 2 + qb * 2 + B * nh * T * 4 + 24
    );
    let e = backward_leaves_only_grads(e, y);
    // The backward made dk and dv at the full head count before summing the groups.
    let expanded =
        e.tl.tensors
            .iter()
            .filter(|t| t.name.what == "k.grad_expanded" || t.name.what == "v.grad_expanded")
            .map(|t| t.bytes)
            .collect::<Vec<_>>();
    assert_eq!(expanded, vec![qb * 2, qb * 2]);
}

#[test]
fn eager_attention_keeps_scores_sized_softmax_and_its_cast() {
    let (nh, nkv, hd) = (4, 2, 16);
    let mut e = engine(Some(DType::BF16));
    let mask = e.alloc(
        Name::top("mask", ""),
        Shape::new(&[B, 1, T, T]),
        DType::F32,
        Category::Activations,
    );
    let q = activation(&mut e, &[B, nh, T, hd], DType::F32);
    let k = activation(&mut e, &[B, nkv, T, hd], DType::F32);
    let v = activation(&mut e, &[B, nkv, T, hd], DType::BF16);
    let y = ops::scores_attention(
        &mut e,
        q,
        k,
        v,
        Some(mask),
        ScoresKind::Eager,
        heads(nh, nkv, hd),
    );
    for x in [q, k, v] {
        e.drop_value(x);
    }
    e.release(mask);
    e.drop_value(y);
    let full = B * nh * T * hd;
    let scores = B * nh * T * T;
    // bf16 casts of q and of repeat_kv(k); fp32 softmax; its bf16 cast for the second
    // matmul; repeat_kv(v) in bf16.
    assert_eq!(
        live_bytes(&e),
        full * 2 + full * 2 + scores * 4 + scores * 2 + full * 2
    );
}

#[test]
fn swiglu_keeps_gate_activation_and_up() {
    let i = 3 * C;
    let mut e = engine(Some(DType::BF16));
    let gate = activation(&mut e, &[B, T, i], DType::BF16);
    let up = activation(&mut e, &[B, T, i], DType::BF16);
    let a = ops::silu(&mut e, gate, Name::top("mlp", "act"));
    e.drop_value(gate);
    let p = ops::mul(&mut e, a, up, Name::top("mlp", "prod"));
    e.drop_value(a);
    e.drop_value(up);
    let n = B * T * i * 2;
    // gate (SiLU's input), act and up (the product's), and the product itself.
    assert_eq!(live_bytes(&e), 3 * n + n);
    backward_leaves_only_grads(e, p);
}

#[test]
fn split3_gathers_the_chunks_gradients_into_one_copy() {
    let mut e = engine(None);
    let qkv = activation(&mut e, &[B, T, 3 * C], DType::F32);
    let [q, k, v] = ops::split3(&mut e, qkv, Name::top("qkv", ""));
    e.drop_value(qkv);
    // Views: no new memory.
    assert_eq!(live_bytes(&e), B * T * 3 * C * 4);
    let s1 = ops::add(&mut e, q, k, Name::top("s", "1"));
    let s2 = ops::add(&mut e, s1, v, Name::top("s", "2"));
    for x in [q, k, v, s1] {
        e.drop_value(x);
    }
    let e = backward_leaves_only_grads(e, s2);
    let cats =
        e.tl.tensors
            .iter()
            .filter(|t| t.name.module == "qkv" && t.name.what == "grad")
            .count();
    assert_eq!(cats, 2, "the cat and the reshape's copy");
}
