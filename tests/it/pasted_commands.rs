//! Commands vramplan prints are meant to be pasted: each must be one its target program
//! accepts as printed, and each fix must carry every change it is named after.
//!
//! The flag lists below are written from each program's documented arguments:
//! torchrun (torch/distributed/run.py, `torchrun --help`), `accelerate launch`
//! (accelerate/commands/launch.py), the `deepspeed` launcher (deepspeed/launcher/runner.py),
//! `vllm serve` (vLLM's engine arguments), nvidia-smi and llama-server for the generic fixes,
//! vramplan itself (run: a usage error exits 2), and
//! nanoGPT's train.py with its configurator.py: a config file (no `=`), then `--key=value` for
//! a global of train.py whose Python type `ast.literal_eval(value)` (or the string) matches.

use crate::support::cli::{json, vramplan};
use serde_json::Value;

/// One program's options: (flag, takes a value).
type Flags = &'static [(&'static str, bool)];

const TORCHRUN: Flags = &[
    ("--nnodes", true),
    ("--nproc_per_node", true),
    ("--nproc-per-node", true),
    ("--rdzv_backend", true),
    ("--rdzv-backend", true),
    ("--rdzv_endpoint", true),
    ("--rdzv-endpoint", true),
    ("--rdzv_id", true),
    ("--rdzv-id", true),
    ("--rdzv_conf", true),
    ("--rdzv-conf", true),
    ("--standalone", false),
    ("--max_restarts", true),
    ("--max-restarts", true),
    ("--monitor_interval", true),
    ("--start_method", true),
    ("--role", true),
    ("--module", false),
    ("-m", false),
    ("--no_python", false),
    ("--run_path", false),
    ("--log_dir", true),
    ("--redirects", true),
    ("--tee", true),
    ("--node_rank", true),
    ("--node-rank", true),
    ("--master_addr", true),
    ("--master-addr", true),
    ("--master_port", true),
    ("--master-port", true),
    ("--local_addr", true),
];

const ACCELERATE_LAUNCH: Flags = &[
    ("--config_file", true),
    ("--quiet", false),
    ("--cpu", false),
    ("--multi_gpu", false),
    ("--mixed_precision", true),
    ("--num_processes", true),
    ("--num_machines", true),
    ("--num_cpu_threads_per_process", true),
    ("--dynamo_backend", true),
    ("--use_deepspeed", false),
    ("--use_fsdp", false),
    ("--use_megatron_lm", false),
    ("--gpu_ids", true),
    ("--same_network", false),
    ("--machine_rank", true),
    ("--main_process_ip", true),
    ("--main_process_port", true),
    ("--deepspeed_config_file", true),
    ("--zero_stage", true),
    ("--gradient_accumulation_steps", true),
    ("--fsdp_version", true),
    ("--fsdp_offload_params", true),
    ("--fsdp_min_num_params", true),
    ("--fsdp_sharding_strategy", true),
    ("--fsdp_auto_wrap_policy", true),
    ("--fsdp_transformer_layer_cls_to_wrap", true),
    ("--fsdp_backward_prefetch", true),
    ("--fsdp_state_dict_type", true),
    ("--fsdp_use_orig_params", true),
    ("--fsdp_cpu_ram_efficient_loading", true),
    ("--fsdp_sync_module_states", true),
    ("--fsdp_activation_checkpointing", true),
];

const DEEPSPEED: Flags = &[
    ("-H", true),
    ("--hostfile", true),
    ("-i", true),
    ("--include", true),
    ("-e", true),
    ("--exclude", true),
    ("--num_nodes", true),
    ("--num_gpus", true),
    ("--num_accelerators", true),
    ("--master_port", true),
    ("--master_addr", true),
    ("--node_rank", true),
    ("--launcher", true),
    ("--launcher_args", true),
    ("--module", false),
    ("--no_python", false),
    ("--no_local_rank", false),
    ("--no_ssh_check", false),
    ("--force_multi", false),
    ("--save_pid", false),
    ("--enable_each_rank_log", true),
    ("--autotuning", true),
    ("--elastic_training", false),
    ("--bind_cores_to_rank", false),
    ("--bind_core_list", true),
    ("--ssh_port", true),
];

const VLLM_SERVE: Flags = &[
    ("--host", true),
    ("--port", true),
    ("--dtype", true),
    ("--max-model-len", true),
    ("--gpu-memory-utilization", true),
    ("--max-num-seqs", true),
    ("--max-num-batched-tokens", true),
    ("--kv-cache-dtype", true),
    ("--enforce-eager", false),
    ("--quantization", true),
    ("--tensor-parallel-size", true),
    ("--pipeline-parallel-size", true),
    ("--block-size", true),
    ("--swap-space", true),
    ("--cpu-offload-gb", true),
    ("--enable-prefix-caching", false),
    ("--trust-remote-code", false),
    ("--served-model-name", true),
    ("--load-format", true),
];

const NVIDIA_SMI: Flags = &[("--query-compute-apps", true), ("--format", true)];

const LLAMA_SERVER: Flags = &[
    ("-m", true),
    ("-ngl", true),
    ("-c", true),
    ("-ub", true),
    ("-b", true),
];

/// nanoGPT's train.py globals that its configurator overrides, with their Python types.
const TRAIN_PY_GLOBALS: &[(&str, &str)] = &[
    ("out_dir", "str"),
    ("eval_interval", "int"),
    ("log_interval", "int"),
    ("eval_iters", "int"),
    ("eval_only", "bool"),
    ("always_save_checkpoint", "bool"),
    ("init_from", "str"),
    ("wandb_log", "bool"),
    ("wandb_project", "str"),
    ("wandb_run_name", "str"),
    ("dataset", "str"),
    ("gradient_accumulation_steps", "int"),
    ("batch_size", "int"),
    ("block_size", "int"),
    ("n_layer", "int"),
    ("n_head", "int"),
    ("n_embd", "int"),
    ("dropout", "float"),
    ("bias", "bool"),
    ("learning_rate", "float"),
    ("max_iters", "int"),
    ("weight_decay", "float"),
    ("grad_clip", "float"),
    ("decay_lr", "bool"),
    ("warmup_iters", "int"),
    ("lr_decay_iters", "int"),
    ("min_lr", "float"),
    ("backend", "str"),
    ("device", "str"),
    ("dtype", "str"),
    ("compile", "bool"),
];

/// The Python type `ast.literal_eval(text)` gives, or "str" where it raises (configurator.py
/// then keeps the string).
fn literal_type(text: &str) -> &'static str {
    match text {
        "True" | "False" => "bool",
        _ if text.parse::<i64>().is_ok() => "int",
        _ if text.parse::<f64>().is_ok() && text.chars().any(|c| c.is_ascii_digit()) => "float",
        _ => "str",
    }
}

/// nanoGPT's configurator.py over train.py's arguments; Err says which argument it rejects.
fn nanogpt_args(args: &[&str]) -> Result<(), String> {
    for arg in args {
        match arg.split_once('=') {
            None if arg.starts_with("--") => {
                return Err(format!("{arg}: asserts `not arg.startswith('--')`"))
            }
            None if arg.ends_with(".py") => {}
            None => return Err(format!("{arg}: not a python config file")),
            Some((key, value)) => {
                let key = key
                    .strip_prefix("--")
                    .ok_or_else(|| format!("{arg}: asserts arg.startswith('--')"))?;
                if value.contains('=') {
                    return Err(format!("{arg}: `key, val = arg.split('=')` fails"));
                }
                let ty = TRAIN_PY_GLOBALS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .ok_or_else(|| format!("{arg}: Unknown config key: {key}"))?
                    .1;
                if literal_type(value) != ty {
                    return Err(format!("{arg}: {} is not a {ty}", literal_type(value)));
                }
            }
        }
    }
    Ok(())
}

/// Options of a program, up to its first positional argument; the rest is returned.
fn options<'a>(program: &str, flags: Flags, words: &'a [&'a str]) -> Result<&'a [&'a str], String> {
    let mut i = 0;
    while i < words.len() && words[i].starts_with('-') {
        let (flag, inline) = match words[i].split_once('=') {
            Some((f, _)) => (f, true),
            None => (words[i], false),
        };
        let takes = flags
            .iter()
            .find(|(f, _)| *f == flag)
            .ok_or_else(|| format!("{program} has no option {flag}"))?
            .1;
        if inline && !takes {
            return Err(format!("{program}: {flag} takes no value"));
        }
        i += if takes && !inline { 2 } else { 1 };
    }
    if i > words.len() {
        return Err(format!("{program}: the last option lacks its value"));
    }
    Ok(&words[i..])
}

/// A training script and its arguments: train.py takes nanoGPT's configurator arguments.
fn script(launcher: &str, rest: &[&str]) -> Result<(), String> {
    match rest.split_first() {
        Some((&"train.py", args)) => nanogpt_args(args),
        Some((other, _)) => Err(format!("{launcher} launches {other}, not train.py")),
        None => Err(format!("{launcher}: no script")),
    }
}

/// Whether the program a printed command names accepts it as printed.
fn accepted(command: &str) -> Result<(), String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    // Environment assignments first (VAR=value).
    let start = words
        .iter()
        .position(|w| {
            !(w.contains('=') && w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        })
        .ok_or("only environment assignments")?;
    let words = &words[start..];
    match words {
        ["python", rest @ ..] => script("python", rest),
        ["torchrun", rest @ ..] => script("torchrun", options("torchrun", TORCHRUN, rest)?),
        ["accelerate", "launch", rest @ ..] => script(
            "accelerate launch",
            options("accelerate launch", ACCELERATE_LAUNCH, rest)?,
        ),
        ["deepspeed", rest @ ..] => script("deepspeed", options("deepspeed", DEEPSPEED, rest)?),
        ["vllm", "serve", model, rest @ ..] if !model.starts_with('-') => {
            match options("vllm serve", VLLM_SERVE, rest)? {
                [] => Ok(()),
                extra => Err(format!("vllm serve: unexpected {extra:?}")),
            }
        }
        ["nvidia-smi", rest @ ..] => options("nvidia-smi", NVIDIA_SMI, rest).map(|_| ()),
        ["llama-server", rest @ ..] => options("llama-server", LLAMA_SERVER, rest).map(|_| ()),
        // vramplan's own commands: the real program decides (2 = a usage error).
        ["vramplan", rest @ ..] => match vramplan(rest) {
            (2, _, err) => Err(err),
            _ => Ok(()),
        },
        _ => Err("no program this test knows".to_string()),
    }
}

/// Every command string under `key` anywhere in `v`.
fn commands_in(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == key => out.push(s.clone()),
                    Value::Array(a) if k == key => {
                        out.extend(a.iter().filter_map(|s| s.as_str().map(str::to_string)))
                    }
                    _ => commands_in(x, key, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| commands_in(x, key, out)),
        _ => {}
    }
}

const SEED_LOG: &str = "fixtures/oom/seed-nanogpt-rtx3060.log";
const SEED_CONFIG: &str = "fixtures/configs/seed-rtx3060.py";

/// The checker itself rejects what the programs reject.
#[test]
fn the_checker_rejects_what_the_programs_reject() {
    for bad in [
        "deepspeed --num_gpus 4 train.py --deepspeed ds_config.json",
        "accelerate launch --num_processes 2 --use_fsdp --fsdp_sharding_strategy FULL_SHARD train.py --batch_size=8 --deepspeed",
        "python train.py --grad_clip=1",
        "python train.py --flash=False",
        "torchrun --nproc_per_node 2 train.py --batch_size 8",
        "vllm serve MODEL --gpu_memory_utilization 0.9",
    ] {
        assert!(accepted(bad).is_err(), "{bad}");
    }
    for good in [
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python train.py config/x.py --batch_size=8 --compile=False --grad_clip=1.0",
        "torchrun --standalone --nproc_per_node=4 train.py --init_from=gpt2-xl",
        "vllm serve meta-llama/Llama-3.1-8B --gpu-memory-utilization 0.90 --max-model-len 1024 --enforce-eager",
    ] {
        assert_eq!(accepted(good), Ok(()), "{good}");
    }
}

/// suggest (one card and several), diagnose and the inference plan: every command they print
/// parses against its program's documented flags. nanoGPT has only DDP, so its multi-GPU lines
/// launch with torchrun and name the train.py change for the sharded modes.
#[test]
fn every_printed_command_is_accepted_by_its_program() {
    let mut commands = Vec::new();
    let runs: [&[&str]; 5] = [
        &[
            "suggest",
            "--json",
            SEED_CONFIG,
            "--gpu",
            "rtx3060",
            "--compile=False",
        ],
        &[
            "suggest",
            "--json",
            "--gpu",
            "rtx4090",
            "--init_from=gpt2-xl",
            "--compile=False",
            "--gpus",
            "4",
        ],
        &[
            "diagnose",
            "--json",
            SEED_LOG,
            "--config",
            SEED_CONFIG,
            "--compile=False",
        ],
        // A Trainer run over several GPUs: accelerate (FSDP) and deepspeed (ZeRO) lines. A
        // model alone takes the Trainer's defaults (fp32): bf16=True as a Trainer user writes it.
        &[
            "suggest",
            "--json",
            "--model",
            "llama-3.2-1b",
            "--gpu",
            "rtx3060",
            "--compile=False",
            "--dtype=bfloat16",
            "--gpus",
            "4",
            "--batch_size=1",
            "--block_size=512",
        ],
        &[
            "suggest",
            "--json",
            "--model",
            "llama-3.1-8b",
            "--mode",
            "inference",
            "--gpu",
            "a100-80gb",
        ],
    ];
    for args in runs {
        let (_, mut v) = json(args);
        // The top level's "command" is the subcommand that printed the JSON (schema), not a
        // command line.
        if let Some(m) = v.as_object_mut() {
            m.remove("command");
        }
        for key in ["command", "launch", "vllm_commands"] {
            commands_in(&v, key, &mut commands);
        }
    }
    let launches: Vec<&String> = commands.iter().filter(|c| c.contains("train.py")).collect();
    assert!(launches.len() > 10, "{commands:#?}");
    for program in ["torchrun ", "accelerate launch ", "deepspeed "] {
        assert!(
            commands.iter().any(|c| c.starts_with(program)),
            "{program}: {commands:#?}"
        );
    }
    let rejected: Vec<String> = commands
        .iter()
        .filter_map(|c| accepted(c).err().map(|e| format!("{c}\n    {e}")))
        .collect();
    assert!(rejected.is_empty(), "{}", rejected.join("\n"));
    // The sharded candidates name the train.py change next to their torchrun line.
    let (_, out, _) = vramplan(&[
        "suggest",
        "--gpu",
        "rtx4090",
        "--init_from=gpt2-xl",
        "--compile=False",
        "--gpus",
        "4",
    ]);
    assert!(
        !out.contains("accelerate launch") && !out.contains("deepspeed --"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l
            .trim_start()
            .starts_with("and in train.py: nanoGPT has only DDP")),
        "{out}"
    );
}

/// Each fix diagnose prints carries the user's own overrides and every change it is named
/// after: the model.py change, the environment variable, the 8-bit optimizer.
#[test]
fn diagnose_fixes_carry_every_change_and_the_users_overrides() {
    let (code, v) = json(&[
        "diagnose",
        "--json",
        SEED_LOG,
        "--config",
        SEED_CONFIG,
        "--compile=False",
    ]);
    assert_eq!(code, 0);
    let fixes = v["fixes"].as_array().unwrap();
    let with_config: Vec<&Value> = fixes
        .iter()
        .filter(|f| {
            f["command"]
                .as_str()
                .is_some_and(|c| c.contains(SEED_CONFIG))
        })
        .collect();
    assert!(!with_config.is_empty(), "{v}");
    for f in &with_config {
        let cmd = f["command"].as_str().unwrap();
        let keeps = cmd.ends_with("--compile=False") || cmd.contains(" --compile=False");
        // The torch.compile knob is the one fix that turns the user's --compile=False off.
        let compiles = f["change"].as_str().unwrap().starts_with("torch.compile");
        assert_eq!(keeps, !compiles, "{cmd}");
    }
    // What each knob needs, as the user must do it.
    let needs: [(&str, &str); 4] = [
        ("chunked cross-entropy", "F.cross_entropy over chunks"),
        ("8-bit AdamW", "bitsandbytes.optim.AdamW8bit"),
        (
            "activation checkpointing",
            "torch.utils.checkpoint.checkpoint(block",
        ),
        (
            "expandable segments",
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
        ),
    ];
    let carries = |f: &Value, what: &str| {
        f["command"].as_str().is_some_and(|c| c.contains(what))
            || f["code_changes"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.contains(what)))
            })
    };
    let all = fixes
        .iter()
        .find(|f| {
            f["change"]
                .as_str()
                .unwrap()
                .starts_with("every memory knob at once")
        })
        .expect("every memory knob at once");
    for (knob, what) in needs {
        assert!(
            carries(all, what),
            "every memory knob at once lacks {knob}: {all}"
        );
        for f in fixes
            .iter()
            .filter(|f| f["change"].as_str().unwrap().starts_with(knob))
        {
            assert!(carries(f, what), "{knob} lacks {what}: {f}");
        }
    }
    // The text the user reads puts the code changes under the command.
    let (_, out, _) = vramplan(&[
        "diagnose",
        SEED_LOG,
        "--config",
        SEED_CONFIG,
        "--compile=False",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("- every memory knob at once"))
        .unwrap();
    assert!(
        lines[at + 1].contains("python train.py"),
        "{}",
        lines[at + 1]
    );
    assert!(
        lines[at + 2].trim_start().starts_with("and in model.py"),
        "{out}"
    );
}

/// When the config as given fits in the simulation although the log crashed, diagnose says the
/// two disagree with both figures, and never offers that very configuration as a fix.
#[test]
fn diagnose_never_offers_the_configuration_that_crashed() {
    let crashed = [
        "--batch_size=6",
        "--gradient_accumulation_steps=11",
        "--compile=False",
    ];
    let args = [
        &["diagnose", SEED_LOG, "--config", SEED_CONFIG][..],
        &crashed,
    ]
    .concat();
    let (code, out, _) = vramplan(&args);
    assert_eq!(code, 0);
    assert!(!out.contains("as configured"), "{out}");
    let note = out
        .lines()
        .find(|l| l.contains("the simulation and the log disagree"))
        .unwrap_or_else(|| panic!("{out}"));
    // Both figures: the prediction and what the log's process held and asked for.
    assert!(note.contains("predicted to peak at"), "{note}");
    assert!(
        note.contains("held 7.04 GiB and asked for 6.14 GiB more"),
        "{note}"
    );
    let (_, v) = json(&[&["diagnose", "--json"][..], &args[1..]].concat());
    for f in v["fixes"].as_array().unwrap() {
        let Some(cmd) = f["command"].as_str() else {
            continue;
        };
        let plain = !cmd.starts_with("PYTORCH_CUDA_ALLOC_CONF")
            && f["code_changes"].as_array().is_none_or(|a| a.is_empty());
        // The crash ran with --compile=False: the same batch compiled is another run.
        let same = cmd.contains("--batch_size=6")
            && cmd.contains("--gradient_accumulation_steps=11")
            && cmd.contains("--compile=False");
        assert!(!(plain && same), "the crashed run offered as a fix: {f}");
    }
}
