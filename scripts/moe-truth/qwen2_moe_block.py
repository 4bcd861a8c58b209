"""What transformers' Qwen2MoeSparseMoeBlock keeps for its backward and which aten ops its
backward runs: the ground truth for vramplan's Qwen2-MoE block (src/model/moe.rs
`sparse_moe_block` with a shared expert; tests/it/models_qwen2_moe.rs).

The block is the real module (transformers 5.25.0, models/qwen2_moe/modeling_qwen2_moe.py) with
the default experts implementation (grouped_mm, integrations/moe.py). The autograd graph from
its output is walked and every node's `_saved_*` tensors printed (shape, dtype); then the
backward's aten ops are logged with a TorchDispatchMode (outputs' shapes and dtypes, in order).

CPU, bf16 weights without autocast (CPU autocast's op lists differ from CUDA's): compare with
vramplan's `--precision_mode=pure`. The tiny config is the test's: C = 64, 4 experts of width
48, 2 per token, shared expert of width 80, N = 2 x 16 = 32 tokens (S = 64 routed rows).

Usage: python3 qwen2_moe_block.py > qwen2_moe_block.out   (torch 2.15.0, transformers 5.25.0)
"""
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import Qwen2MoeConfig
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock


def describe(t):
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"


def saved_tensors(root):
    """Every node reachable from `root`, in discovery order, with its saved tensors."""
    seen, order, stack = set(), [], [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        order.append(node)
        stack.extend(n for n, _ in reversed(node.next_functions))
    for node in order:
        saved = []
        for attr in sorted(dir(node)):
            if not attr.startswith("_saved_"):
                continue
            try:
                v = getattr(node, attr)
            except RuntimeError:
                continue
            for t in tree_flatten(v)[0]:
                if isinstance(t, torch.Tensor):
                    saved.append(f"{attr[7:]}={describe(t)}")
        print(f"{node.name()}: {', '.join(saved) if saved else '-'}")


class LogOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = [describe(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        print(f"{func}: {'; '.join(outs)}")
        return out


def main():
    torch.manual_seed(0)
    cfg = Qwen2MoeConfig(hidden_size=64, num_experts=4, num_experts_per_tok=2,
                         moe_intermediate_size=48, shared_expert_intermediate_size=80,
                         norm_topk_prob=False, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=1000, intermediate_size=128)
    # A whole model gets "grouped_mm" from modeling_utils.py
    # `get_correct_experts_implementation` when none is asked for; a lone block must be told.
    cfg._experts_implementation = "grouped_mm"
    block = Qwen2MoeSparseMoeBlock(cfg).to(torch.bfloat16)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.02)
    x = torch.randn(2, 16, 64, dtype=torch.bfloat16, requires_grad=True)
    out = block(x)
    print(f"# output {describe(out)}")
    print("# saved tensors per node (graph order from the output)")
    saved_tensors(out.grad_fn)
    print("# backward aten ops")
    with LogOps():
        out.backward(torch.ones_like(out))


if __name__ == "__main__":
    main()
