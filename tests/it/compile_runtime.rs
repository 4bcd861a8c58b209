//! The torch.compile runtime against PyTorch itself and against hand counts.
//!
//! `fixtures/compile-proxy/*.json` were written by scripts/compile-truth from PyTorch 2.15's
//! own `min_cut_rematerialization_partition` on nanoGPT's GPT (fake tensors, CUDA autocast
//! rules): the tensors the compiled forward saves for the backward, each with the module that
//! made it. They are PyTorch's answer, not ours; these tests hold the simulator to them.

use crate::support::cli::{json, vramplan};
use serde_json::Value;
use vramplan::config::{Precision, TrainConfig};
use vramplan::run::simulate;
use vramplan::sim::dtype::DType;
use vramplan::sim::runtime::{Runtime, RuntimeKind};
use vramplan::sim::timeline::{Category, EventKind, Phase, Residency};
use vramplan::sim::Timeline;

/// The compile runtime without cuBLAS workspaces (so hand counts need not include them).
fn compiled(autocast: Option<DType>) -> Runtime {
    Runtime {
        kind: RuntimeKind::PytorchCompile,
        autocast,
        ..Runtime::pytorch(&TrainConfig::default(), None)
    }
    .without_workspaces()
}

trait NoWorkspaces {
    fn without_workspaces(self) -> Self;
}

impl NoWorkspaces for Runtime {
    fn without_workspaces(mut self) -> Runtime {
        self.cublas_workspace_bytes = 0;
        self.cublaslt_workspace_bytes = 0;
        self
    }
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/fixtures/compile-proxy/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The fixture's model and batch as a nanoGPT config, compiled, one micro-step.
fn config_of(f: &Value) -> TrainConfig {
    let c = &f["config"];
    let u = |k: &str| c[k].as_u64().unwrap();
    TrainConfig {
        n_layer: u("n_layer"),
        n_head: u("n_head"),
        n_embd: u("n_embd"),
        vocab_size: u("vocab_size"),
        block_size: u("block_size"),
        batch_size: u("batch"),
        gradient_accumulation_steps: 1,
        dtype: match c["dtype"].as_str().unwrap() {
            "bf16" => Precision::BFloat16,
            "fp16" => Precision::Float16,
            _ => Precision::Float32,
        },
        flash: c["flash"].as_bool().unwrap(),
        dropout: c["dropout"].as_f64().unwrap(),
        bias: c["bias"].as_bool().unwrap(),
        compile: true,
        ..TrainConfig::default()
    }
}

fn autocast_of(cfg: &TrainConfig) -> Option<DType> {
    match cfg.dtype {
        Precision::BFloat16 => Some(DType::BF16),
        Precision::Float16 => Some(DType::F16),
        Precision::Float32 => None,
    }
}

/// Tensors alive right before the first backward event, each (tensor id).
fn alive_at_first_backward(tl: &Timeline) -> Vec<u32> {
    let first = tl
        .events
        .iter()
        .position(|e| e.phase == Phase::Backward)
        .expect("a backward");
    tl.live_after(first - 1)
}

/// (activation bytes, weight-copy bytes) PyTorch's partition saves for `transformer.h.{l}`.
fn pytorch_saved(f: &Value, l: u32) -> (u64, u64) {
    let prefix = format!("transformer.h.{l}.");
    let mut sums = (0, 0);
    for s in f["saved_for_backward"]["storages"].as_array().unwrap() {
        let module = s["module"].as_str().unwrap_or("");
        if !module.starts_with(&prefix) {
            continue;
        }
        let bytes = s["bytes"].as_u64().unwrap();
        match s["kind"].as_str().unwrap() {
            "activation" => sums.0 += bytes,
            "autocast_weight_copy" => sums.1 += bytes,
            _ => {}
        }
    }
    sums
}

/// What the simulated compiled forward keeps of layer `l` for the backward: (activations,
/// weight copies).
fn simulated_saved(tl: &Timeline, l: u32) -> (u64, u64) {
    let mut sums = (0, 0);
    for t in alive_at_first_backward(tl) {
        let r = &tl.tensors[t as usize];
        if r.name.layer != Some(l) {
            continue;
        }
        // Activations only: parameters are not saved tensors, and the flash kernel's philox
        // seed and offset (Category::Other, 24 bytes) have no counterpart in the CPU-traced
        // partition.
        match r.category {
            Category::AutocastCopies => sums.1 += r.bytes,
            Category::Activations => sums.0 += r.bytes,
            _ => {}
        }
    }
    sums
}

#[test]
fn saved_per_layer_is_what_pytorchs_partition_saves() {
    for name in [
        "tiny-bf16-flash",
        "tiny-bf16-noflash",
        "tiny-fp32-flash",
        "tiny-bf16-flash-dropout0.1",
        "shakespeare-char-b64-bf16",
        "gpt2-medium-b4-bf16",
        "gpt2-large-b4-bf16",
        "gpt2-124m-b64-bf16",
    ] {
        let f = fixture(name);
        let cfg = config_of(&f);
        let tl = simulate(&cfg, compiled(autocast_of(&cfg))).unwrap();
        // Layer 1: at GPT-2 sizes PyTorch's min-cut breaks a near-tie at layer 0 differently
        // (it keeps the embeddings' outputs instead of x̂), which the simulator does not model.
        let (want_act, want_copies) = pytorch_saved(&f, 1);
        let (act, copies) = simulated_saved(&tl, 1);
        assert_eq!(act, want_act, "{name}: activations saved by layer 1");
        assert_eq!(
            copies, want_copies,
            "{name}: bf16 weight copies saved by layer 1"
        );
    }
}

#[test]
fn saved_per_layer_by_hand_for_the_tiny_gpt() {
    // B 2, T 32, C 64, 2 heads, bf16 (lo = 2 bytes), flash, no dropout. Per block the backward
    // needs: two x̂ (fp32, 4·BTC each) and rstd (fp32, 4·BT each), the two bf16 norm outputs
    // multiplied by c_attn and c_fc (2·BTC each), qkv (3·2·BTC), the attention output (2·BTC)
    // and its logsumexp (fp32, 4·B·H·T), c_fc's output and GELU's (4·2·BTC each).
    let (b, t, c, h) = (2u64, 32u64, 64u64, 2u64);
    let btc = b * t * c;
    let by_hand =
        2 * 4 * btc + 2 * 4 * b * t + 2 * 2 * btc + 6 * btc + 2 * btc + 4 * b * h * t + 2 * 8 * btc;
    assert_eq!(by_hand, 148_480);
    // The weight copies: c_attn 3C·C, c_proj C·C, c_fc 4C·C, mlp.c_proj C·4C, in bf16.
    let copies = 2 * (3 + 1 + 4 + 4) * c * c;
    let cfg = config_of(&fixture("tiny-bf16-flash"));
    let tl = simulate(&cfg, compiled(Some(DType::BF16))).unwrap();
    assert_eq!(simulated_saved(&tl, 1), (by_hand, copies));
    // Eager keeps the norms' inputs and means instead: one more (B, T) fp32 per norm.
    let eager = simulate(
        &TrainConfig {
            compile: false,
            ..cfg.clone()
        },
        Runtime::pytorch(
            &TrainConfig {
                compile: false,
                ..cfg
            },
            None,
        )
        .without_workspaces(),
    )
    .unwrap();
    assert_eq!(simulated_saved(&eager, 1).0, by_hand + 2 * 4 * b * t);
}

#[test]
fn compiled_loss_keeps_no_vocabulary_sized_tensor_but_the_logits() {
    let cfg = config_of(&fixture("tiny-bf16-flash"));
    let tl = simulate(&cfg, compiled(Some(DType::BF16))).unwrap();
    let (n, v) = (2 * 32, 128);
    let vocab_sized: Vec<String> = alive_at_first_backward(&tl)
        .into_iter()
        .map(|t| &tl.tensors[t as usize])
        .filter(|r| r.shape.dims() == [n, v] || r.shape.dims() == [2, 32, v])
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(vocab_sized, ["lm_head.logits"]);
    // The eager log-probs and their fp32 copy exist only as fused values.
    let log_probs: Vec<Residency> = tl
        .tensors
        .iter()
        .filter(|r| r.name.to_string().starts_with("loss.log_probs"))
        .map(|r| r.residency)
        .collect();
    assert!(!log_probs.is_empty());
    assert!(log_probs.iter().all(|&r| r == Residency::Fused));
    // The backward gets one zeros tangent of the logits' shape per micro-step, then the
    // logits' gradient in bf16; no fp32 (N, V) tensor is ever allocated.
    let allocated = |pred: &dyn Fn(&vramplan::sim::timeline::TensorRecord) -> bool| {
        tl.events
            .iter()
            .filter(|e| e.kind == EventKind::Alloc && pred(&tl.tensors[e.tensor as usize]))
            .count()
    };
    let steps = 2; // the simulator runs two optimizer steps of one micro-step each
    assert_eq!(
        allocated(&|r| r.name.to_string() == "lm_head.logits.tangent"
            && r.dtype == DType::BF16
            && r.shape.dims() == [n, v]),
        steps
    );
    assert_eq!(
        allocated(&|r| r.shape.dims() == [n, v] && r.dtype == DType::F32),
        0
    );
}

/// The allocator's 512-byte block for `bytes`.
fn block(bytes: u64) -> u64 {
    bytes.div_ceil(512) * 512
}

#[test]
fn eval_holds_the_previous_logits_while_the_next_are_made() {
    // estimate_loss() rebinds `logits` only after the compiled forward returns, so the second
    // iteration's lm_head output is allocated next to the first's. At that moment the
    // inference graph holds, by hand (B 2, T 32, C 64, V 128, 2 layers, bf16):
    let (b, t, c, v) = (2u64, 32u64, 64u64, 128u64);
    let params: u64 = [v * c, t * c]
        .into_iter()
        .chain((0..2).flat_map(|_| [c, 3 * c * c, c * c, c, 4 * c * c, 4 * c * c]))
        .chain([c])
        .map(|n| block(4 * n))
        .sum();
    let by_hand = params
        + block(2 * b * t * v) // the previous iteration's logits
        + block(4) // and its loss
        + 2 * block(8 * b * t) // the first training batch, fetched before the loop
        + 2 * block(8 * b * t) // this iteration's X and Y
        + block(8 * t) // the position ids
        + block(2 * b * t * c) // ln_f's output, written in bf16 for the lm_head matmul
        + block(2 * v * c); // the bf16 copy of the tied wte/lm_head weight
    let cfg = config_of(&fixture("tiny-bf16-flash"));
    let tl = simulate(&cfg, compiled(Some(DType::BF16))).unwrap();
    let profile = vramplan::sim::replay(&tl, false);
    let logits: Vec<usize> = tl
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.kind == EventKind::Alloc
                && e.phase == Phase::Eval
                && tl.tensors[e.tensor as usize].name.to_string() == "lm_head.logits"
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(logits.len(), 2, "two eval iterations");
    assert_eq!(profile.allocated_after[logits[1] - 1], by_hand);
}

#[test]
fn seed_log_is_explained_by_the_compiled_eval() {
    // The seed crashed in estimate_loss() asking inductor for a (65536, 50304) bf16 buffer with
    // 6.78 GiB allocated by PyTorch; the sidecar holds the log's own figures.
    let sidecar: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/fixtures/oom/seed-nanogpt-rtx3060.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let logged = sidecar["facts"]["allocated_by_framework_bytes"]
        .as_u64()
        .unwrap();
    let (code, d) = json(&[
        "diagnose",
        "fixtures/oom/seed-nanogpt-rtx3060.log",
        "--config",
        "fixtures/configs/seed-rtx3060.py",
        "--json",
    ]);
    assert_eq!(code, 0);
    let culprit = &d["culprit"];
    assert_eq!(culprit["shape"], serde_json::json!([65536, 50304]));
    assert_eq!(culprit["dtype"], "bf16");
    let before = culprit["simulated_allocated_before_bytes"]
        .as_u64()
        .unwrap();
    let err = (before as f64 - logged as f64).abs() / logged as f64;
    assert!(
        err < 0.03,
        "simulated {before} vs logged {logged} allocated before the request ({:.2}%)",
        err * 100.0
    );
}

#[test]
fn check_names_the_compile_runtime_without_the_upper_bound_warning() {
    let (code, out, _) = vramplan(&[
        "check",
        "fixtures/configs/seed-rtx3060.py",
        "--gpu",
        "rtx3060",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("pytorch-compile"), "{out}");
    assert!(!out.contains("upper bound"), "{out}");
    // A model whose compiled graph is not derived says so and is bounded by eager.
    let (_, out, _) = vramplan(&[
        "check",
        "--model",
        "llama-3.2-1b",
        "--compile=True",
        "--batch_size=1",
    ]);
    assert!(out.contains("upper bound"), "{out}");
}
