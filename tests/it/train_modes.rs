//! Issue #12: pure half-precision training, float16 autocast with GradScaler, and the
//! optimizers people pick — each counted by hand on the tiny GPT-2 of tests/it/support/tiny_gpt.rs
//! (bias=False, n_layer 2, n_embd 128, vocab 1000, block_size 256; Ψ = 554624 parameters).

use crate::support::cli::vramplan;
use crate::support::sim::run;
use crate::support::tiny_gpt::{cfg, live_before, named, DECAY, NO_DECAY, PSI};
use vramplan::sim::timeline::EventKind;
use vramplan::sim::{Category, DType, Phase, Timeline};

/// The tiny model's parameter tensors in nanoGPT's optimizer order (configure_optimizers:
/// `named_parameters()` order, 2-D weights first; lm_head is tied to wte), as (out, in) or (n,).
fn param_shapes() -> Vec<Vec<u64>> {
    let (v, c, t) = (1000, 128, 256);
    let mut decay = vec![vec![v, c], vec![t, c]];
    let mut rest = Vec::new();
    for _ in 0..2 {
        // nn.Linear weights are (out_features, in_features).
        decay.extend([vec![3 * c, c], vec![c, c], vec![4 * c, c], vec![c, 4 * c]]);
        rest.extend([vec![c], vec![c]]);
    }
    rest.push(vec![c]);
    decay.extend(rest);
    decay
}

fn numel(s: &[u64]) -> u64 {
    s.iter().product()
}

#[test]
fn the_shapes_counted_here_are_the_tiny_model() {
    let shapes = param_shapes();
    assert_eq!(shapes.iter().map(|s| numel(s)).sum::<u64>(), PSI);
    let decay: u64 = shapes
        .iter()
        .filter(|s| s.len() == 2)
        .map(|s| numel(s))
        .sum();
    assert_eq!(decay, DECAY);
    assert_eq!(PSI - decay, NO_DECAY);
}

/// Bytes of every tensor of `cat` ever created.
fn created(tl: &Timeline, cat: Category) -> u64 {
    tl.tensors
        .iter()
        .filter(|t| t.category == cat)
        .map(|t| t.bytes)
        .sum()
}

/// The largest sum of live bytes of `cat` over the run.
fn peak_live(tl: &Timeline, cat: Category) -> u64 {
    let (mut live, mut peak) = (0u64, 0u64);
    for e in &tl.events {
        let r = &tl.tensors[e.tensor as usize];
        if r.category != cat {
            continue;
        }
        match e.kind {
            EventKind::Alloc => live += r.bytes,
            EventKind::Free => live -= r.bytes,
        }
        peak = peak.max(live);
    }
    peak
}

/// Bytes of the tensors whose name's `what` is `what`.
fn bytes_named(tl: &Timeline, what: &str) -> u64 {
    tl.tensors
        .iter()
        .filter(|t| t.name.what == what)
        .map(|t| t.bytes)
        .sum()
}

// --- pure half precision ---

#[test]
fn pure_bf16_keeps_weights_gradients_and_adamw_state_in_bf16() {
    let tensors = param_shapes().len() as u64;
    let pure = run(&cfg(&["--precision_mode=pure"]));
    // model.to(bfloat16): 2 bytes per parameter, no fp32 master copy.
    assert_eq!(created(&pure, Category::Parameters), 2 * PSI);
    // Autograd's gradients have the parameters' dtype: all .grad alive before the step.
    assert_eq!(
        live_before(&pure, Phase::Optimizer, &[Category::Gradients]),
        2 * PSI
    );
    // Fused AdamW: `torch.zeros_like(p)` for exp_avg and exp_avg_sq (bf16), `step` a 0-dim
    // fp32 tensor per parameter (torch/optim/adam.py, Adam._init_group).
    assert_eq!(
        created(&pure, Category::Optimizer),
        2 * 2 * PSI + 4 * tensors
    );
    // No autocast: no weight casts at all.
    assert!(pure.tensors.iter().all(|t| t.name.what != "weight_cast"));

    // The same run in mixed precision: fp32 everywhere the optimizer looks.
    let mixed = run(&cfg(&[]));
    assert_eq!(created(&mixed, Category::Parameters), 4 * PSI);
    assert_eq!(
        live_before(&mixed, Phase::Optimizer, &[Category::Gradients]),
        4 * PSI
    );
    assert_eq!(
        created(&mixed, Category::Optimizer),
        2 * 4 * PSI + 4 * tensors
    );
    assert!(mixed.tensors.iter().any(|t| t.name.what == "weight_cast"));
}

#[test]
fn pure_bf16_loss_has_no_fp32_copy_of_the_log_probs() {
    // nanoGPT's F.cross_entropy on bf16 logits without autocast: log_softmax in bf16 and
    // nll_loss on it (no autocast fp32 cast). B·T = 4·256 rows of V = 1000.
    let pure = run(&cfg(&["--precision_mode=pure"]));
    let lp: Vec<u64> = named(&pure, "loss", "log_probs")
        .iter()
        .map(|&i| pure.tensors[i].bytes)
        .collect();
    assert!(!lp.is_empty());
    assert!(lp.iter().all(|&b| b == 4 * 256 * 1000 * 2), "{lp:?}");
    assert!(named(&pure, "loss", "log_probs_fp32").is_empty());
    let mixed = run(&cfg(&[]));
    assert!(!named(&mixed, "loss", "log_probs_fp32").is_empty());
}

#[test]
fn pure_float16_is_half_too_and_runs_no_grad_scaler() {
    let pure = run(&cfg(&["--precision_mode=pure", "--dtype=float16"]));
    assert!(pure
        .tensors
        .iter()
        .filter(|t| t.category == Category::Parameters)
        .all(|t| t.dtype == DType::F16));
    assert!(named(&pure, "grad_scaler", "_scale").is_empty());
}

#[test]
fn pure_float32_is_plain_float32() {
    let a = run(&cfg(&["--precision_mode=pure", "--dtype=float32"]));
    let b = run(&cfg(&["--dtype=float32"]));
    assert_eq!(a.tensors.len(), b.tensors.len());
    assert_eq!(
        created(&a, Category::Optimizer),
        created(&b, Category::Optimizer)
    );
}

// --- float16 mixed precision: GradScaler (torch/amp/grad_scaler.py) ---

/// Tensors named `grad_scaler.what`: (count, bytes each).
fn scaler(tl: &Timeline, what: &str) -> (usize, Vec<u64>) {
    let ids = named(tl, "grad_scaler", what);
    let b = ids.iter().map(|&i| tl.tensors[i].bytes).collect();
    (ids.len(), b)
}

#[test]
fn fp16_autocast_runs_grad_scaler_with_clipping() {
    // Default grad_clip = 1.0: train.py calls scaler.unscale_(optimizer) before clipping; the
    // fused AdamW then only gets found_inf (grad_scale is None once unscaled).
    let tl = run(&cfg(&["--dtype=float16"]));
    // _lazy_init_scale_growth_tracker: once, alive to the end: fp32 and int32 0-dim tensors.
    assert_eq!(scaler(&tl, "_scale"), (1, vec![4]));
    assert_eq!(scaler(&tl, "_growth_tracker"), (1, vec![4]));
    let scale = named(&tl, "grad_scaler", "_scale")[0] as u32;
    assert!(!tl
        .events
        .iter()
        .any(|e| e.tensor == scale && e.kind == EventKind::Free));
    // `outputs * scale` once per simulated micro-step: 2 steps × 2 micro-steps.
    assert_eq!(scaler(&tl, "scaled_loss"), (4, vec![4; 4]));
    // unscale_ per step: `_scale.double().reciprocal().float()` = two fp64 and one fp32 scalar.
    assert_eq!(scaler(&tl, "inv_scale"), (6, vec![8, 8, 4, 8, 8, 4]));
    // found_inf master, then the fused step's `sum([...])`; the replicator's copies.
    assert_eq!(scaler(&tl, "found_inf").0, 4);
    assert_eq!(scaler(&tl, "found_inf_per_device").0, 2);
    assert_eq!(scaler(&tl, "inv_scale_per_device").0, 2);
    assert_eq!(scaler(&tl, "grad_scale").0, 0);
    assert_eq!(scaler(&tl, "dummy_inv_scale").0, 0);
    // update() resets _per_optimizer_states: the found_inf copy is freed in the optimizer phase.
    for t in named(&tl, "grad_scaler", "found_inf_per_device") {
        let free = tl
            .events
            .iter()
            .find(|e| e.tensor as usize == t && e.kind == EventKind::Free)
            .expect("found_inf copy freed");
        assert_eq!(free.phase, Phase::Optimizer);
    }
}

#[test]
fn fp16_autocast_without_clipping_checks_infs_inside_step() {
    // No unscale_: scaler.step runs _check_inf_per_device (a 1.0 dummy inv_scale and found_inf)
    // and hands the fused AdamW grad_scale = `scaler * 1` and found_inf = `sum([...])`.
    let tl = run(&cfg(&["--dtype=float16", "--grad_clip=0.0"]));
    assert_eq!(scaler(&tl, "inv_scale").0, 0);
    assert_eq!(scaler(&tl, "dummy_inv_scale").0, 2);
    assert_eq!(scaler(&tl, "grad_scale").0, 2);
    assert_eq!(scaler(&tl, "found_inf").0, 4);
    // A non-fused optimizer (SGD foreach) is unscaled by step() itself, as unscale_ does.
    let sgd = run(&cfg(&[
        "--dtype=float16",
        "--grad_clip=0.0",
        "--optimizer=sgd",
    ]));
    assert_eq!(scaler(&sgd, "inv_scale").0, 6);
    assert_eq!(scaler(&sgd, "grad_scale").0, 0);
}

#[test]
fn bf16_autocast_has_no_grad_scaler() {
    let tl = run(&cfg(&[]));
    assert!(tl.tensors.iter().all(|t| t.name.module != "grad_scaler"));
}

// --- optimizers (mixed precision: fp32 parameters and gradients) ---

#[test]
fn adamw_foreach_keeps_step_on_the_host_and_a_sqrt_per_parameter_of_the_group() {
    let tl = run(&cfg(&["--optimizer=adamw_foreach"]));
    // `step` is `torch.tensor(0.0)` on the CPU: only the two fp32 moments on the device.
    let state: u64 = tl
        .tensors
        .iter()
        .filter(|t| {
            t.category == Category::Optimizer
                && t.name.what.starts_with("adam.exp_avg")
                && t.name.what != "adam.exp_avg_sq_sqrt"
        })
        .map(|t| t.bytes)
        .sum();
    assert_eq!(state, 8 * PSI);
    assert!(named(&tl, "", "adam.step").is_empty());
    assert!(tl.tensors.iter().all(|t| t.name.what != "adam.step"));
    // `_foreach_sqrt(device_exp_avg_sqs)` per param group, per step: 2 steps × Ψ fp32.
    assert_eq!(bytes_named(&tl, "adam.exp_avg_sq_sqrt"), 2 * 4 * PSI);
    // Largest optimizer footprint: the second step, all state plus the decay group's sqrt list.
    assert_eq!(peak_live(&tl, Category::Optimizer), 8 * PSI + 4 * DECAY);
}

#[test]
fn adamw_single_tensor_holds_one_denominator_and_the_next_ones_pieces() {
    let tl = run(&cfg(&["--optimizer=adamw_single"]));
    // Per parameter: sqrt and the quotient alive together while the previous parameter's
    // `denom` is still bound (the first of a group has none).
    let shapes = param_shapes();
    let mut worst = 0u64;
    for group in [true, false] {
        let sizes: Vec<u64> = shapes
            .iter()
            .filter(|s| (s.len() == 2) == group)
            .map(|s| numel(s))
            .collect();
        for (i, &n) in sizes.iter().enumerate() {
            let prev = if i == 0 { 0 } else { sizes[i - 1] };
            worst = worst.max(4 * (prev + 2 * n));
        }
    }
    assert_eq!(peak_live(&tl, Category::Optimizer), 8 * PSI + worst);
}

#[test]
fn fused_adamw_allocates_nothing_in_its_step() {
    let tensors = param_shapes().len() as u64;
    let tl = run(&cfg(&[]));
    assert_eq!(peak_live(&tl, Category::Optimizer), 8 * PSI + 4 * tensors);
}

#[test]
fn paged_adamw_leaves_large_states_to_unified_memory() {
    // bitsandbytes get_state_buffer: parameters of >= 1e5 elements get paged buffers
    // (cudaMallocManaged, outside PyTorch's allocator): here only wte (128000). Every other
    // parameter's two fp32 states are torch.zeros on the device.
    let tl = run(&cfg(&["--optimizer=paged_adamw"]));
    let paged = 1000 * 128;
    assert_eq!(created(&tl, Category::Optimizer), 8 * (PSI - paged));
    let recorded: Vec<_> = tl
        .tensors
        .iter()
        .filter(|t| t.name.what.ends_with("(paged)"))
        .collect();
    assert_eq!(recorded.len(), 2);
    assert!(recorded
        .iter()
        .all(|t| t.bytes == 0 && t.shape.numel() == Some(paged)));
}

#[test]
fn paged_adamw8bit_pages_the_uint8_states_and_keeps_absmax_on_the_device() {
    let tl = run(&cfg(&["--optimizer=paged_adamw8bit"]));
    let want: u64 = param_shapes()
        .iter()
        .map(|s| {
            let n = numel(s);
            match n {
                // paged uint8 moments (not counted) + two fp32 absmax vectors.
                n if n >= 100_000 => 2 * 4 * n.div_ceil(256),
                n if n >= 4096 => 2 * (n + 4 * n.div_ceil(256)),
                n => 2 * 4 * n,
            }
        })
        .sum();
    assert_eq!(created(&tl, Category::Optimizer), want);
}

#[test]
fn lion_keeps_one_fp32_moment() {
    // bitsandbytes Lion (Optimizer1State, 32-bit): state1 only, fp32 whatever the param.
    let tl = run(&cfg(&["--optimizer=lion"]));
    assert_eq!(created(&tl, Category::Optimizer), 4 * PSI);
    let pure = run(&cfg(&["--optimizer=lion", "--precision_mode=pure"]));
    assert_eq!(created(&pure, Category::Optimizer), 4 * PSI);
}

#[test]
fn sgd_momentum_and_the_weight_decay_sums_of_the_decay_group() {
    // _multi_tensor_sgd: weight_decay != 0 makes `torch._foreach_add(grads, params)` — new
    // tensors for the decay group (weight_decay 0.1) at each step; the other group has 0.
    let tl = run(&cfg(&["--optimizer=sgd"]));
    assert_eq!(bytes_named(&tl, "sgd.momentum"), 4 * PSI);
    assert_eq!(bytes_named(&tl, "sgd.grad_plus_decay"), 2 * 4 * DECAY);
    let no_wd = run(&cfg(&["--optimizer=sgd", "--weight_decay=0.0"]));
    assert_eq!(bytes_named(&no_wd, "sgd.grad_plus_decay"), 0);
    // The momentum buffer is a clone of the gradient: bf16 when the model is.
    let pure = run(&cfg(&["--optimizer=sgd", "--precision_mode=pure"]));
    assert_eq!(bytes_named(&pure, "sgd.momentum"), 2 * PSI);
}

#[test]
fn adafactor_factors_the_second_moment_of_matrices() {
    // transformers' Adafactor: exp_avg_sq_row (out,) + exp_avg_sq_col (in,) for a matrix,
    // exp_avg_sq for a vector, fp32; plus state["RMS"], a 0-dim fp32 tensor per parameter.
    let shapes = param_shapes();
    let moments: u64 = shapes
        .iter()
        .map(|s| {
            if s.len() == 2 {
                4 * (s[0] + s[1])
            } else {
                4 * s[0]
            }
        })
        .sum();
    let tl = run(&cfg(&["--optimizer=adafactor"]));
    let state = |tl: &Timeline| -> u64 {
        [
            "adafactor.exp_avg_sq_row",
            "adafactor.exp_avg_sq_col",
            "adafactor.exp_avg_sq",
        ]
        .iter()
        .map(|w| bytes_named(tl, w))
        .sum()
    };
    assert_eq!(state(&tl), moments);
    // RMS is replaced at each of the 2 steps: 2 × 15 scalars created, 15 alive at the end.
    assert_eq!(
        bytes_named(&tl, "adafactor.RMS"),
        2 * 4 * shapes.len() as u64
    );
    // fp32 parameters: no fp32 copies of grad or parameter.
    assert_eq!(bytes_named(&tl, "adafactor.grad_fp32"), 0);
    // Pure bf16: `grad.float()` and `p.float()` of each parameter, at each step.
    let pure = run(&cfg(&["--optimizer=adafactor", "--precision_mode=pure"]));
    assert_eq!(bytes_named(&pure, "adafactor.grad_fp32"), 2 * 4 * PSI);
    assert_eq!(bytes_named(&pure, "adafactor.param_fp32"), 2 * 4 * PSI);
    assert_eq!(state(&pure), moments);
}

// --- from the user's side ---

#[test]
fn check_names_pure_precision_on_the_run_line() {
    let (code, out, err) = vramplan(&[
        "check",
        "--model",
        "gpt2",
        "--gpu",
        "h100-80gb",
        "--compile=False",
        "--precision_mode=pure",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let run_line = out.lines().find(|l| l.starts_with("Run ")).unwrap_or("");
    assert!(run_line.contains("bfloat16 pure"), "{run_line}");
    let (code, out, _) = vramplan(&[
        "check",
        "--model",
        "gpt2",
        "--gpu",
        "h100-80gb",
        "--compile=False",
        "--dtype=float16",
    ]);
    assert_eq!(code, 0);
    let run_line = out.lines().find(|l| l.starts_with("Run ")).unwrap_or("");
    assert!(
        run_line.contains("float16 autocast + GradScaler"),
        "{run_line}"
    );
}

#[test]
fn bad_precision_mode_and_unmodelled_combinations_are_one_line_errors() {
    let (code, out, err) = vramplan(&["check", "--model", "gpt2", "--precision_mode=half"]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("precision_mode") && err.contains("'mixed', 'pure'"),
        "{err}"
    );
    let (code, _, err) = vramplan(&[
        "check",
        "--model",
        "llama-3.2-1b",
        "--lora_rank=8",
        "--precision_mode=pure",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("precision_mode = 'pure'") && err.contains("LoRA"),
        "{err}"
    );
    let (code, _, err) = vramplan(&[
        "check",
        "--model",
        "gpt2",
        "--world_size=2",
        "--parallelism=zero2",
        "--optimizer=adafactor",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("optimizer = 'adafactor'") && err.contains("zero2"),
        "{err}"
    );
    let (code, _, err) = vramplan(&["check", "--model", "gpt2", "--optimizer=adam_paged"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'paged_adamw8bit'"), "{err}");
}

// --- activation checkpointing of every k-th block (torchtitan's selective layer AC) ---

/// (what, bytes) of each tensor of block `layer` alive right before the first backward event,
/// sorted: what that block keeps for its backward.
fn kept_by_layer(tl: &Timeline, layer: u32) -> Vec<(String, u64)> {
    let first_backward = tl
        .events
        .iter()
        .position(|e| e.phase == Phase::Backward)
        .expect("a backward");
    let mut kept: Vec<(String, u64)> = tl
        .live_after(first_backward - 1)
        .into_iter()
        .map(|t| &tl.tensors[t as usize])
        .filter(|r| r.name.layer == Some(layer) && r.category != Category::Parameters)
        .map(|r| (r.name.to_string(), r.bytes))
        .collect();
    kept.sort();
    kept
}

#[test]
fn checkpoint_every_second_block_wraps_the_second_and_fourth() {
    // torchtitan: `_count += 1; if _count % ac_freq == 0: checkpoint` — with k = 2 the blocks
    // counted 2 and 4, i.e. layers 1 and 3. Of a wrapped block's own tensors only its output
    // stays (the fp32 residual stream, B·T·C·4 bytes, held by what follows it); an unwrapped
    // block keeps what it keeps without AC.
    let output = |l: u32| vec![(format!("layer{l}.resid_mlp"), 4 * 256 * 128 * 4)];
    let every2 = run(&cfg(&[
        "--n_layer=4",
        "--activation_checkpointing=True",
        "--checkpoint_every=2",
    ]));
    let none = run(&cfg(&["--n_layer=4"]));
    for l in [0, 2] {
        assert!(!kept_by_layer(&none, l).is_empty());
        assert_eq!(
            kept_by_layer(&every2, l),
            kept_by_layer(&none, l),
            "layer {l}"
        );
    }
    for l in [1, 3] {
        assert_eq!(kept_by_layer(&every2, l), output(l), "layer {l}");
    }
    // k = 1 is every block, as activation_checkpointing alone.
    let all = run(&cfg(&["--n_layer=4", "--activation_checkpointing=True"]));
    let every1 = run(&cfg(&[
        "--n_layer=4",
        "--activation_checkpointing=True",
        "--checkpoint_every=1",
    ]));
    assert_eq!(all.tensors.len(), every1.tensors.len());
    for l in 0..4 {
        assert_eq!(kept_by_layer(&all, l), output(l), "layer {l}");
    }
}

#[test]
fn checkpoint_every_zero_is_a_one_line_error() {
    let (code, _, err) = vramplan(&[
        "check",
        "--model",
        "gpt2",
        "--activation_checkpointing=True",
        "--checkpoint_every=0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("checkpoint_every = 0"), "{err}");
}

/// TRL's `torch_dtype: bfloat16` without PEFT and without `bf16: true`: the Trainer runs no
/// autocast over bf16 parameters and AdamW keeps bf16 state — pure bf16 training (issue #12
/// item 1). With `bf16: true` as well it is autocast over half weights, which is refused.
#[test]
fn trl_half_weights_without_autocast_are_pure_half_training() {
    use crate::support::cli::json;
    use crate::support::hostile::{refused, temp};
    let pure = temp(
        "trl_pure.json",
        br#"{"per_device_train_batch_size": 1, "torch_dtype": "bfloat16"}"#,
    );
    let (code, v) = json(&["check", &pure, "--model", "llama-3.2-1b", "--json"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["config"]["precision_mode"], "pure");
    assert_eq!(v["config"]["dtype"], "bfloat16");
    let mixed = temp(
        "trl_autocast_half.json",
        br#"{"per_device_train_batch_size": 1, "torch_dtype": "bfloat16", "bf16": true}"#,
    );
    refused(
        &["check", &mixed, "--model", "llama-3.2-1b"],
        &["torch_dtype", "autocast"],
    );
}
