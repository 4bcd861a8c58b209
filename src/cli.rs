//! The command line: clap definitions only. nanoGPT-style `--key=value` overrides are split off
//! before clap sees the arguments (see `split_overrides`), so they can follow the config file
//! exactly as they do for `python train.py config/x.py --batch_size=64`.

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "vramplan",
    version,
    about = "Will this transformer training run fit on my GPU? Which tensor is the peak, and what fits instead?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate a training run's memory, phase by phase, against a GPU.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
    /// Find the largest configuration that fits, keeping tokens per step.
    #[command(after_help = SUGGEST_EXAMPLES)]
    Suggest(SuggestArgs),
    /// Read a CUDA out-of-memory log: what failed, why, and what to change.
    #[command(after_help = DIAGNOSE_EXAMPLES)]
    Diagnose(DiagnoseArgs),
    /// Run the real model (candle) forward + backward + AdamW and measure its peak.
    #[command(after_help = PROBE_EXAMPLES)]
    Probe(ProbeArgs),
    /// List the GPU catalogue (or the cards on this machine with --live).
    #[command(after_help = GPUS_EXAMPLES)]
    Gpus(GpusArgs),
    /// Where a tensor or a category of memory comes from: which op, why that dtype, when it
    /// is born and freed.
    #[command(after_help = EXPLAIN_EXAMPLES)]
    Explain(ExplainArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  vramplan completions bash > ~/.local/share/bash-completion/completions/vramplan"
    )]
    Completions(CompletionsArgs),
}

const CHECK_EXAMPLES: &str = "Examples:
  vramplan check                                     nanoGPT's train.py defaults (GPT-2 124M)
  vramplan check config/train_gpt2.py --gpu rtx3060
  vramplan check run.toml --gpu a100-40gb --json
  vramplan check config/train_gpt2.py --gpu rtx3060 --batch_size=64 --compile=False
  vramplan check cfg.py --gpu a100-40gb --quiet && torchrun --nproc_per_node=1 train.py cfg.py
  vramplan check --model llama-3.1-8b --mode inference --gpu a100-80gb --batch_size=8 --block_size=8192
  vramplan check sft.yaml --gpu h100-80gb --deepspeed ds_config.json --accelerate-config fsdp.yaml
  vramplan check axolotl.yml --gpu a100-40gb --verbose

Exit codes: 0 fits (or no GPU given), 1 does not fit, 2 bad input.";

const SUGGEST_EXAMPLES: &str = "Examples:
  vramplan suggest --gpu rtx3060
  vramplan suggest config/train_gpt2.py --gpu rtx3060 --batch_size=64
  vramplan suggest run.toml --gpu a100-40gb --json
  vramplan suggest run.toml --gpu rtx3060 --margin 0.5GiB --keep block_size
  vramplan suggest --model llama-3.1-8b --mode inference --gpu l4 --block_size=8192
  vramplan suggest recipe.yaml --gpu h100-80gb --gpus 8

Exit codes: 0 something fits, 1 nothing fits, 2 bad input.";

const DIAGNOSE_EXAMPLES: &str = "Examples:
  vramplan diagnose crash.log
  pbpaste | vramplan diagnose -
  vramplan diagnose crash.log --config config/train_gpt2.py --batch_size=64
  vramplan diagnose crash.log --json";

const PROBE_EXAMPLES: &str = "Examples:
  vramplan probe --n_layer=2 --batch_size=2             a real forward + backward + AdamW on the CPU
  vramplan probe config/train_shakespeare_char.py --device cuda --json";

const GPUS_EXAMPLES: &str = "Examples:
  vramplan gpus
  vramplan gpus --json
  vramplan gpus --live

Exit codes: 0 listed, 1 --live found the driver but no card, 2 bad input or no NVIDIA driver.";

const EXPLAIN_EXAMPLES: &str = "Examples:
  vramplan explain lm_head.logits fixtures/configs/seed-rtx3060.py
  vramplan explain loss.log_probs_fp32 --batch_size=8
  vramplan explain optimizer config/train_gpt2.py";

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// A tensor name as `check` prints it (lm_head.logits, layer3.mlp.c_fc.out) or a category
    /// (parameters, gradients, optimizer, activations, logits, autocast_copies, workspace).
    pub what: String,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

/// Where the run's configuration comes from and which card it is planned for.
#[derive(Debug, Clone, Args, Default)]
pub struct RunArgs {
    /// nanoGPT config (.py), TOML file, a fine-tuning framework's config (Hugging Face
    /// TrainingArguments / TRL SFTConfig as .json or .yaml, axolotl, torchtune or LitGPT YAML),
    /// or nothing for nanoGPT's train.py defaults.
    pub config: Option<PathBuf>,
    /// A DeepSpeed config (ds_config.json), as the Trainer's --deepspeed takes it.
    #[arg(long, value_name = "PATH")]
    pub deepspeed: Option<PathBuf>,
    /// An `accelerate config` YAML (num_processes, mixed_precision, fsdp_config), as
    /// `accelerate launch --config_file` takes it.
    #[arg(long, value_name = "PATH")]
    pub accelerate_config: Option<PathBuf>,
    /// Also list the keys of a framework file that were read and ignored (no memory effect).
    #[arg(long)]
    pub verbose: bool,
    /// A built-in model (gpt2 … gpt2-xl, llama-3.2-1b/3b, llama-3.1-8b, mistral-7b,
    /// qwen2.5-0.5b/1.5b/7b, qwen3-0.6b/8b, phi-3-mini-4k, gemma-2b, gemma-2-2b/9b, gemma-3-1b,
    /// olmo-2-7b, mixtral-8x7b, qwen3-30b-a3b, qwen1.5-moe-a2.7b, pythia-1b); the config file and overrides apply on top.
    #[arg(long, value_name = "NAME", conflicts_with = "hf_config")]
    pub model: Option<String>,
    /// A Hugging Face config.json to build the model from (model_type llama, mistral, qwen2,
    /// gemma, gemma2, gemma3_text or gemma3, qwen3, phi3, olmo2, mixtral, qwen3_moe, qwen2_moe, gpt_neox or gpt2); the config
    /// file and overrides apply on top.
    #[arg(long, value_name = "PATH")]
    pub hf_config: Option<PathBuf>,
    /// GPU from the catalogue (name or alias, e.g. rtx3060, "NVIDIA A100-SXM4-40GB"), or a
    /// generic card of a size as CUDA reports it (48GiB; binary units only).
    #[arg(long)]
    pub gpu: Option<String>,
    /// A GPU profile TOML file instead of the catalogue (only total_bytes is required).
    #[arg(long, value_name = "PATH")]
    pub gpu_file: Option<PathBuf>,
    /// Read the card on this machine through NVML; the budget is what is free now.
    #[arg(long)]
    pub live: bool,
    /// Which card with --live.
    #[arg(long, default_value_t = 0)]
    pub gpu_index: u32,
    /// Memory kept free for safety (e.g. 256MiB, 0.5GiB, 1000000).
    #[arg(long, default_value = "256MiB")]
    pub margin: String,
    /// A percentage of the card's total kept free on top of --margin (e.g. 5 or 7.5), for what
    /// the simulation cannot pin down (library versions, fragmentation beyond the model).
    #[arg(
        long,
        value_name = "PCT",
        default_value = "0",
        allow_hyphen_values = true
    )]
    pub safety: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// train (nanoGPT's train.py) or inference (frozen weights, KV cache, prefill + decode);
    /// the same as the override --mode=... after the config file.
    #[arg(long, value_parser = ["train", "inference"])]
    pub mode: Option<String>,
    /// Inference: which vLLM engine sizes the KV cache, v1 (the default) or v0; the same as
    /// the override --vllm_version=... after the config file.
    #[arg(long, value_parser = ["v0", "v1"])]
    pub vllm_version: Option<String>,
    /// Inference: vLLM's --tensor-parallel-size (one rank's memory is shown); the same as the
    /// override --tensor_parallel_size=... after the config file.
    #[arg(long, value_name = "N")]
    pub tensor_parallel_size: Option<u64>,
    /// Inference: vLLM's --pipeline-parallel-size (every rank is simulated; the one with the
    /// fewest KV-cache blocks binds); the same as the override --pipeline_parallel_size=...
    #[arg(long, value_name = "N")]
    pub pipeline_parallel_size: Option<u64>,
    /// nanoGPT-style overrides (--batch_size=64), collected before clap parses.
    #[arg(skip)]
    pub overrides: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Print nothing unless the run does not fit (for `vramplan check ... && torchrun ...`).
    #[arg(long)]
    pub quiet: bool,
    /// Show exact byte counts instead of GiB/MiB.
    #[arg(long)]
    pub bytes: bool,
    /// Also draw the memory timeline (live bytes by category over the run) as an SVG file.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SuggestArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Keys the search must not change (e.g. --keep block_size).
    #[arg(long, value_name = "KEY")]
    pub keep: Vec<String>,
    /// Also draw peak device memory against batch_size for each knob as an SVG file.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
    /// Plan for exactly N GPUs (the largest per-rank batch that fits each parallelism on N),
    /// and say separately the smallest world size that fits; with the launch line.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct DiagnoseArgs {
    /// The log file, or - for standard input.
    pub log: PathBuf,
    /// The run's config, to name the culprit tensor and compute fixes.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// GPU to plan fixes for (otherwise taken from the log's total capacity).
    #[arg(long)]
    pub gpu: Option<String>,
    /// A built-in model instead of (or under) the config file, as for `check`.
    #[arg(long, value_name = "NAME", conflicts_with = "hf_config")]
    pub model: Option<String>,
    /// A Hugging Face config.json to build the model from, as for `check`.
    #[arg(long, value_name = "PATH")]
    pub hf_config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[arg(skip)]
    pub overrides: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// nanoGPT config (.py), TOML file, or nothing for nanoGPT's defaults.
    pub config: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Training steps to run, 1 to 100 (the peak is measured from the second).
    #[arg(long, default_value_t = 2)]
    pub steps: u32,
    /// Run with this many layers and extrapolate (memory is affine in n_layer).
    #[arg(long)]
    pub layers: Option<u64>,
    /// Memory kept free on a shared card.
    #[arg(long, default_value = "256MiB")]
    pub margin: String,
    /// On CPU: the longest the probe may take, by the estimate printed before it starts.
    /// Past it the probe measures fewer layers and extrapolates, or refuses.
    #[arg(long, value_name = "MINUTES", default_value_t = 10.0)]
    pub max_minutes: f64,
    #[arg(long)]
    pub json: bool,
    #[arg(skip)]
    pub overrides: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GpusArgs {
    /// The cards on this machine (NVML) instead of the catalogue.
    #[arg(long)]
    pub live: bool,
    #[arg(long)]
    pub json: bool,
}

/// Split `--key=value` arguments that are not flags of the chosen subcommand: they are
/// nanoGPT configurator overrides. Returns (arguments for clap, overrides in order).
pub fn split_overrides(args: Vec<String>) -> (Vec<String>, Vec<String>) {
    let cmd = Cli::command();
    let sub_name = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let known: Vec<String> = sub_name
        .as_deref()
        .and_then(|name| cmd.find_subcommand(name))
        .map(|sub| {
            sub.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut clap_args = Vec::new();
    let mut overrides = Vec::new();
    for (i, arg) in args.into_iter().enumerate() {
        let is_override = i > 0
            && arg.starts_with("--")
            && arg.contains('=')
            && !known
                .iter()
                .any(|k| arg[2..].split('=').next() == Some(k.as_str()));
        if is_override {
            overrides.push(arg);
        } else {
            clap_args.push(arg);
        }
    }
    (clap_args, overrides)
}

/// A clap usage error as one line, in clap's own words: its first line, then a hint. An
/// unknown `--key` that is a config key (`--batch_size` with no value, or `--batch_size 64`)
/// says how overrides are written; other errors point at `--help`.
pub fn usage_error_line(e: &clap::error::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("error: invalid usage");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => Some(arg.as_str()),
        _ => None,
    };
    let key = arg
        .and_then(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .filter(|k| crate::config::registry::spec(k).is_some());
    match key {
        Some(key) => format!(
            "{first}: config overrides are written --{key}=VALUE, with '=' and no space (nanoGPT's style), e.g. --{key}={}",
            crate::config::registry::example_value(key)
        ),
        None => {
            // clap's further lines ("[possible values: train, inference]", "tip: a similar
            // argument exists: '--json'") on the same line; not its usage block.
            let more: String = rendered
                .lines()
                .skip_while(|l| !l.trim_start().starts_with("error:"))
                .skip(1)
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .map(|l| format!("; {l}"))
                .collect();
            format!("{first}{more} (see --help)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_split_from_flags() {
        let argv = [
            "vramplan",
            "check",
            "c.py",
            "--gpu=rtx3060",
            "--batch_size=64",
            "--json",
        ];
        let (clap_args, overrides) = split_overrides(argv.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            clap_args,
            ["vramplan", "check", "c.py", "--gpu=rtx3060", "--json"]
        );
        assert_eq!(overrides, ["--batch_size=64"]);
    }

    #[test]
    fn usage_errors_are_one_line_and_overrides_are_explained() {
        let argv = ["vramplan", "check", "--batch_size"];
        let e = Cli::try_parse_from(argv).unwrap_err();
        assert_eq!(
            usage_error_line(&e),
            "unexpected argument '--batch_size' found: config overrides are written --batch_size=VALUE, with '=' and no space (nanoGPT's style), e.g. --batch_size=12"
        );
        let e = Cli::try_parse_from(["vramplan", "chek"]).unwrap_err();
        let line = usage_error_line(&e);
        assert!(line.starts_with("unrecognized subcommand 'chek'"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
