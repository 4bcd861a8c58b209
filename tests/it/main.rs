//! The integration tests, one binary (ripgrep's layout): a module per area, sharing
//! `support`. One binary links once instead of once per file. `tests/probe_cpu.rs` stays a
//! binary of its own: it installs a counting global allocator for the whole process, which
//! would measure every other test running beside it.

mod support;

mod budget_catalogue;
mod budget_live;
mod budget_profile_file;
mod budget_safety;
mod calibration;
mod checkpoint_modes;
mod cli_cards;
mod cli_check;
mod cli_diagnose;
mod cli_inference;
mod cli_live;
mod cli_misc;
mod cli_probe;
mod cli_small_wrongs;
mod cli_suggest;
mod cli_vllm;
mod cli_width;
mod compile_runtime;
mod config_errors;
mod config_load;
mod config_props;
mod diagnose_corpus;
mod diagnose_messy;
mod diagnose_seed;
mod diagnose_versions;
mod diagnose_wrapped;
mod frameworks_files;
mod frameworks_pairs;
mod hf_loss_chain;
mod hostile;
mod hostile_logs;
mod hostile_props;
mod inference;
mod json_schema;
mod lora;
mod model_layers;
mod models;
mod models_gemma2_olmo2;
mod models_moe;
mod models_new_types;
mod models_qwen3_moe;
mod parallel_ddp;
mod parallel_lora;
mod parallel_offload;
mod parallel_shard;
mod parallel_zero;
mod pasted_commands;
mod probe_replay;
mod qlora;
mod run_verdict;
mod sim_knobs;
mod sim_ops;
mod sim_ops_hf;
mod suggest_gpus;
mod svg_charts;
mod traces;
mod train_keys;
mod train_modes;
mod vllm_kv_groups;
mod vllm_pipeline;
mod vllm_startup;
