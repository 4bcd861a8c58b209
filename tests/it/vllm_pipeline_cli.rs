//! Pipeline-parallel serving from the user's side: the flag and key refuse bad sizes in one
//! line, `check` names the binding rank and its `--json` carries every rank, `suggest` prints
//! `vllm serve` lines with the pipeline flag, and Llama-3.1-70B over TP 4 x PP 2 holds the
//! weights counted by hand from its config.json (tests/it/vllm_pipeline.rs counts the small
//! models' ranks).

use crate::support::cli::{json, vramplan};

const MIB: u64 = 1 << 20;

#[test]
fn bad_pipeline_sizes_are_one_line_and_exit_2() {
    let llama = ["check", "--model", "llama-3.2-1b", "--mode", "inference"];
    for (extra, says) in [
        (vec!["--pipeline_parallel_size=0"], "a positive integer"),
        // Llama 3.2 1B has 16 layers.
        (
            vec!["--pipeline-parallel-size", "17"],
            "at most n_layer = 16",
        ),
        (vec!["--pipeline_parallel_size=5000"], "at most 1024"),
    ] {
        let args = [&llama[..], &extra[..]].concat();
        let (code, _, err) = vramplan(&args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("pipeline_parallel_size") && err.contains(says),
            "{err}"
        );
    }
    // Training refuses it; so does a model whose stages are not modelled.
    for (args, says) in [
        (
            vec![
                "check",
                "--model",
                "llama-3.2-1b",
                "--pipeline_parallel_size=2",
            ],
            "1 in training",
        ),
        (
            vec!["check", "--mode", "inference", "--pipeline_parallel_size=2"],
            "model_type 'gpt2'",
        ),
    ] {
        let (code, _, err) = vramplan(&args);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn check_names_the_binding_rank_and_json_carries_every_rank() {
    let args = [
        "check",
        "--model",
        "llama-3.1-8b",
        "--mode",
        "inference",
        "--gpu",
        "l40s",
        "--pipeline-parallel-size",
        "2",
    ];
    let (code, out, err) = vramplan(&args);
    assert_eq!(code, 0, "{err}");
    let (_, v) = json(&[&args[..], &["--json"]].concat());
    let p = &v["vllm"]["pipeline"];
    let binding = p["binding_rank"].as_u64().unwrap();
    assert!(
        out.contains(&format!("pipeline rank {binding} of 2 binds")),
        "{out}"
    );
    // 32 layers over 2 ranks: 16 each; every rank's blocks at least the unified ones.
    let ranks = p["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    assert_eq!(ranks[0]["layers"], serde_json::json!([0, 16]));
    assert_eq!(ranks[1]["layers"], serde_json::json!([16, 32]));
    let unified = v["vllm"]["num_gpu_blocks"].as_u64().unwrap();
    let own: Vec<u64> = ranks
        .iter()
        .map(|r| r["budget"]["num_gpu_blocks"].as_u64().unwrap())
        .collect();
    assert_eq!(own.iter().min(), Some(&unified));
    assert_eq!(own[binding as usize], unified);
    // A block holds a rank's 16 layers: 2 × 16 tokens × 8 kv heads × 128 × 2 bytes × 16.
    assert_eq!(v["vllm"]["block_bytes"].as_u64(), Some(1 << 20));
    // Untied Llama 3.1 8B: embed_tokens on rank 0, lm_head on rank 1; 128,256 × 4,096 × 2
    // bytes either way, so the two ranks' weights differ by the final norm's block.
    let w: Vec<u64> = ranks
        .iter()
        .map(|r| r["budget"]["weights_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(w[1] - w[0], 8_192);
}

#[test]
fn suggest_serves_with_the_pipeline_flags() {
    let (code, out, err) = vramplan(&[
        "suggest",
        "--model",
        "llama-3.1-8b",
        "--mode",
        "inference",
        "--gpu",
        "l40s",
        "--tensor-parallel-size",
        "2",
        "--pipeline-parallel-size",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "--tensor-parallel-size 2 --pipeline-parallel-size 2 --gpu-memory-utilization"
        ),
        "{out}"
    );
}

#[test]
fn llama_70b_over_tp_4_and_pp_2_holds_each_half_of_the_layers_by_hand() {
    // Llama-3.1-70B's config.json (fixtures/hf/llama-3.1-70b.json): hidden 8192, MLP 28,672,
    // 80 layers, 64 heads and 8 kv heads of 128, vocabulary 128,256 (a multiple of 64).
    let (code, v) = json(&[
        "check",
        "--hf-config",
        "fixtures/hf/llama-3.1-70b.json",
        "--mode",
        "inference",
        "--gpu",
        "a100-80gb",
        "--tensor-parallel-size",
        "4",
        "--pipeline-parallel-size",
        "2",
        "--json",
    ]);
    // Serving over 8 GPUs is judged by vLLM's start-up on every rank (the whole model in
    // Hugging Face's generate() on one card, which does not fit, is shown for comparison).
    assert_eq!(code, 0);
    assert_eq!(v["verdict"]["fits"], false);
    // One TP rank's layer in bf16: q 16 heads × 128 × 8192 × 2, k and v 2 × 128 × 8192 × 2,
    // o as q, gate, up and down 7168 × 8192 × 2, two norms 8192 × 2.
    let layer: u64 = 2 * 33_554_432 + 2 * 4_194_304 + 3 * 117_440_512 + 2 * 16_384;
    // The embedding (or lm_head) slice: 32,064 × 8192 × 2 = 501 MiB; the caching allocator
    // serves it from a 502 MiB segment (over 10 MiB: 2 MiB multiples) and keeps the 1 MiB
    // remainder in the block (a large block is split only above 1 MiB left), so 502 MiB count.
    let embed: u64 = 502 * MIB;
    let ranks = v["vllm"]["pipeline"]["ranks"].as_array().unwrap();
    let w: Vec<u64> = ranks
        .iter()
        .map(|r| r["budget"]["weights_bytes"].as_u64().unwrap())
        .collect();
    // Rank 0: 40 layers, embed_tokens, inv_freq (64 fp32, a block); rank 1: 40 layers, the
    // final norm (16 KiB), lm_head, inv_freq.
    assert_eq!(
        w,
        [40 * layer + embed + 512, 40 * layer + 16_384 + embed + 512]
    );
    assert_eq!(v["vllm"]["world_size"].as_u64(), Some(8));
    // A block: 2 × 16 tokens × 2 kv heads × 128 × 2 bytes × 40 layers = 640 KiB.
    assert_eq!(v["vllm"]["block_bytes"].as_u64(), Some(640 * 1024));
}

/// Serving over several GPUs is judged by vLLM's start-up on every rank, not by the simulated
/// run of the whole model on one GPU (which never runs): the weights per rank decide.
#[test]
fn sharded_serving_is_judged_by_vllms_start_up() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/hf/llama-3.1-70b.json"
    );
    let check = |tp: &str, pp: &str| {
        crate::support::cli::json(&[
            "check",
            "--hf-config",
            model,
            "--mode",
            "inference",
            "--gpu",
            "a100-80gb",
            "--json",
            "--tensor-parallel-size",
            tp,
            "--",
            &format!("--pipeline_parallel_size={pp}"),
        ])
    };
    // 70.55B parameters in bf16 are 131.4 GiB: one 80 GB card cannot hold them (the
    // simulated run's own verdict), two can (65.7 GiB of weights each under 0.9 × 79.15).
    let (code, one) = check("1", "1");
    assert_eq!((code, one["judged_by"].as_str()), (1, Some("simulation")));
    let (code, v) = check("2", "1");
    assert_eq!((code, v["judged_by"].as_str()), (0, Some("vllm_startup")));
    assert_eq!(v["fits"], true);
    assert_eq!(
        v["verdict"]["fits"], false,
        "the one-GPU run stays for comparison"
    );
    assert_eq!(v["first_overflow_phase"], serde_json::Value::Null);
    assert_eq!(v["headroom_bytes"], v["vllm"]["kv_cache_bytes"]);
    let (code, v) = check("4", "2");
    assert_eq!((code, v["fits"].as_bool()), (0, Some(true)));
}

/// suggest over several GPUs answers with vLLM's start-up; the one-GPU searches of the whole
/// model (which never runs that way) are not made.
#[test]
fn sharded_suggest_answers_with_vllm() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/hf/llama-3.1-70b.json"
    );
    let (code, v) = crate::support::cli::suggest_json(&[
        "--hf-config",
        model,
        "--mode",
        "inference",
        "--gpu",
        "a100-80gb",
        "--tensor-parallel-size",
        "4",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["sharded"], true);
    assert_eq!(v["baseline_fits"], false);
    assert_eq!(v["largest_batch"], serde_json::Value::Null);
    assert_eq!(v["vllm"]["error"], serde_json::Value::Null);
    assert!(!v["vllm_commands"].as_array().unwrap().is_empty());
}
