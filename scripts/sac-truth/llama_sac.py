"""Which outputs torchtitan's per-op selective activation checkpointing keeps in a Hugging Face
Llama decoder layer: the ground truth for vramplan's `checkpoint_policy = 'op'` (src/sim/sac.rs).

The policy is torchtitan's (torchtitan/distributed/activation_checkpoint.py, SelectiveAC
._wrap_block at commit b5bcd76, 2026-08), restated here because torchtitan itself is not
installed: per block a fresh {"forward_mm_count", "recompute_mm_count"}; aten.mm counts, the
even-numbered ones are PREFER_RECOMPUTE; every op in the save set (partitioners.py
get_default_op_list().compute_intensive_ops plus torchtitan's extras) is MUST_SAVE; the rest
PREFER_RECOMPUTE. torch.utils.checkpoint's _CachingTorchDispatchMode then stores every output
of a MUST_SAVE op until the recomputation pops it.

Runs on CPU (no GPU needed), which differs from a CUDA run in one way that matters here:
F.scaled_dot_product_attention dispatches to aten._scaled_dot_product_flash_attention_for_cpu
(outputs: out, logsumexp) instead of aten._scaled_dot_product_flash_attention (out,
logsumexp, cum_seq_q/k, max_q/k, philox seed, philox offset, debug mask). The CPU op is
counted as the flash kernel it stands for; the CUDA-only Philox seed (uint64[2]) and offset
(uint64[]) are not in the output and the Rust test adds them by hand. Weights are bf16 without
autocast (CPU autocast's op lists differ from CUDA's); the matmul outputs are bf16 either way.

Usage: python3 llama_sac.py > ../../fixtures/sac-llama-kept.json  (torch 2.15.0, transformers 5.25.0 on CPU
made the fixture; tests/it/checkpoint_op_policy.rs holds the simulator to it)
"""
import json
from collections import defaultdict

import torch
import torch.nn as nn
from torch._functorch.partitioners import get_default_op_list
from torch.utils.checkpoint import (CheckpointPolicy, checkpoint,
                                    create_selective_checkpoint_contexts)
from torch.utils._pytree import tree_map
from transformers import LlamaConfig, LlamaForCausalLM

aten = torch.ops.aten
SAVE = {op.default for op in get_default_op_list().compute_intensive_ops}
SAVE |= {aten._scaled_dot_product_flash_attention_for_cpu.default, aten.max.default,
         aten.linear.default, aten.topk.default}
MM = (aten.mm.default, aten.linear.default)

kept = defaultdict(list)  # block index -> [{op, shapes, dtypes}]


def on_meta(x):
    return x.to("meta") if isinstance(x, torch.Tensor) else x


def policy_for(block):
    meta = {"forward_mm_count": 0, "recompute_mm_count": 0}

    def policy(ctx, func, *args, **kwargs):
        mode = "recompute" if ctx.is_recompute else "forward"
        key = f"{mode}_mm_count"
        if func in MM:
            meta[key] += 1
        if func in SAVE and not (func in MM and meta[key] % 2 == 0):
            if not ctx.is_recompute:
                # The op's outputs, computed again on meta tensors (shapes and dtypes only).
                out = func(*tree_map(on_meta, args), **tree_map(on_meta, kwargs))
                outs = out if isinstance(out, (tuple, list)) else (out,)
                kept[block].append({
                    "op": str(func),
                    "outputs": [{"shape": list(t.shape),
                                 "dtype": str(t.dtype).replace("torch.", ""),
                                 "bytes": t.numel() * t.element_size()}
                                for t in outs if isinstance(t, torch.Tensor)],
                })
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def main():
    # vramplan's SMALL_LLAMA (tests/it/support/hf.rs) with 2 layers.
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.train()
    # transformers passes gradient_checkpointing_kwargs on to torch.utils.checkpoint.checkpoint
    # for each layer (modeling_utils.py gradient_checkpointing_enable); context_fn is called
    # once per layer invocation, in layer order, and makes that invocation's policy.
    calls = [0]

    def context_fn():
        block = calls[0] % cfg.num_hidden_layers
        calls[0] += 1
        return create_selective_checkpoint_contexts(policy_for(block))

    model.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False, "context_fn": context_fn})
    idx = torch.randint(0, 100, (2, 32))
    out = model(input_ids=idx, labels=idx, use_cache=False)
    out.loss.backward()
    print(json.dumps({
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "config": {"batch": 2, "tokens": 32, "hidden": 64, "heads": 4, "kv_heads": 2,
                   "intermediate": 160, "layers": 2, "dtype": "bfloat16"},
        "kept": [kept[i] for i in sorted(kept)],
    }, indent=None, separators=(",", ":")))


if __name__ == "__main__":
    main()
