//! vLLM serving from the user's side: `check --mode inference` prints the start-up lines vLLM
//! logs, per engine version; the flags and keys refuse bad values in one line.

use crate::support::cli::{json, vramplan};

fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

#[test]
fn check_prints_vllm_start_up_lines_that_agree_with_its_json() {
    for version in ["v1", "v0"] {
        let args = [
            "check",
            "--model",
            "llama-3.2-1b",
            "--mode",
            "inference",
            "--gpu",
            "l40s",
            "--block_size=8192",
            "--vllm-version",
            version,
        ];
        let (code, out, err) = vramplan(&args);
        assert_eq!(code, 0, "{err}");
        let (_, v) = json(&[&args[..], &["--json"]].concat());
        let vl = &v["vllm"];
        assert_eq!(vl["version"], version);
        let heading = line(&out, "vLLM ");
        assert!(
            heading.starts_with(&format!("vLLM {} start-up", version.to_uppercase())),
            "{heading}"
        );
        // "GPU KV cache size: N tokens" is 16 tokens per block of the JSON's blocks.
        let blocks = vl["num_gpu_blocks"].as_u64().unwrap();
        let tokens: u64 = line(&out, "GPU KV cache size: ")["GPU KV cache size: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap();
        assert_eq!(tokens, 16 * blocks);
        // Maximum concurrency for 8,192 tokens per request: V1 blocks / cdiv(8192, 16), V0
        // blocks × 16 / 8192 — the same number for a multiple of 16.
        let conc = line(&out, "Maximum concurrency for 8,192 tokens per request: ");
        assert!(
            conc.ends_with(&format!("{:.2}x", blocks as f64 / 512.0)),
            "{conc}"
        );
    }
}

#[test]
fn tensor_parallel_flag_halves_the_kv_block_of_a_rank() {
    // Llama-3.1-8B: 8 kv heads; over 2 ranks each keeps 4: 2 × 32 layers × 4 × 128 dims × 2
    // bytes × 16 tokens = 1 MiB per block instead of 2.
    let base = [
        "check",
        "--model",
        "llama-3.1-8b",
        "--mode",
        "inference",
        "--gpu",
        "a100-80gb",
        "--json",
    ];
    let (code, one) = json(&base);
    assert_eq!(code, 0);
    let (code, two) = json(&[&base[..], &["--tensor-parallel-size", "2"]].concat());
    assert_eq!(code, 0);
    assert_eq!(one["vllm"]["block_bytes"].as_u64(), Some(2 << 20));
    assert_eq!(two["vllm"]["block_bytes"].as_u64(), Some(1 << 20));
    assert_eq!(two["vllm"]["tensor_parallel_size"].as_u64(), Some(2));
}

#[test]
fn bad_vllm_keys_are_one_line_and_exit_2() {
    for (args, key) in [
        (vec!["--vllm_version=v2"], "vllm_version"),
        (vec!["--tensor_parallel_size=3"], "tensor_parallel_size"),
        (vec!["--tensor_parallel_size=0"], "tensor_parallel_size"),
    ] {
        let all = [
            &["check", "--model", "llama-3.2-1b", "--mode", "inference"][..],
            &args[..],
        ]
        .concat();
        let (code, _, err) = vramplan(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(key), "{err}");
        assert!(!err.contains("panicked") && !err.contains("{"), "{err}");
    }
    // A vLLM checkpoint format in training.
    let (code, _, err) = vramplan(&["check", "--model", "llama-3.2-1b", "--quantization=awq"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("quantization") && err.contains("mode = 'inference'"),
        "{err}"
    );
}

#[test]
fn diagnose_explains_the_v1_max_seq_len_refusal_with_the_simulated_budget() {
    let (code, v) = json(&[
        "diagnose",
        "fixtures/oom/vllm-v1-max-seq-len.log",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "rtx4090",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["format"], "vllm");
    assert_eq!(v["phase"], "kv_cache");
    // "16.00 GiB KV cache is needed": 131,072 tokens × 2 × 32 layers × 8 kv heads × 128 × 2 B.
    assert_eq!(
        v["facts"]["tried_to_allocate_bytes"].as_u64(),
        Some(131_072 * 2 * 32 * 8 * 128 * 2)
    );
    // The log's engine line makes it V1 at max_model_len 131072; the simulation refuses too.
    let cause = v["causes"][0]["evidence"].as_str().unwrap();
    assert!(cause.contains("vLLM V1"), "{cause}");
    assert!(cause.contains("predicts the same refusal"), "{cause}");
    // No utilization holds 16 GiB of cache beside 15 GiB of weights on a 24 GB card: the fix
    // is the --max-model-len that `check` finds for the same card and context.
    let (_, c) = json(&[
        "check",
        "--model",
        "llama-3.1-8b",
        "--mode",
        "inference",
        "--gpu",
        "rtx4090",
        "--block_size=131072",
        "--json",
    ]);
    let fits = c["vllm"]["max_tokens"].as_u64().unwrap();
    let cmds: Vec<&str> = v["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["command"].as_str())
        .collect();
    assert!(
        cmds.iter()
            .any(|c| c.ends_with(&format!("--max-model-len {fits}"))),
        "{cmds:?}"
    );
}

#[test]
fn check_prints_gemma_3s_kv_cache_groups_as_vllm_v1_groups_them() {
    // google/gemma-3-1b-pt: 26 layers, 4 global (every 6th), 22 sliding over 512 tokens.
    // group_size 4: 1 full group and cdiv(22, 4) = 6 sliding groups, 4 pools.
    let args = [
        "check",
        "--model",
        "gemma-3-1b",
        "--mode",
        "inference",
        "--gpu",
        "rtx4090",
        "--block_size=32768",
    ];
    let (code, out, err) = vramplan(&args);
    // 1: the transformers run of the same config (32K tokens) does not fit; the vLLM start-up
    // is printed either way.
    assert!(code == 0 || code == 1, "{err}");
    let (_, v) = json(&[&args[..], &["--json"]].concat());
    let blocks = v["vllm"]["num_gpu_blocks"].as_u64().unwrap();
    let tokens: u64 = line(&out, "GPU KV cache size: ")["GPU KV cache size: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    // num_blocks // 7 groups × 16.
    assert_eq!(tokens, blocks / 7 * 16);
    let groups = line(&out, "KV cache groups (sliding window 512 tokens;");
    // One request of 32,768: the full group cdiv(32768, 16) = 2048 blocks, each sliding group
    // cdiv(min(511 + 2048, 32768), 16) + 1 = 161 (an RTX 4090 batches 2048 tokens).
    assert!(
        groups.contains("one request takes 3014 blocks over the groups"),
        "{groups}"
    );
    assert!(
        groups.contains("4 full-attention layer(s) in 1 group(s) and 22 sliding-window layer(s) in 6 group(s) of 4 layer(s)"),
        "{groups}"
    );
    let conc = line(&out, "Maximum concurrency for 32,768 tokens per request: ");
    assert!(
        conc.ends_with(&format!("{:.2}x", blocks as f64 / 3014.0)),
        "{conc}"
    );
}
