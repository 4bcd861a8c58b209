//! The seed case of issue 4: nanoGPT on an RTX 3060 (11.69 GiB), batch 64, block 1024,
//! bfloat16, compile=True, out of memory in `estimate_loss()` → `model(X, Y)`.

use vramplan::diagnose::{
    analyze, parse, render_text, Candidate, CauseKind, Fix, Format, MatchContext, Phase,
};
use vramplan::units::human;

const SEED: &str = include_str!("../../fixtures/oom/seed-nanogpt-rtx3060.log");

fn gib(x: f64) -> u64 {
    (x * (1u64 << 30) as f64).round() as u64
}

#[test]
fn facts_phase_and_the_memory_outside_this_process() {
    let d = parse(SEED);
    assert!(d.is_oom);
    assert_eq!(d.format, Some(Format::Pytorch2));
    assert_eq!(d.device.as_deref(), Some("0"));
    assert_eq!(d.phase, Phase::Eval);
    let f = &d.facts;
    assert_eq!(f.tried_to_allocate_bytes, Some(gib(6.14)));
    assert_eq!(f.total_capacity_bytes, Some(gib(11.69)));
    assert_eq!(f.free_bytes, Some(gib(2.68)));
    assert_eq!(f.process_in_use_bytes, Some(gib(7.04)));
    assert_eq!(f.allocated_by_framework_bytes, Some(gib(6.78)));
    assert_eq!(
        f.reserved_unallocated_bytes,
        Some((224.90f64 * (1u64 << 20) as f64).round() as u64)
    );
    assert_eq!(f.reserved_total_bytes, None);
    assert_eq!(f.private_pools_bytes, None);
    // 11.69 − 2.68 − 7.04 = 1.97 GiB held outside this process.
    assert_eq!(human(f.outside_process_bytes().unwrap()), "1.97 GiB");
    // ~40 MiB of this process is outside PyTorch's allocator (each figure ±5 MiB).
    let nf = f.non_framework_in_process_bytes().unwrap();
    assert!((30 << 20..=55 << 20).contains(&nf), "{}", human(nf));
    assert!(d
        .causes
        .iter()
        .any(|c| c.kind == CauseKind::OtherProcesses && c.evidence.contains("1.97 GiB")));
    // Without a config the log's own inductor buffer names the shape.
    let c = d
        .culprit
        .as_ref()
        .expect("culprit from the inductor buffer");
    assert_eq!(c.shape, vec![65536, 50304]);
    assert_eq!(c.dtype, "bf16");
    assert!(render_text(&d).contains("1.97 GiB"));
}

/// What the simulator and `suggest` will hand over for the seed config (their numbers here are
/// placeholders shaped like theirs: the test is about how diagnose uses them).
fn seed_context() -> MatchContext {
    let logits = 64 * 1024 * 50304 * 2;
    let cand = |name: &str, shape: &[u64], phase: &str| Candidate {
        name: name.into(),
        shape: shape.to_vec(),
        dtype: "bf16".into(),
        bytes: logits,
        phase: phase.into(),
        allocated_before_bytes: None,
        live_twin: None,
    };
    MatchContext {
        candidates: vec![
            cand("lm_head.out (logits)", &[64, 1024, 50304], "eval"),
            cand("loss.log_probs", &[65536, 50304], "eval"),
            cand("lm_head.out.grad", &[64, 1024, 50304], "backward"),
        ],
        simulated_live_bytes_at_phase: Some(gib(6.78)),
        fixes: vec![Fix {
            change: "batch_size 16 with gradient_accumulation_steps 4 (65,536 tokens per step kept)"
                .into(),
            command: Some(
                "python train.py config/train_gpt2.py --batch_size=16 --gradient_accumulation_steps=4"
                    .into(),
            ),
            code_changes: Vec::new(),
            predicted_peak_bytes: Some(gib(9.1)),
            fits: Some(true),
        }],
        explanation: None,
        notes: Vec::new(),
    }
}

#[test]
fn with_the_config_the_culprit_is_the_second_tensor_of_that_size() {
    let d = analyze(SEED, Some(&seed_context()));
    let c = d.culprit.as_ref().expect("culprit");
    assert_eq!(c.name, "loss.log_probs");
    assert_eq!(c.shape, vec![65536, 50304]);
    assert_eq!(c.dtype, "bf16");
    let oversized = d
        .causes
        .iter()
        .find(|c| c.kind == CauseKind::OversizedTensor)
        .expect("oversized cause");
    assert!(
        oversized.evidence.contains("already live"),
        "{}",
        oversized.evidence
    );
    assert!(oversized.evidence.contains("lm_head.out (logits)"));
    // suggest's fix comes first, with its predicted peak; generic ones follow.
    assert_eq!(d.fixes[0].fits, Some(true));
    assert!(d.fixes[0]
        .command
        .as_deref()
        .unwrap()
        .contains("--batch_size=16"));
    assert!(d.fixes.iter().any(|f| f.change.contains("eval")));
    // The live set matches the config here: nothing unexplained.
    assert!(!d
        .causes
        .iter()
        .any(|c| c.kind == CauseKind::UnexplainedMemory));
}

#[test]
fn json_keeps_the_issue_names() {
    let d = analyze(SEED, Some(&seed_context()));
    let v = serde_json::to_value(&d).unwrap();
    for k in [
        "is_oom", "format", "device", "phase", "facts", "culprit", "causes", "fixes",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(v["format"], "pytorch2");
    assert_eq!(v["phase"], "eval");
    assert_eq!(v["device"], "0");
    for k in [
        "tried_to_allocate_bytes",
        "total_capacity_bytes",
        "free_bytes",
        "process_in_use_bytes",
        "allocated_by_framework_bytes",
        "reserved_unallocated_bytes",
        "reserved_total_bytes",
        "private_pools_bytes",
        "other_processes",
    ] {
        assert!(v["facts"].get(k).is_some(), "facts.{k}");
    }
    // Not stated: null, never 0.
    assert!(v["facts"]["reserved_total_bytes"].is_null());
    assert_eq!(v["culprit"]["shape"], serde_json::json!([65536, 50304]));
    assert!(v["causes"][0]["kind"].is_string() && v["causes"][0]["evidence"].is_string());
    let f = &v["fixes"][0];
    for k in ["change", "command", "predicted_peak_bytes", "fits"] {
        assert!(f.get(k).is_some(), "fixes[0].{k}");
    }
    // Round trip.
    let back: vramplan::diagnose::Diagnosis = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);
}

#[test]
fn without_a_config_hypotheses_name_both_equal_sized_shapes() {
    // Drop the inductor line so the log names no shape.
    let log: String = SEED
        .lines()
        .filter(|l| !l.contains("empty_strided_cuda"))
        .collect::<Vec<_>>()
        .join("\n");
    let d = parse(&log);
    assert!(d.culprit.is_none());
    let shapes: Vec<(Vec<u64>, String)> = d
        .hypotheses
        .iter()
        .map(|h| (h.shape.clone(), h.dtype.clone()))
        .collect();
    assert!(
        shapes.contains(&(vec![64, 1024, 50304], "bf16".into())),
        "{shapes:?}"
    );
    assert!(
        shapes.contains(&(vec![32, 1024, 50304], "fp32".into())),
        "{shapes:?}"
    );
    assert!(d.hypotheses.iter().all(|h| h.hypothesis));
    assert!(render_text(&d).contains("hypotheses"));
}

#[test]
fn more_allocated_than_the_config_explains_is_unexplained_memory() {
    let mut ctx = seed_context();
    // Say the simulator predicts only 3 GiB live in eval: 3.78 GiB are unexplained.
    ctx.simulated_live_bytes_at_phase = Some(gib(3.0));
    let d = analyze(SEED, Some(&ctx));
    let c = d
        .causes
        .iter()
        .find(|c| c.kind == CauseKind::UnexplainedMemory)
        .expect("unexplained memory");
    assert!(c.evidence.contains("3.78 GiB more"), "{}", c.evidence);
    assert!(d.fixes.iter().any(|f| f.change.contains("no_grad")));
    // And when suggest finds nothing that fits, the model is too large for the card.
    ctx.fixes.iter_mut().for_each(|f| f.fits = Some(false));
    let d = analyze(SEED, Some(&ctx));
    assert_eq!(d.causes[0].kind, CauseKind::ModelTooLarge);
}
