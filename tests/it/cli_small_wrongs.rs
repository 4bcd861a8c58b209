//! Issue #18 item 8, from the user's side: each small wrong as the user met it — the command,
//! its exit code and the line read.

use crate::support::cli::{json, vramplan};

/// The line of `out` that starts with `prefix`.
fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{out}"))
}

#[test]
fn vllm_serve_lines_name_the_hub_repository_the_preset_stands_for() {
    // The preset's own file says where its config.json comes from.
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/models/llama-3.1-8b.toml"
    ))
    .unwrap();
    assert!(preset.contains("(meta-llama/Llama-3.1-8B config.json)"));
    let (code, out, err) = vramplan(&[
        "suggest",
        "--model",
        "llama-3.1-8b",
        "--mode",
        "inference",
        "--gpu",
        "l4",
        "--block_size=8192",
    ]);
    assert_eq!(code, 0, "{err}");
    let serves: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("vllm serve"))
        .collect();
    assert!(!serves.is_empty(), "{out}");
    for l in serves {
        assert!(
            l.trim_start()
                .starts_with("vllm serve meta-llama/Llama-3.1-8B "),
            "{l}"
        );
    }
    // A Hub id the user typed is kept as typed.
    let (_, out, _) = vramplan(&[
        "suggest",
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--mode",
        "inference",
        "--gpu",
        "l4",
    ]);
    assert!(
        out.contains("vllm serve meta-llama/Llama-3.1-8B-Instruct "),
        "{out}"
    );
}

#[test]
fn suggest_inference_with_svg_says_why_it_draws_nothing() {
    let svg = std::env::temp_dir().join(format!("vramplan-infer-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&svg);
    let (code, out, err) = vramplan(&[
        "suggest",
        "--model",
        "llama-3.2-1b",
        "--mode",
        "inference",
        "--gpu",
        "l4",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--svg") && err.contains("inference"), "{err}");
    assert!(!svg.exists());
}

#[test]
fn the_kv_cache_line_says_fp16_when_the_card_runs_float16() {
    // A T4 has no bf16: nanoGPT-style configs fall back to float16, and the cache follows the
    // weights' dtype.
    let (code, out, err) = vramplan(&[
        "check",
        "--model",
        "llama-3.2-1b",
        "--mode",
        "inference",
        "--gpu",
        "t4",
        "--batch_size=1",
        "--block_size=1024",
    ]);
    assert_eq!(code, 0, "{err}");
    let l = line(&out, "Inference:");
    assert!(l.contains("tokens of KV cache (fp16)"), "{l}");
    assert!(l.contains(", float16,"), "{l}");
    // Its bytes agree: 2 (k, v) x 16 layers x 8 kv heads x 64 head_dim x 1024 tokens x 2 bytes.
    let (_, v) = json(&[
        "check",
        "--json",
        "--model",
        "llama-3.2-1b",
        "--mode",
        "inference",
        "--gpu",
        "t4",
        "--batch_size=1",
        "--block_size=1024",
    ]);
    assert_eq!(v["runtime"]["kv_cache_dtype"], "fp16");
    assert_eq!(
        v["categories"]["kv_cache"].as_u64().unwrap(),
        2 * 16 * 8 * 64 * 1024 * 2
    );
}

#[test]
fn the_tensor_table_names_each_live_tensor_once() {
    let (code, v) = json(&[
        "check",
        "--json",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "h100",
        "--batch_size=1",
        "--compile=False",
    ]);
    assert!(code == 0 || code == 1);
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let grads = names.iter().filter(|n| **n == "lm_head.grad").count();
    assert!(grads <= 1, "lm_head.grad {grads} times: {names:?}");
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}

#[test]
fn one_micro_step_is_singular() {
    let (code, out, err) = vramplan(&[
        "check",
        "--gpu",
        "a100-40gb",
        "--world_size=8",
        "--gradient_accumulation_steps=8",
        "--compile=False",
    ]);
    assert!(code == 0 || code == 1, "{err}");
    let l = line(&out, "Per rank");
    assert!(l.contains(": 1 micro-step per rank per step"), "{l}");
    let (_, out, _) = vramplan(&[
        "check",
        "--gpu",
        "a100-40gb",
        "--world_size=8",
        "--gradient_accumulation_steps=16",
        "--compile=False",
    ]);
    assert!(line(&out, "Per rank").contains(": 2 micro-steps per rank"));
}

#[test]
fn an_empty_log_is_called_empty() {
    let dir = std::env::temp_dir();
    let empty = dir.join(format!("vramplan-empty-{}.log", std::process::id()));
    std::fs::write(&empty, "\n  \n").unwrap();
    let (code, out, err) = vramplan(&["diagnose", empty.to_str().unwrap()]);
    let _ = std::fs::remove_file(&empty);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is empty"), "{err}");
    assert!(!out.contains("Not a VRAM out-of-memory"), "{out}");
}

/// FlashAttention-2 needs sm80+: on a T4 (sm75), V100 (sm70) or P100 (sm60) SDPA runs the
/// memory-efficient kernel (or math with grouped-query attention), and the run line says so.
#[test]
fn cards_before_ampere_do_not_say_flash_attention() {
    for (gpu, cc) in [("t4", "7.5"), ("v100-16gb", "7.0"), ("p100", "6.0")] {
        let (_, out, err) = vramplan(&["check", "--gpu", gpu, "--compile=False"]);
        let run = line(&out, "Run ");
        assert!(!run.contains("flash"), "{gpu} (sm{cc}): {run}\n{err}");
        assert!(run.contains("memory-efficient attention"), "{gpu}: {run}");
    }
    // An sm80 card keeps flash.
    let (_, out, _) = vramplan(&["check", "--gpu", "a100-40gb", "--compile=False"]);
    assert!(line(&out, "Run ").contains("flash attention"));
}

/// The memory-efficient kernel's logsumexp is padded to 32 rows where flash's is not: at
/// block_size 1000 (not a multiple of 32), the same fp16 run on a T4 keeps padded rows.
#[test]
fn a_t4_simulates_the_memory_efficient_kernel_not_flash() {
    let args = |gpu: &'static str| {
        [
            "explain",
            "layer0.attn.sdpa.logsumexp",
            "--gpu",
            gpu,
            "--batch_size=1",
            "--block_size=1000",
            "--compile=False",
            "--dtype=float16",
        ]
    };
    let (code, t4, err) = vramplan(&args("t4"));
    assert_eq!(code, 0, "{err}");
    let (code, a100, err) = vramplan(&args("a100-40gb"));
    assert_eq!(code, 0, "{err}");
    // (B, nh, T) fp32: flash 1 x 12 x 1000 x 4 = 48000 bytes; efficient pads T to 1024.
    assert!(
        a100.lines().next().unwrap().contains("(1, 12, 1000)"),
        "{a100}"
    );
    assert!(t4.lines().next().unwrap().contains("(1, 12, 1024)"), "{t4}");
}

#[test]
fn explain_describes_every_row_check_prints() {
    for args in [
        &[
            "fixtures/configs/seed-rtx3060.py",
            "--gpu",
            "rtx3060",
            "--compile=False",
        ][..],
        &[
            "--model",
            "llama-3.1-8b",
            "--gpu",
            "h100",
            "--batch_size=1",
            "--compile=False",
        ][..],
    ] {
        let (_, v) = json(&[&["check", "--json"][..], args].concat());
        for t in v["tensors"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            let (code, out, err) = vramplan(&[&["explain", name][..], args].concat());
            assert_eq!(code, 0, "explain {name}: {err}");
            let first = out.lines().next().unwrap_or("");
            assert!(first.starts_with(name), "explain {name}: {first}");
            assert!(
                !out.contains("a tensor of"),
                "explain {name} has no description: {out}"
            );
        }
        // Untied Llama: explain must not call lm_head's weight wte's.
        let (_, out, _) = vramplan(&[&["explain", "lm_head.logits"][..], args].concat());
        assert!(!out.contains("the weight is wte"), "{out}");
    }
}

/// The README's LoRA numbers: each `$ vramplan check ...` line in the block, run as printed,
/// gives the verdict and peak on the line below it.
#[test]
fn the_readme_lora_commands_print_the_figures_beside_them() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    let mut checked = 0;
    for pair in lines.windows(2) {
        let Some(cmd) = pair[0].strip_prefix("$ vramplan check --model llama-3.1-8b") else {
            continue;
        };
        let Some((_, figure)) = pair[1].split_once(": ") else {
            continue;
        };
        let args: Vec<&str> = ["check", "--model", "llama-3.1-8b"]
            .into_iter()
            .chain(cmd.split_whitespace())
            .collect();
        let (code, out, err) = vramplan(&args);
        let verdict = line(&out, if code == 0 { "FITS" } else { "DOES NOT FIT" });
        let fits = figure.starts_with("FITS");
        assert_eq!(code == 0, fits, "{}: {verdict}\n{err}", pair[0]);
        let peak = figure
            .split("(peak ")
            .nth(1)
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no peak in {figure}"));
        assert!(
            verdict.contains(&format!("(peak {peak} on the device")),
            "{}: README says {peak}, the command prints: {verdict}",
            pair[0]
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "the README's LoRA block changed shape");
}
