//! Each op's saved tensors on its own, with bytes counted by hand: what stays alive after the
//! forward's Python references are gone is exactly what the backward needs.

use crate::support::sim::{activation, engine, live_bytes};
use vramplan::sim::dtype::DType;
use vramplan::sim::ops::{self, AttnKind};
use vramplan::sim::timeline::{Category, Name, Shape};

const B: u64 = 4;
const T: u64 = 16;
const C: u64 = 32;

#[test]
fn layer_norm_saves_input_mean_rstd() {
    let mut e = engine(None);
    let x = activation(&mut e, &[B, T, C], DType::F32);
    let w = e.add_param(Name::top("ln", "weight"), &[C], false);
    let y = ops::layer_norm(&mut e, x, w, None, Name::top("ln", "out"));
    e.drop_value(x);
    e.drop_value(y);
    // x (fp32) + mean + rstd (B, T, 1) fp32.
    assert_eq!(live_bytes(&e), B * T * C * 4 + 2 * B * T * 4);
}

#[test]
fn layer_norm_without_grad_keeps_nothing() {
    let mut e = engine(None);
    e.grad_mode = false;
    let x = activation(&mut e, &[B, T, C], DType::F32);
    let w = e.add_param(Name::top("ln", "weight"), &[C], false);
    let y = ops::layer_norm(&mut e, x, w, None, Name::top("ln", "out"));
    e.drop_value(x);
    assert_eq!(live_bytes(&e), B * T * C * 4, "only the output");
    e.drop_value(y);
    assert_eq!(live_bytes(&e), 0);
}

#[test]
fn linear_under_autocast_saves_bf16_input_and_cached_weight() {
    let mut e = engine(Some(DType::BF16));
    let x = activation(&mut e, &[B, T, C], DType::F32);
    let w = e.add_param(Name::top("fc", "weight"), &[4 * C, C], true);
    let b = e.add_param(Name::top("fc", "bias"), &[4 * C], false);
    let y = ops::linear(&mut e, x, w, Some(b), None, "fc");
    assert_eq!(e.tl.tensors[y.t as usize].shape.dims(), &[B, T, 4 * C]);
    assert_eq!(e.dtype(y.t), DType::BF16);
    e.drop_value(x);
    e.drop_value(y);
    // The fp32 input itself is not kept. Saved: its bf16 cast and the bf16 weight cast; the
    // cache also holds the weight and bias casts.
    assert_eq!(live_bytes(&e), B * T * C * 2 + 4 * C * C * 2 + 4 * C * 2);
    e.exit_autocast();
    // Leaving the region frees the bias cast (addmm does not save the bias).
    assert_eq!(live_bytes(&e), B * T * C * 2 + 4 * C * C * 2);
}

#[test]
fn linear_backward_casts_weight_grad_to_fp32() {
    let mut e = engine(Some(DType::BF16));
    let x = activation(&mut e, &[B, T, C], DType::F32);
    let w = e.add_param(Name::top("fc", "weight"), &[4 * C, C], true);
    let y = ops::linear(&mut e, x, w, None, None, "fc");
    e.drop_value(x);
    e.exit_autocast();
    let loss = ops::div_scalar(&mut e, y);
    e.drop_value(y);
    e.backward(loss);
    let g = e.params[w].grad.expect("weight gets a gradient");
    assert_eq!(e.tl.tensors[g as usize].dtype, DType::F32);
    assert_eq!(e.tl.tensors[g as usize].bytes, 4 * C * C * 4);
}

#[test]
fn cross_entropy_keeps_bf16_log_probs_and_their_fp32_copy() {
    let v = 100;
    let mut e = engine(Some(DType::BF16));
    let logits = activation(&mut e, &[B, T, v], DType::BF16);
    let y = e.alloc(
        Name::top("Y", ""),
        Shape::new(&[B, T]),
        DType::I64,
        Category::Other,
    );
    let loss = ops::cross_entropy(&mut e, logits, y);
    e.drop_value(logits);
    e.release(y);
    e.drop_value(loss);
    // log-probs bf16 (saved by log_softmax) + fp32 copy and total_weight (saved by nll_loss)
    // + the targets (saved by nll_loss).
    assert_eq!(
        live_bytes(&e),
        B * T * v * 2 + B * T * v * 4 + 4 + B * T * 8
    );
}

#[test]
fn dropout_keeps_a_one_byte_mask() {
    let mut e = engine(None);
    let x = activation(&mut e, &[B, T, C], DType::F32);
    let y = ops::dropout(&mut e, x, 0.1, Name::top("drop", "out"));
    e.drop_value(x);
    e.drop_value(y);
    assert_eq!(live_bytes(&e), B * T * C);
}

#[test]
fn flash_attention_keeps_qkv_output_and_logsumexp() {
    let nh = 4;
    let hs = C / nh;
    let mut e = engine(Some(DType::BF16));
    let qkv = activation(&mut e, &[B * T, 3 * C], DType::BF16);
    let (y, att) = ops::attention(&mut e, qkv, AttnKind::Flash, B, T, nh, hs, 0.0, None);
    assert!(att.is_none());
    e.drop_value(qkv);
    e.drop_value(y);
    // qkv through the q, k, v views; out bf16; logsumexp fp32 (B, nh, T); rng 16 + 8 bytes.
    assert_eq!(
        live_bytes(&e),
        B * T * 3 * C * 2 + B * T * C * 2 + B * nh * T * 4 + 16 + 8
    );
}

#[test]
fn manual_attention_keeps_scores_sized_tensors() {
    let nh = 4;
    let hs = C / nh;
    let mut e = engine(None);
    let qkv = activation(&mut e, &[B * T, 3 * C], DType::F32);
    let (y, att) = ops::attention(&mut e, qkv, AttnKind::Manual, B, T, nh, hs, 0.0, None);
    e.drop_value(qkv);
    e.drop_value(y);
    e.release(att.unwrap());
    let s = B * nh * T * T * 4;
    let d = B * T * C * 4;
    // q and k copies, the bool mask, the softmax (shared by both saves), v's copy.
    assert_eq!(live_bytes(&e), 2 * d + T * T + s + d);
}
