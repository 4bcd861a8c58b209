#!/usr/bin/env python3
"""Which loss chain each transformers release runs for each causal-LM class vramplan models.

Ground truth for src/model/hf_loss.rs: reads `*ForCausalLM.forward` and
`loss/loss_utils.py::ForCausalLMLoss` out of the released wheels (pip download, no install,
nothing imported) and classifies what the source does between `self.lm_head(...)` and the
cross-entropy:

  upcast_in_forward   `logits = logits.float()` in the model's forward (the output keeps the
                      fp32 logits), then `shift_logits = logits[..., :-1, :].contiguous()`
  no_upcast           the shift copy of the model-dtype logits, no `.float()` (GPT-NeoX)
  upcast_in_loss      `self.loss_function` -> ForCausalLMLoss: `.float()` copy, then the
                      shift copy, both local to the loss function
  pad_labels          ForCausalLMLoss: `.float()` copy, labels padded by one instead of a
                      shifted copy of the logits

Usage: extract.py WHEEL_DIR... > fixtures/hf-loss-chain.json
(each WHEEL_DIR holds one transformers-X.Y.Z-py3-none-any.whl, e.g. from
`pip download transformers==X.Y.Z --no-deps -d vX.Y.Z`). The fixture records the date and the
versions read.
"""
import datetime
import glob
import json
import re
import sys
import zipfile

MODELS = {
    "llama": "llama/modeling_llama.py",
    "mistral": "mistral/modeling_mistral.py",
    "qwen2": "qwen2/modeling_qwen2.py",
    "qwen3": "qwen3/modeling_qwen3.py",
    "gemma": "gemma/modeling_gemma.py",
    "gemma2": "gemma2/modeling_gemma2.py",
    "gemma3": "gemma3/modeling_gemma3.py",
    "phi3": "phi3/modeling_phi3.py",
    "gpt_neox": "gpt_neox/modeling_gpt_neox.py",
    "olmo2": "olmo2/modeling_olmo2.py",
    "mixtral": "mixtral/modeling_mixtral.py",
    "qwen3_moe": "qwen3_moe/modeling_qwen3_moe.py",
    "qwen2_moe": "qwen2_moe/modeling_qwen2_moe.py",
}
SHIFT = re.compile(r"shift_logits\s*=\s*\w*logits\[\.\.\., :-1, :\]\.contiguous\(\)|"
                   r"shift_logits\s*=\s*\w*logits\[:, :-1, :\]\.contiguous\(\)")
UPCAST = re.compile(r"logits\s*=\s*.*\.float\(\)")


def causal_lm_forward(src):
    """The body of the first `class *ForCausalLM(` with a forward that runs lm_head (the text
    model's head; `KwargsForCausalLM` of 4.47+ is a TypedDict, not a model)."""
    for m in re.finditer(r"^class (\w+)ForCausalLM\(.*?(?=^class |\Z)", src, re.S | re.M):
        body = m.group(0)
        if "def forward" in body and ("lm_head" in body or "embed_out" in body):
            return body
    return None


def loss_fn_chain(loss_src):
    body = re.search(r"^def ForCausalLMLoss\(.*?(?=^def |\Z)", loss_src, re.S | re.M).group(0)
    assert UPCAST.search(body), "ForCausalLMLoss no longer upcasts"
    if "nn.functional.pad(labels" in body:
        return "pad_labels"
    assert SHIFT.search(body), "ForCausalLMLoss: neither padded labels nor shifted logits"
    return "upcast_in_loss"


def classify(body, loss_src):
    if "self.loss_function(" in body:
        return loss_fn_chain(loss_src)
    if not SHIFT.search(body):
        return "unknown"
    return "upcast_in_forward" if UPCAST.search(body) else "no_upcast"


def main(dirs):
    table = {}
    for d in dirs:
        wheel = glob.glob(f"{d}/transformers-*.whl")[0]
        version = re.search(r"transformers-([\d.]+)-", wheel).group(1)
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            loss_path = "transformers/loss/loss_utils.py"
            loss_src = z.read(loss_path).decode() if loss_path in names else ""
            row = {}
            for model, path in MODELS.items():
                full = f"transformers/models/{path}"
                if full not in names:
                    continue
                body = causal_lm_forward(z.read(full).decode())
                if body:
                    row[model] = classify(body, loss_src)
            table[version] = row
    key = lambda v: tuple(int(x) for x in v.split("."))
    out = {
        "source": "transformers wheels from PyPI, *ForCausalLM.forward and loss/loss_utils.py",
        "generated": datetime.date.today().isoformat(),
        "chains": {v: table[v] for v in sorted(table, key=key)},
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
