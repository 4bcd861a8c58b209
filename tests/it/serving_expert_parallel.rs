//! vLLM's expert parallelism (`--enable-expert-parallel`, key `enable_expert_parallel`), read
//! in vLLM 0.10.1 model_executor/layers/fused_moe/layer.py: `determine_expert_map` gives rank
//! r of ep = tensor_parallel_size ranks `E // ep` experts, one more where `r < E % ep`, each
//! at full width, where without it every rank holds all E experts at width / tp. The rank
//! holding the most is simulated; the router, attention and the shared expert are as
//! without it.

use crate::support::cli::{json, vramplan};

const QWEN: &[&str] = &[
    "check",
    "--json",
    "--model",
    "qwen1.5-moe-a2.7b",
    "--mode=inference",
    "--dtype=bfloat16",
    "--gpu",
    "a100-80gb",
    "--block_size=4096",
    "--batch_size=1",
];

fn served(extra: &[&str]) -> serde_json::Value {
    let (code, v) = json(&[QWEN, extra].concat());
    assert!(code == 0 || code == 1, "{v}");
    v["vllm"].clone()
}

#[test]
fn expert_parallel_ranks_hold_whole_experts() {
    // Qwen1.5-MoE-A2.7B (config.json): 24 layers of 60 experts, hidden 2048, expert width
    // 1408, bf16. Over 8 ranks: 60 = 8·7 + 4, so ranks 0-3 hold 8 experts and 4-7 hold 7
    // (8, 8, 8, 8, 7, 7, 7, 7: 60); the rank simulated holds 8 at full width. Without
    // expert parallelism every rank holds 60 experts of width 1408 / 8 = 176.
    let per_rank: Vec<u64> = (0..8).map(|r| 60 / 8 + u64::from(r < 60 % 8)).collect();
    assert_eq!(per_rank, [8, 8, 8, 8, 7, 7, 7, 7]);
    assert_eq!(per_rank.iter().sum::<u64>(), 60);
    // Each tensor in the caching allocator's blocks: a tensor of 10 MiB or more takes a
    // 2 MiB-rounded segment when that leaves at most 1 MiB over (src/plan/vllm weights line).
    let mib = 1u64 << 20;
    let large = |b: u64| {
        let segment = b.div_ceil(2 * mib) * 2 * mib;
        if segment - b <= mib {
            segment
        } else {
            b
        }
    };
    let (c, bf16) = (2048u64, 2u64);
    // gate_up_proj (E, 2I, C) and down_proj (E, C, I) per layer.
    let experts = |e: u64, i: u64| large(e * 2 * i * c * bf16) + large(e * c * i * bf16);
    let ep = experts(8, 1408);
    let tp = experts(60, 176);
    assert_eq!(ep, 8 * 3 * 1408 * 2048 * 2); // 138,412,032: whole 2 MiB segments
    assert_eq!(tp, 86_507_520 + 44_040_192); // down_proj rounds up to its segment
    let tp8 = ["--tensor_parallel_size=8"];
    let without = served(&tp8);
    let with = served(&[&tp8[..], &["--enable_expert_parallel=True"]].concat());
    let bytes = |v: &serde_json::Value| v["weights_bytes"].as_u64().unwrap();
    assert_eq!(bytes(&with) - bytes(&without), 24 * (ep - tp));
    assert_eq!(with["expert_parallel"], true);
    // Over 4 ranks the 60 experts divide evenly: 15 whole experts hold what 60 quarter-width
    // ones do, byte for byte.
    let tp4 = ["--tensor_parallel_size=4"];
    let ep4 = served(&[&tp4[..], &["--enable_expert_parallel=True"]].concat());
    assert_eq!(bytes(&ep4), bytes(&served(&tp4)));
    assert_eq!(experts(15, 1408), experts(60, 352));
}

#[test]
fn expert_parallel_is_said_and_refused_without_experts() {
    let (code, out, err) = vramplan(&[
        "check",
        "--model",
        "qwen1.5-moe-a2.7b",
        "--mode=inference",
        "--gpu",
        "a100-80gb",
        "--tensor_parallel_size=8",
        "--enable_expert_parallel=True",
    ]);
    assert!(code == 0 || code == 1, "{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("each holds 7 or 8 whole experts of the 60")
            && all.contains("the rank simulated holds 8"),
        "{all}"
    );
    let (code, _, err) = vramplan(&[
        "check",
        "--model",
        "llama-3.2-1b",
        "--mode=inference",
        "--enable_expert_parallel=True",
    ]);
    assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");
    assert!(
        err.contains("enable_expert_parallel = True: expected False for a model without experts"),
        "{err}"
    );
}
