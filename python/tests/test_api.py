"""The Python API against numbers counted by hand, as the Rust tests count them
(tests/it/cli_check.rs, tests/it/lora.rs): the seed case and Llama 3.1 8B with LoRA."""

import dataclasses
import json
import subprocess
import sys

import vramplan
from conftest import ROOT, SEED_CONFIG, SEED_KEYS, SEED_LOG

GIB = 1 << 30


def gpt2_params(n_layer, n_embd, vocab, block, bias):
    """nanoGPT's model.py: wte (tied with lm_head), wpe, per block ln_1, c_attn, c_proj, ln_2,
    c_fc, c_proj; ln_f. bias=False drops every bias, LayerNorm's included."""
    b = 1 if bias else 0
    ln = n_embd * (1 + b)
    block_params = (
        ln
        + n_embd * 3 * n_embd + b * 3 * n_embd
        + n_embd * n_embd + b * n_embd
        + ln
        + n_embd * 4 * n_embd + b * 4 * n_embd
        + 4 * n_embd * n_embd + b * n_embd
    )
    return vocab * n_embd + block * n_embd + n_layer * block_params + ln


def test_seed_case_does_not_fit_and_eval_overflows_first(seed):
    assert seed.exit_code == 1
    assert seed.fits is False
    assert seed.first_overflow_phase == "eval"
    assert seed.n_params == gpt2_params(12, 768, 50304, 1024, bias=False)
    # "total capacity of 11.69 GiB", as PyTorch printed it in the seed log.
    assert abs(seed.gpu["total_bytes"] / GIB - 11.69) < 0.005
    logits_bytes = 64 * 1024 * 50304 * 2  # (B, T, vocab) in bf16
    logits = next(t for t in seed.tensors if t["name"] == "lm_head.logits")
    assert logits["shape"] == [64, 1024, 50304]
    assert logits["dtype"] == "bf16"
    assert logits["bytes"] == logits_bytes
    eval_phase = next(p for p in seed.phases if p["name"] == "eval")
    # logits + bf16 log-probs + their fp32 copy at least.
    assert eval_phase["peak_allocated_bytes"] > 4 * logits_bytes
    assert seed.headroom_bytes < 0


def test_a_dict_of_train_py_keys_is_the_same_run_as_the_file(seed):
    r = vramplan.check({**SEED_KEYS, "compile": False}, gpu="rtx3060")
    assert r.peak == seed.peak
    assert r.config == seed.config


def test_results_are_dataclasses_with_the_fields_of_the_cli_json(seed):
    assert dataclasses.is_dataclass(seed)
    assert isinstance(seed, vramplan.CheckResult)
    out = subprocess.run(
        [sys.executable, "-m", "vramplan", "check", str(SEED_CONFIG), "--gpu", "rtx3060",
         "--compile=False", "--json"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 1, out.stderr
    cli = json.loads(out.stdout)
    assert [f.name for f in dataclasses.fields(seed)] == list(cli)
    assert seed.to_dict() == cli


def llama_8b_params():
    """Llama 3.1 8B's published config.json: embed and an untied lm_head, per layer q/k/v/o
    (8 key/value heads of 128), SwiGLU (three 4096 x 14336), two RMSNorms; the final norm."""
    h, inter, layers, vocab, kv = 4096, 14336, 32, 128256, 8 * 128
    layer = h * h + 2 * h * kv + h * h + 3 * h * inter + 2 * h
    return 2 * vocab * h + layers * layer + h


LLAMA_8B_CONFIG_JSON = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}


def test_llama_8b_lora_r16_fits_an_a100_80gb_counted_by_hand():
    assert llama_8b_params() == 8_030_261_248
    r = vramplan.check(
        LLAMA_8B_CONFIG_JSON, gpu="a100-80gb", lora_rank=16, batch_size=1, block_size=512,
        compile=False,
        # A model alone takes the Trainer's defaults; this count is nanoGPT's loop (bf16
        # autocast, 40 micro-steps, so the adapters' gradients are alive at the peak).
        framework="nanogpt",
    )
    assert r.exit_code == 0 and r.fits is True
    # PEFT's default targets q_proj (4096 -> 4096) and v_proj (4096 -> 1024): A is r x in,
    # B is out x r.
    adapters = 32 * 16 * ((4096 + 4096) + (4096 + 1024))
    assert r.n_params == llama_8b_params() + adapters
    # Frozen base in bf16, fp32 adapters; gradients only for the adapters.
    assert r.categories["parameters"] == 2 * llama_8b_params() + 4 * adapters
    assert r.categories["gradients"] == 4 * adapters
    # AdamW: exp_avg and exp_avg_sq per adapter element, and a 4-byte step per adapter
    # tensor (128 of them) that the caching allocator rounds up to its 512-byte minimum
    # block (CUDACachingAllocator.cpp, kMinBlockSize).
    assert r.categories["optimizer"] == 8 * adapters + 128 * 512
    assert r.peak["allocated_bytes"] > 2 * llama_8b_params()
    assert r.peak["device_bytes"] < 60 * GIB


def test_the_model_preset_and_the_config_json_agree():
    kw = dict(gpu="a100-80gb", lora_rank=16, batch_size=1, block_size=512, compile=False)
    assert vramplan.check(model="llama-3.1-8b", **kw).peak == vramplan.check(
        LLAMA_8B_CONFIG_JSON, **kw
    ).peak


class FakePretrainedConfig:
    """What the API reads of a transformers PretrainedConfig: model_type and to_dict()."""

    model_type = "llama"

    def to_dict(self):
        return dict(LLAMA_8B_CONFIG_JSON)


def test_a_pretrained_config_object_is_read_through_to_dict():
    r = vramplan.check(FakePretrainedConfig(), gpu="a100-80gb", batch_size=1, block_size=512,
                       lora_rank=16, compile=False)
    assert r.n_params == llama_8b_params() + 32 * 16 * ((4096 + 4096) + (4096 + 1024))


def test_training_arguments_keys_become_vramplan_keys():
    r = vramplan.check(
        model="llama-3.2-1b",
        gpu="a100-80gb",
        training_args={
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 8,
            "gradient_checkpointing": True,
            "bf16": True,
            "optim": "adamw_bnb_8bit",
            "eval_strategy": "no",
        },
        block_size=256,
    )
    c = r.config
    assert (c["batch_size"], c["gradient_accumulation_steps"]) == (4, 8)
    assert c["activation_checkpointing"] is True
    assert c["dtype"] == "bfloat16"
    assert c["optimizer"] == "adamw8bit"
    assert c["eval_iters"] == 0
    # Without bf16 or fp16 the Trainer runs in fp32.
    r = vramplan.check(model="llama-3.2-1b", block_size=256, bf16=False, fp16=False)
    assert r.config["dtype"] == "float32"


def test_suggest_keeps_tokens_per_step_and_fits():
    s = vramplan.suggest(SEED_CONFIG, gpu="rtx3060")
    assert isinstance(s, vramplan.SuggestResult)
    assert s.exit_code == 0
    best = s.best["config"]
    assert best["batch_size"] * best["gradient_accumulation_steps"] * best["block_size"] >= (
        64 * 1 * 1024
    )
    assert s.best["fits"] is True
    assert s.best["peak_device_bytes"] <= s.gpu["usable_bytes"]


def test_diagnose_reads_the_seed_log_in_bytes():
    d = vramplan.diagnose(SEED_LOG.read_text(), config=SEED_CONFIG)
    assert isinstance(d, vramplan.DiagnoseResult)
    assert d.is_oom is True
    # "Tried to allocate 6.14 GiB": the bf16 logits (64, 1024, 50304), within the 0.01 GiB
    # the log prints.
    tried = d.facts["tried_to_allocate_bytes"]
    assert abs(tried - 64 * 1024 * 50304 * 2) < 0.005 * GIB
    assert d.culprit["bytes"] == 64 * 1024 * 50304 * 2
