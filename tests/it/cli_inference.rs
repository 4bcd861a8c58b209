//! `--mode inference` end to end: check's JSON (the kv_cache category, the phases, vLLM's
//! blocks), suggest's largest batch and context, diagnose on the corpus's vLLM logs, bad input.

use crate::support::cli::{self, vramplan};
use serde_json::Value;

/// `vramplan args --json`: (exit code, the JSON).
fn json(args: &[&str]) -> (i32, Value) {
    cli::json(&[args, &["--json"]].concat())
}

/// Llama 3.1 8B at batch 4, 8192 tokens on an 80 GB card.
const LLAMA8B: &[&str] = &[
    "check",
    "--model",
    "llama-3.1-8b",
    "--mode",
    "inference",
    "--gpu",
    "a100-80gb",
    "--batch_size=4",
    "--block_size=8192",
];

#[test]
fn check_reports_the_kv_cache_category_and_only_inference_phases() {
    let (code, v) = json(LLAMA8B);
    assert_eq!(code, 0);
    // 2 × 32 layers × 8 kv heads × 128 dims × 2 bytes = 128 KiB per token, × 8192 × 4.
    let kv = 2u64 * 32 * 8 * 128 * 2 * 8192 * 4;
    assert_eq!(kv, 4 << 30);
    assert_eq!(v["categories"]["kv_cache"].as_u64(), Some(kv));
    // bf16 weights (8,030,261,248 × 2 bytes), in allocator blocks of whole 512 B.
    let params = v["categories"]["parameters"].as_u64().unwrap();
    assert!((16_060_522_496..16_060_522_496 + 512 * 300).contains(&params));
    assert_eq!(v["categories"]["gradients"].as_u64(), Some(0));
    assert_eq!(v["categories"]["optimizer"].as_u64(), Some(0));
    let phases: Vec<&str> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["init", "prefill", "decode"]);
    // vLLM's block: 16 tokens × 128 KiB = 2 MiB; its blocks × 2 MiB fit what is left.
    let vl = &v["vllm"];
    assert_eq!(vl["block_bytes"].as_u64(), Some(2 << 20));
    let left = vl["kv_cache_bytes"].as_i64().unwrap();
    assert_eq!(vl["num_gpu_blocks"].as_i64(), Some(left / (2 << 20)));
    let budget = vl["budget_bytes"].as_i64().unwrap();
    let used = vl["profile_peak_bytes"].as_i64().unwrap() + vl["non_torch_bytes"].as_i64().unwrap();
    assert_eq!(left, budget - used);
}

#[test]
fn training_json_has_no_kv_cache_or_vllm() {
    let (_, v) = json(&["check", "--n_layer=2", "--compile=False"]);
    // Stable keys (docs/json-schema.md): present, with nothing in them.
    assert_eq!(v["categories"]["kv_cache"], 0);
    assert!(v.get("vllm").is_some_and(|x| x.is_null()));
    assert_eq!(v["phases"].as_array().unwrap().len(), 6);
}

#[test]
fn bad_inference_input_is_one_line_and_exit_2() {
    let (code, _, err) = vramplan(&["check", "--mode=serve"]);
    assert_eq!(code, 2);
    assert!(err.contains("mode") && err.contains("inference"), "{err}");
    let (code, _, err) = vramplan(&["check", "--mode", "inference", "--prompt_len=2048"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("prompt_len = 2048") && err.contains("block_size = 1024"),
        "{err}"
    );
    let (code, _, err) = vramplan(&["check", "--mode=inference", "--gpu_memory_utilization=1.5"]);
    assert_eq!(code, 2);
    assert!(err.contains("gpu_memory_utilization = 1.5"), "{err}");
    let (code, _, err) = vramplan(&["check", "--mode=inference", "--kv_cache_dtype=int4"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("kv_cache_dtype") && err.contains("'fp8'"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn suggest_inference_batch_and_context_are_maximal() {
    let base = [
        "--model",
        "llama-3.2-1b",
        "--mode",
        "inference",
        "--gpu",
        "rtx3060",
        "--block_size=8192",
        "--batch_size=2",
    ];
    let mut args = vec!["suggest"];
    args.extend_from_slice(&base);
    let (code, v) = json(&args);
    assert_eq!(code, 0);
    let fits = |b: u64, t: u64| {
        let bs = format!("--batch_size={b}");
        let ts = format!("--block_size={t}");
        let mut a = vec!["check"];
        a.extend_from_slice(&base[..6]);
        a.extend_from_slice(&[&bs, &ts]);
        json(&a).1["fits"].as_bool().unwrap()
    };
    let b = v["largest_batch"]["batch_size"].as_u64().unwrap();
    assert_eq!(v["largest_batch"]["block_size"].as_u64(), Some(8192));
    assert!(b >= 2);
    assert!(fits(b, 8192), "batch {b} fits");
    assert!(!fits(b + 1, 8192), "batch {} does not", b + 1);
    let t = v["largest_context_batch1"]["block_size"].as_u64().unwrap();
    assert!(fits(1, t) && !fits(1, t + 1), "context {t}");
    // The vLLM line at the utilization that gives one full context.
    let cmds: Vec<&str> = v["vllm_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    // vllm serve takes the Hub repository the preset stands for, not vramplan's preset name.
    assert!(
        cmds[0].starts_with("vllm serve meta-llama/Llama-3.2-1B --gpu-memory-utilization 0."),
        "{}",
        cmds[0]
    );
    assert!(cmds[0].ends_with("--max-model-len 8192"));
}

#[test]
fn diagnose_explains_vllm_no_cache_blocks_with_the_model() {
    let (code, v) = json(&[
        "diagnose",
        "fixtures/oom/corpus-029.log",
        "--model",
        "qwen2.5-0.5b",
        "--gpu",
        "rtx3090",
        "--gpu_memory_utilization=0.03",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["format"], "vllm");
    let cause = v["causes"][0]["evidence"].as_str().unwrap();
    assert!(cause.contains("0.03 ×"), "{cause}");
    assert!(cause.contains("0 blocks"), "{cause}");
    assert!(cause.contains("increase"), "{cause}");
    // The first fix: the utilization that holds one full context; check agrees it is the
    // smallest that does.
    let cmd = v["fixes"][0]["command"].as_str().unwrap();
    let u: f64 = cmd
        .split("--gpu-memory-utilization ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let tokens_at = |u: f64| {
        let util = format!("--gpu_memory_utilization={u:.2}");
        let (_, c) = json(&[
            "check",
            "--model",
            "qwen2.5-0.5b",
            "--mode",
            "inference",
            "--gpu",
            "rtx3090",
            &util,
        ]);
        c["vllm"]["max_tokens"].as_u64().unwrap()
    };
    assert!(tokens_at(u) >= 1024);
    assert!(tokens_at(u - 0.01) < 1024);
}

#[test]
fn diagnose_without_a_model_explains_the_message_in_words() {
    for log in ["029", "031"] {
        let path = format!("fixtures/oom/corpus-{log}.log");
        let (code, v) = json(&["diagnose", &path]);
        assert_eq!(code, 0);
        let cause = v["causes"][0]["evidence"].as_str().unwrap();
        assert!(cause.contains("whole share of the card"), "{log}: {cause}");
    }
}
