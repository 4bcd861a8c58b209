//! QLoRA counted by hand: bitsandbytes' 4-bit storage (packed weights, absmax constants with
//! and without double quantization), int8 storage, the fp32 casts of
//! prepare_model_for_kbit_training, and the dequantized copy every quantized matmul makes in
//! the forward and again in the backward.

use crate::support::hf::{bytes, preset, SMALL_LLAMA};
use vramplan::config::{load_with_model, ModelSource, TrainConfig};
use vramplan::model::{base_params, lora_params};
use vramplan::run::simulate;
use vramplan::sim::runtime::Runtime;
use vramplan::sim::timeline::{Category, EventKind, Phase};
use vramplan::sim::Timeline;

const C: u64 = 64;
const NH: u64 = 4;
const NKV: u64 = 2;
const HD: u64 = 16;
const I: u64 = 160;
const V: u64 = 100;
const L: u64 = 2;

fn cfg(extra: &[&str]) -> TrainConfig {
    let o = [
        SMALL_LLAMA,
        &[
            "--n_layer=2",
            "--lora_rank=8",
            "--compile=False",
            "--gradient_accumulation_steps=1",
        ],
        extra,
    ]
    .concat();
    preset("llama-3.2-1b", &o)
}

/// The seven Linear layers of a Llama layer, (out, in).
fn linears() -> [(u64, u64); 7] {
    [
        (NH * HD, C),  // q_proj
        (NKV * HD, C), // k_proj
        (NKV * HD, C), // v_proj
        (C, NH * HD),  // o_proj
        (I, C),        // gate_proj
        (I, C),        // up_proj
        (C, I),        // down_proj
    ]
}

/// Everything that is not a quantized Linear: embed_tokens (tied with lm_head) and the norms,
/// cast to fp32 by prepare_model_for_kbit_training; the q_proj and v_proj adapters in fp32.
fn fp32_rest(c: &TrainConfig) -> u64 {
    let embed = V * C;
    let norms = L * 2 * C + C;
    assert_eq!(
        base_params(c),
        embed + norms + L * linears().iter().map(|(o, i)| o * i).sum::<u64>()
    );
    4 * (embed + norms) + 4 * lora_params(c)
}

#[test]
fn nf4_storage_is_half_a_byte_per_weight_plus_its_constants() {
    let c = cfg(&["--quantization=nf4"]);
    let tl = simulate(&c, Runtime::pytorch(&c, None)).unwrap();
    // Double quantization: packed n/2 bytes, a uint8 absmax per 64 weights, an fp32 absmax per
    // 256 of those, a 0-dim fp32 offset, the 16-entry fp32 NF4 code.
    let per = |(o, i): (u64, u64)| {
        let n = o * i;
        let blocks = n.div_ceil(64);
        n / 2 + blocks + 4 * blocks.div_ceil(256) + 4 + 16 * 4
    };
    let quant: u64 = L * linears().into_iter().map(per).sum::<u64>();
    assert_eq!(
        bytes(&tl, |t| t.category == Category::Parameters),
        quant + fp32_rest(&c)
    );
    // Without double quantization the absmax stays fp32: 4 bytes per 64 weights, no offset.
    let c = cfg(&["--quantization=nf4", "--double_quant=False"]);
    let tl = simulate(&c, Runtime::pytorch(&c, None)).unwrap();
    let per = |(o, i): (u64, u64)| o * i / 2 + 4 * (o * i).div_ceil(64) + 16 * 4;
    let quant: u64 = L * linears().into_iter().map(per).sum::<u64>();
    assert_eq!(
        bytes(&tl, |t| t.category == Category::Parameters),
        quant + fp32_rest(&c)
    );
}

#[test]
fn int8_storage_is_a_byte_per_weight_and_a_scale_per_row() {
    let c = cfg(&["--quantization=int8"]);
    let tl = simulate(&c, Runtime::pytorch(&c, None)).unwrap();
    let quant: u64 = L * linears().iter().map(|(o, i)| o * i + 4 * o).sum::<u64>();
    assert_eq!(
        bytes(&tl, |t| t.category == Category::Parameters),
        quant + fp32_rest(&c)
    );
}

/// The dequantized weights born in each phase, and the most alive at once.
fn dequantized(tl: &Timeline) -> (Vec<(Phase, u64)>, usize) {
    let mut per_phase: Vec<(Phase, u64)> = Vec::new();
    let (mut alive, mut most) = (0usize, 0usize);
    for ev in &tl.events {
        let t = &tl.tensors[ev.tensor as usize];
        if t.name.what != "weight_dequant" {
            continue;
        }
        match ev.kind {
            EventKind::Alloc => {
                alive += 1;
                most = most.max(alive);
                match per_phase.iter_mut().find(|(p, _)| *p == ev.phase) {
                    Some((_, n)) => *n += 1,
                    None => per_phase.push((ev.phase, 1)),
                }
            }
            EventKind::Free => alive -= 1,
        }
    }
    (per_phase, most)
}

#[test]
fn every_quantized_matmul_dequantizes_a_bf16_copy_in_forward_and_again_in_backward() {
    let c = cfg(&["--quantization=nf4"]);
    let tl = simulate(&c, Runtime::pytorch(&c, None)).unwrap();
    let (per_phase, most) = dequantized(&tl);
    // One copy at a time: each goes as soon as its matmul has run.
    assert_eq!(most, 1);
    // Each copy is the whole weight in bf16.
    let sizes: Vec<u64> = linears().iter().map(|(o, i)| 2 * o * i).collect();
    assert!(tl
        .tensors
        .iter()
        .filter(|t| t.name.what == "weight_dequant")
        .all(|t| sizes.contains(&t.bytes)));
    let get = |p| {
        per_phase
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(0, |(_, n)| *n)
    };
    // Forward: 7 Linears x 2 layers per forward; two forwards per eval, one per step.
    assert_eq!(get(Phase::Eval), 2 * 14);
    assert_eq!(get(Phase::Forward), 2 * 14);
    assert_eq!(get(Phase::EvalAfterStep), 2 * 14);
    // Backward: only where the input needs a gradient. Layer 0 reads the frozen embedding's
    // stream: its q, k, v inputs need none; q_proj and v_proj have adapters, so attention's
    // output does, and the stream after it: o_proj, gate, up, down — 4. Layer 1: all 7.
    assert_eq!(get(Phase::Backward), 2 * (4 + 7));
}

#[test]
fn quantization_needs_adapters_and_a_hugging_face_model() {
    let e = load_with_model(
        None,
        Some(ModelSource::Preset("llama-3.2-1b")),
        &["--quantization=nf4".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("quantization = 'nf4'") && e.contains("lora_rank > 0"),
        "{e}"
    );
    let e = vramplan::config::load(None, &["--quantization=nf4".to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("model_type = 'gpt2'"), "{e}");
    let e = load_with_model(
        None,
        Some(ModelSource::Preset("llama-3.2-1b")),
        &["--quantization=nf3".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'none', 'nf4', 'fp4', 'int8'"), "{e}");
}

#[test]
fn qlora_llama_8b_fits_a_24gb_card_and_bf16_lora_needs_more_memory() {
    let run = |q: &str| {
        let o: Vec<String> = [
            "--lora_rank=16",
            "--block_size=512",
            "--batch_size=1",
            "--activation_checkpointing=True",
            "--compile=False",
            q,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = load_with_model(None, Some(ModelSource::Preset("llama-3.1-8b")), &o)
            .unwrap()
            .config;
        let tl = simulate(&c, Runtime::pytorch(&c, None)).unwrap();
        vramplan::sim::replay(&tl, false).peak_reserved
    };
    let (qlora, lora) = (run("--quantization=nf4"), run("--quantization=none"));
    // The quantized Linears hold 6.98e9 weights at ~0.52 bytes instead of 2: ~10 GiB less.
    let gib = 1u64 << 30;
    assert!(qlora < 11 * gib, "QLoRA peak {qlora}");
    assert!(lora > qlora + 5 * gib, "LoRA {lora} vs QLoRA {qlora}");
}

#[test]
fn double_quantization_costs_the_papers_0_127_bits_per_parameter() {
    // QLoRA (Dettmers et al. 2023, section 3): constants take 32/64 = 0.5 bits per parameter
    // without double quantization, 8/64 + 32/(64 * 256) = 0.127 with it.
    let bits = |dq: &str| {
        let o: Vec<String> = ["--lora_rank=16", "--quantization=nf4", dq]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = load_with_model(None, Some(ModelSource::Preset("llama-3.1-8b")), &o)
            .unwrap()
            .config;
        let tl = simulate(&c, Runtime::pytorch(&c, None)).unwrap();
        // Embeddings, lm_head (untied) and norms stay fp32; adapters are fp32.
        let (v, h, l) = (c.vocab_size, c.n_embd, c.n_layer);
        let rest = 2 * v * h + (2 * l + 1) * h;
        let quantized = base_params(&c) - rest;
        let storage =
            bytes(&tl, |t| t.category == Category::Parameters) - 4 * rest - 4 * lora_params(&c);
        (storage * 8) as f64 / quantized as f64 - 4.0
    };
    let (with, without) = (bits("--double_quant=True"), bits("--double_quant=False"));
    assert!((with - 0.127).abs() < 0.0005, "{with}");
    assert!((without - 0.5).abs() < 0.0005, "{without}");
}
