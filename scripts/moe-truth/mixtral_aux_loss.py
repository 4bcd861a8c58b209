"""What transformers' router auxiliary loss (`output_router_logits=True`) keeps for its
backward and which aten ops that backward runs: the ground truth for vramplan's
`output_router_logits` (src/sim/ops/moe_aux.rs; tests/it/models_moe_aux.rs).

The model is the real MixtralForCausalLM (transformers 5.25.0, models/mixtral/
modeling_mixtral.py: the router logits are captured per layer by OutputRecorder and handed to
`load_balancing_loss_func`, then `loss += router_aux_loss_coef * aux_loss`). The graph of the
aux loss alone is walked from `aux_loss.grad_fn` (saved tensors per node, shape and dtype),
and its backward's aten ops are logged (TorchDispatchMode), down to the router logits.

CPU, bf16 weights without autocast (compare with vramplan's `--precision_mode=pure`); no
attention_mask (vramplan's model is called with input_ids and labels). Tiny config: C = 64,
4 experts, 2 per token, 2 layers, N = 2 x 16 = 32 tokens.

Usage: python3 mixtral_aux_loss.py > mixtral_aux_loss.out   (torch 2.15.0, transformers 5.25.0)
"""
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import MixtralConfig, MixtralForCausalLM
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from qwen2_moe_block import describe, saved_tensors


class LogOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = out if isinstance(out, (tuple, list)) else [out]
        outs = [describe(t) for t in flat if isinstance(t, torch.Tensor)]
        print(f"{func}: {'; '.join(outs)}")
        return out


def main():
    torch.manual_seed(0)
    cfg = MixtralConfig(hidden_size=64, intermediate_size=48, num_local_experts=4,
                        num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, vocab_size=1000, output_router_logits=True)
    model = MixtralForCausalLM(cfg).to(torch.bfloat16)
    ids = torch.randint(0, 1000, (2, 16))
    out = model(input_ids=ids, labels=ids)
    print(f"# router_logits: {[describe(t) for t in out.router_logits]}")
    print(f"# aux_loss {describe(out.aux_loss)}, loss {describe(out.loss)}")
    # The same call the model made, run again under the op log to see its forward's aten ops.
    print("# load_balancing_loss_func forward aten ops")
    with LogOps():
        aux = load_balancing_loss_func(out.router_logits, 4, 2, None)
    print("# saved tensors per node (graph order from aux_loss, down to the router's mm)")
    saved_tensors(aux.grad_fn)
    print("# aux loss backward aten ops (to the router logits)")
    with LogOps():
        torch.autograd.grad(aux, list(out.router_logits))


if __name__ == "__main__":
    main()
