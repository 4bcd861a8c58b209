//! vLLM's start-up sizing of the KV cache, per engine version, with the profile run simulated
//! by the same Engine.
//!
//! V1 (vLLM 0.10; vllm/v1/worker/gpu_worker.py `Worker.determine_available_memory`, with
//! `memory_profiling` in vllm/utils/__init__.py):
//!
//! ```text
//! requested  = total × gpu_memory_utilization          (init_device, Python float)
//! non_kv     = weights (allocated by load_model, model_memory_usage)
//!            + torch_peak_increase (reserved after profile_run − reserved before it)
//!            + non_torch_increase (device memory outside torch grown since init_snapshot)
//! available  = int(requested − non_kv)
//! num_blocks = available // page_size // num_layers     (vllm/v1/core/kv_cache_utils.py)
//! ```
//!
//! `page_size` is one layer's block, 2 (K and V) × 16 tokens × kv heads per rank × head_dim ×
//! element size (`FullAttentionSpec.page_size_bytes`); "GPU KV cache size" is num_blocks × 16
//! tokens and "Maximum concurrency" num_blocks / cdiv(max_model_len, 16). A model with
//! sliding-window layers and full ones (Gemma 2, Gemma 3) is grouped instead: num_layers
//! becomes the group size, tokens are divided by the number of groups, and a sliding layer
//! needs only its window's blocks ([`KvGroups`], src/plan/vllm/kv_groups.rs).
//! `check_enough_kv_cache_memory` raises "No available memory for the cache blocks" when
//! available ≤ 0 and "To serve at least one request with the models's max seq len …" when one
//! request of max_model_len tokens does not fit. CUDA graphs are captured after the cache is
//! allocated (`compile_or_warm_up_model`) and are not in this budget.
//!
//! V0 (vLLM 0.6; vllm/worker/worker.py `Worker.determine_num_available_blocks`):
//!
//! ```text
//! available = total × gpu_memory_utilization − (allocated peak of the profile run, weights
//!             included, + everything outside torch: the CUDA context, NCCL, ...)
//! num_gpu_blocks = available // block_bytes            ("# GPU blocks: N")
//! ```
//! 0 blocks is "No available memory for the cache blocks"; fewer than max_model_len tokens is
//! "The model's max seq len (N) is larger than the maximum number of tokens that can be stored
//! in KV cache (M)".
//!
//! Tensor parallelism: one rank is simulated, its model sharded as vLLM shards it
//! ([`rank_config`]); vLLM takes the smallest rank's blocks, and every rank is the same here.
//! Pipeline parallelism: every pipeline rank is simulated on its own share of the model
//! (tensor-sharded the same way), and the ranks unified as vLLM does (pipeline.rs).

mod defaults;
mod kv_groups;
mod non_torch;
mod pipeline;
mod profile;
mod startup;

pub use defaults::{scheduler, Scheduler};
pub use kv_groups::KvGroups;
pub use non_torch::{
    non_torch, NonTorch, NonTorchPart, CUSTOM_ALL_REDUCE_BYTES, NCCL_CONNECTION_BYTES,
};
pub use pipeline::{Pipeline, PipelineRank};
pub use startup::{gib, startup_lines, thousands};

use crate::budget::GpuProfile;
use crate::config::{Mode, TrainConfig, VllmVersion};
use crate::error::{Error, Result};
use crate::model::Stage;
use crate::run::infer::kv_bytes_per_token_layer;
use crate::sim::runtime::effective_precision;
use profile::profile_run;
use serde::Serialize;

/// vLLM's default `--block-size` (tokens per KV-cache block).
pub const BLOCK_TOKENS: u64 = 16;
/// vLLM pads the vocabulary of its embedding and LM head to a multiple of this
/// (vllm/model_executor/layers/vocab_parallel_embedding.py, `DEFAULT_VOCAB_PADDING_SIZE`).
pub const VOCAB_PADDING: u64 = 64;

/// What vLLM would find at start-up on one rank of this card.
#[derive(Debug, Clone, Serialize)]
pub struct VllmBudget {
    pub version: VllmVersion,
    pub tensor_parallel_size: u64,
    pub pipeline_parallel_size: u64,
    /// `--enable-expert-parallel` with more than one tensor-parallel rank.
    pub expert_parallel: bool,
    /// GPUs the engine runs on: tensor_parallel_size x pipeline_parallel_size.
    pub world_size: u64,
    /// Pipeline parallelism: every rank's own figures and the one that binds; the figures
    /// above are the binding rank's, with vLLM's unified blocks (pipeline.rs).
    pub pipeline: Option<Pipeline>,
    pub total_bytes: u64,
    pub gpu_memory_utilization: f64,
    /// gpu_memory_utilization × total.
    pub budget_bytes: u64,
    /// The weights as the allocator holds them after load_model (shapes × dtype, each tensor
    /// in its block: 512-byte multiples, or a whole 2 MiB-rounded segment for a tensor of
    /// 10 MiB or more that leaves at most 1 MiB over): vLLM's "Model loading took".
    pub weights_bytes: u64,
    /// What the profile run adds: V1 the reserved increase (torch_peak_increase), V0 the
    /// allocated peak less the weights (simulated; eager PyTorch).
    pub activation_bytes: u64,
    /// weights + activation: what vLLM subtracts besides the non-torch memory.
    pub profile_peak_bytes: u64,
    /// The profile run's tokens and requests, and where the limits come from.
    pub profile_tokens: u64,
    pub profile_seqs: u64,
    pub scheduler_source: String,
    /// The modelled non-torch memory; the budget uses its high end.
    pub non_torch: NonTorch,
    pub non_torch_bytes: u64,
    /// What is left for the KV cache at the high end of non-torch (negative: nothing).
    pub kv_cache_bytes: i64,
    /// How the cache's layers are grouped ([`KvGroups`]): one group of every layer unless
    /// V1 serves a model with sliding-window layers.
    pub kv_groups: KvGroups,
    /// V0 serving a model with sliding-window layers: their window, which V0's cache ignores
    /// (every layer keeps the full length, src/plan/vllm/kv_groups.rs).
    pub window_kept_full: Option<u64>,
    /// `max_num_batched_tokens`: a sliding layer's share of one request depends on it.
    pub max_num_batched_tokens: u64,
    /// One block id: a page of 16 tokens in each of the cache's pools (every layer of this
    /// rank, or a hybrid model's group_size).
    pub block_bytes: u64,
    pub num_gpu_blocks: u64,
    /// "GPU KV cache size: N tokens": 16 × blocks, over the number of groups when hybrid.
    pub max_tokens: u64,
    /// The same at the low end of non-torch.
    pub max_tokens_optimistic: u64,
    /// "Maximum concurrency for max_model_len tokens per request".
    pub max_concurrency: f64,
    /// `--max-model-len` (block_size).
    pub max_model_len: u64,
    /// None: vLLM starts; otherwise the error it raises.
    pub error: Option<String>,
}

/// The vocabulary vLLM allocates: padded to a multiple of 64.
pub fn padded_vocab(vocab: u64) -> u64 {
    vocab.div_ceil(VOCAB_PADDING) * VOCAB_PADDING
}

/// One rank's model as vLLM shards it over `tensor_parallel_size` GPUs (vllm/model_executor/
/// layers/linear.py `QKVParallelLinear`, `MergedColumnParallelLinear`, `RowParallelLinear`;
/// vocab_parallel_embedding.py): the query heads, the key/value heads (each rank keeps one,
/// replicated, when there are fewer than ranks), the MLP width (each expert's, for MoE) and the
/// padded vocabulary are split; the hidden size and the norms are not. At 1 rank only the vocabulary padding applies.
pub fn rank_config(cfg: &TrainConfig) -> TrainConfig {
    let tp = cfg.tensor_parallel_size.max(1);
    let mut c = cfg.clone();
    c.vocab_size = padded_vocab(cfg.vocab_size) / tp;
    if tp > 1 {
        c.head_dim = Some(cfg.head_size());
        c.n_head = cfg.n_head / tp;
        c.n_kv_head = Some((cfg.kv_heads() / tp).max(1));
        c.intermediate_size = Some(cfg.mlp_width().div_ceil(tp));
        // FusedMoE without expert parallelism splits each expert's width the same way
        // (`intermediate_size_per_partition`); the router is replicated.
        c.moe_intermediate_size = cfg.moe_intermediate_size.map(|w| w.div_ceil(tp));
        if let Some(experts) = cfg.num_experts.filter(|_| cfg.enable_expert_parallel) {
            expert_parallel(cfg, &mut c, experts, tp);
        }
        // vLLM's Qwen2-MoE shared expert (models/qwen2_moe.py `Qwen2MoeMLP`: a
        // MergedColumnParallelLinear gate_up_proj and a RowParallelLinear down_proj) splits
        // the same way; shared_expert_gate is a plain nn.Linear, replicated.
        c.shared_expert_intermediate_size =
            cfg.shared_expert_intermediate_size.map(|w| w.div_ceil(tp));
    }
    c.tensor_parallel_size = 1;
    c
}

/// `--enable-expert-parallel` (vLLM 0.10.1 fused_moe/layer.py): `FusedMoEParallelConfig.make`
/// turns the tensor-parallel group into the expert-parallel one (ep_size = tp, the MoE
/// layer's own tp_size 1), and `determine_expert_map` gives rank r `E // ep` experts, one
/// more where `r < E % ep`, each at full width (`intermediate_size // 1`). The rank
/// simulated holds the most: `E.div_ceil(ep)`. The router (a ReplicatedLinear), attention and
/// any dense MLP or shared expert keep their tensor-parallel split; the (E,) int32
/// expert_map is not simulated.
fn expert_parallel(cfg: &TrainConfig, c: &mut TrainConfig, experts: u64, tp: u64) {
    c.rank_experts = Some(experts.div_ceil(tp));
    c.moe_intermediate_size = cfg.moe_intermediate_size;
    if cfg.moe_intermediate_size.is_none() {
        // Mixtral's experts are intermediate_size wide and it has no dense MLP.
        c.intermediate_size = cfg.intermediate_size;
    }
}

/// vLLM's start-up on `gpu` (or a card of `total_bytes` as CUDA reports it), the non-torch
/// memory from [`non_torch`]'s model.
pub fn vllm_startup(
    cfg: &TrainConfig,
    gpu: Option<&GpuProfile>,
    total_bytes: u64,
) -> Result<VllmBudget> {
    vllm_budget(cfg, gpu, total_bytes, &non_torch(cfg, gpu))
}

/// vLLM's start-up figures for `cfg` with `non_torch` outside the allocator: one rank's, or
/// under pipeline parallelism every rank's, unified as vLLM unifies them (pipeline.rs).
pub fn vllm_budget(
    cfg: &TrainConfig,
    gpu: Option<&GpuProfile>,
    total_bytes: u64,
    non_torch: &NonTorch,
) -> Result<VllmBudget> {
    let mut c = cfg.clone();
    c.mode = Mode::Inference;
    c.dtype = effective_precision(cfg, gpu);
    if c.pipeline_parallel_size <= 1 {
        return rank_budget(&c, gpu, total_bytes, non_torch, Stage::whole(&c));
    }
    pipeline::unify(&c, |stage| {
        rank_budget(&c, gpu, total_bytes, non_torch, stage)
    })
}

/// The start-up figures of the rank that holds `stage` (`c` already in inference and the
/// simulated precision).
fn rank_budget(
    c: &TrainConfig,
    gpu: Option<&GpuProfile>,
    total_bytes: u64,
    non_torch: &NonTorch,
    stage: Stage,
) -> Result<VllmBudget> {
    let rank = rank_config(c);
    let run = profile_run(c, &rank, gpu, stage)?;
    let (weights_bytes, activation_bytes) = (run.weights_bytes, run.activation_bytes);
    let per_token = kv_bytes_per_token_layer(&rank)
        .ok_or_else(|| Error::new("the KV cache per token overflows 64 bits"))?;
    let page_bytes = per_token.saturating_mul(BLOCK_TOKENS);
    let layers = stage.start..stage.end;
    let groups = match c.vllm_version {
        VllmVersion::V1 => KvGroups::v1_layers(&rank, layers.clone(), page_bytes),
        VllmVersion::V0 => KvGroups::all_full(stage.end - stage.start, page_bytes),
    };
    let util = c.gpu_memory_utilization;
    // vLLM computes in Python floats: total × utilization; the int() / floor division of the
    // blocks gives the same whole blocks as truncating the budget first.
    let budget_bytes = (total_bytes as f64 * util) as u64;
    let profile_peak_bytes = weights_bytes.saturating_add(activation_bytes);
    let left =
        |non_torch: u64| budget_bytes as i64 - profile_peak_bytes.saturating_add(non_torch) as i64;
    let kv_cache_bytes = left(non_torch.high_bytes);
    let num_gpu_blocks = groups.blocks(kv_cache_bytes);
    let len = c.block_size;
    let batched = run.batch.tokens;
    let (max_tokens, max_concurrency) = match c.vllm_version {
        VllmVersion::V1 => (
            groups.tokens(num_gpu_blocks),
            num_gpu_blocks as f64 / groups.blocks_per_request(len, batched).max(1) as f64,
        ),
        VllmVersion::V0 => {
            let tokens = num_gpu_blocks.saturating_mul(BLOCK_TOKENS);
            (tokens, tokens as f64 / len.max(1) as f64)
        }
    };
    let error = startup_error(c.vllm_version, &groups, kv_cache_bytes, len, batched);
    Ok(VllmBudget {
        version: c.vllm_version,
        tensor_parallel_size: c.tensor_parallel_size,
        pipeline_parallel_size: c.pipeline_parallel_size,
        expert_parallel: c.enable_expert_parallel && c.tensor_parallel_size > 1,
        world_size: c
            .serving_world_size()
            .ok_or_else(|| Error::new("tensor_parallel_size x pipeline_parallel_size overflows"))?,
        pipeline: None,
        total_bytes,
        gpu_memory_utilization: util,
        budget_bytes,
        weights_bytes,
        activation_bytes,
        profile_peak_bytes,
        profile_tokens: run.batch.tokens,
        profile_seqs: run.batch.reqs,
        scheduler_source: run.scheduler_source,
        non_torch: non_torch.clone(),
        non_torch_bytes: non_torch.high_bytes,
        kv_cache_bytes,
        kv_groups: groups,
        window_kept_full: match c.vllm_version {
            VllmVersion::V0 => KvGroups::v1_layers(&rank, layers, page_bytes).window,
            VllmVersion::V1 => None,
        },
        max_num_batched_tokens: batched,
        block_bytes: groups.block_bytes(),
        num_gpu_blocks,
        max_tokens,
        max_tokens_optimistic: groups.tokens(groups.blocks(left(non_torch.low_bytes))),
        max_concurrency,
        max_model_len: len,
        error,
    })
}

/// The error vLLM raises at start-up, if any, in its own words.
fn startup_error(
    version: VllmVersion,
    groups: &KvGroups,
    available: i64,
    len: u64,
    batched: u64,
) -> Option<String> {
    const NO_MEMORY: &str = "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.";
    const ADVICE: &str = "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.";
    let blocks = groups.blocks(available);
    match version {
        // kv_cache_utils.py check_enough_kv_cache_memory (vLLM 0.10.1).
        VllmVersion::V1 if available <= 0 => Some(NO_MEMORY.to_string()),
        VllmVersion::V1 => {
            let needed = groups.needed_bytes(len, batched);
            (needed > available as u64).then(|| {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                let estimate = match groups.estimate_max_model_len(available, len, batched) {
                    0 => String::new(),
                    n => format!("Based on the available memory, the estimated maximum model length is {n}."),
                };
                format!(
                    "To serve at least one request with the models's max seq len ({len}), ({:.2} GiB KV cache is needed, which is larger than the available KV cache memory ({:.2} GiB). {estimate} {ADVICE}",
                    gib(needed),
                    gib(available as u64)
                )
            })
        }
        // worker.py determine_num_available_blocks / raise_if_cache_size_invalid (vLLM 0.6).
        VllmVersion::V0 if blocks == 0 => Some(NO_MEMORY.to_string()),
        VllmVersion::V0 => {
            let tokens = blocks.saturating_mul(BLOCK_TOKENS);
            (len > tokens).then(|| {
                format!("The model's max seq len ({len}) is larger than the maximum number of tokens that can be stored in KV cache ({tokens}). {ADVICE}")
            })
        }
    }
}

impl VllmBudget {
    /// The KV-cache bytes vLLM needs to start with `len` tokens per request: V1's
    /// `check_enough_kv_cache_memory` (every layer's `max_memory_usage_bytes`), V0's blocks
    /// for `len` tokens (`raise_if_cache_size_invalid`).
    fn needed_kv_bytes(&self, len: u64) -> Option<u64> {
        match self.version {
            VllmVersion::V1 => Some(
                self.kv_groups
                    .needed_bytes(len, self.max_num_batched_tokens),
            ),
            VllmVersion::V0 => len.div_ceil(BLOCK_TOKENS).checked_mul(self.block_bytes),
        }
    }

    /// Served over several GPUs (tensor or pipeline parallel): vLLM's start-up on every rank
    /// is the verdict, not one GPU holding the whole model.
    pub fn sharded(&self) -> bool {
        self.world_size > 1
    }

    /// The smallest `--gpu-memory-utilization` (rounded up to 0.01) whose budget holds the
    /// profile peak, the non-torch memory and the cache one request of `len` tokens needs;
    /// None above 1.0.
    pub fn utilization_for(&self, len: u64) -> Option<f64> {
        if let Some(p) = &self.pipeline {
            // Every rank must start: the largest of theirs.
            return p.ranks.iter().try_fold(0.0f64, |most, r| {
                r.budget.utilization_for(len).map(|u| most.max(u))
            });
        }
        let need = self
            .profile_peak_bytes
            .checked_add(self.non_torch_bytes)?
            .checked_add(self.needed_kv_bytes(len)?)?;
        let hundredths = (need as f64 / self.total_bytes.max(1) as f64 * 100.0).ceil();
        (hundredths <= 100.0).then_some(hundredths / 100.0)
    }

    /// The largest `--max-model-len`, up to the configured one, that this budget starts with:
    /// V1's `estimate_max_model_len` (sliding layers need only their window's blocks), V0's
    /// cache tokens.
    pub fn max_model_len_that_fits(&self) -> u64 {
        if let Some(p) = &self.pipeline {
            // V1 checks each rank's own layers; V0 the unified tokens, the same on every rank.
            return p
                .ranks
                .iter()
                .map(|r| match self.version {
                    VllmVersion::V1 => r.budget.max_model_len_that_fits(),
                    VllmVersion::V0 => self.max_tokens.min(self.max_model_len),
                })
                .min()
                .unwrap_or(0);
        }
        match self.version {
            VllmVersion::V1 => self.kv_groups.estimate_max_model_len(
                self.kv_cache_bytes,
                self.max_model_len,
                self.max_num_batched_tokens,
            ),
            VllmVersion::V0 => self.max_tokens.min(self.max_model_len),
        }
    }

    /// The most requests of `len` tokens the cache holds at once (whole blocks in every
    /// group each).
    pub fn max_num_seqs_that_fit(&self, len: u64) -> u64 {
        // Under pipeline parallelism the scheduler counts with rank 0's groups.
        let groups = self
            .pipeline
            .as_ref()
            .and_then(|p| p.ranks.first())
            .map_or(&self.kv_groups, |r| &r.budget.kv_groups);
        let per_request = groups.blocks_per_request(len, self.max_num_batched_tokens);
        self.num_gpu_blocks / per_request.max(1)
    }

    /// `vllm serve MODEL --gpu-memory-utilization U --max-model-len N`, with this budget's
    /// tensor parallelism and, for V0, `VLLM_USE_V1=0` (how vLLM 0.8–0.10 select the engine).
    pub fn command(&self, model: &str, utilization: f64, max_model_len: u64) -> String {
        let env = match self.version {
            VllmVersion::V0 => "VLLM_USE_V1=0 ",
            VllmVersion::V1 => "",
        };
        let tp = match self.tensor_parallel_size {
            1 => String::new(),
            n => format!(" --tensor-parallel-size {n}"),
        };
        let pp = match self.pipeline_parallel_size {
            1 => String::new(),
            n => format!(" --pipeline-parallel-size {n}"),
        };
        let ep = if self.expert_parallel {
            " --enable-expert-parallel"
        } else {
            ""
        };
        format!("{env}vllm serve {model}{tp}{pp}{ep} --gpu-memory-utilization {utilization:.2} --max-model-len {max_model_len}")
    }
}
