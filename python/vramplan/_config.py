"""What the Python API accepts as a run, turned into the `vramplan` command line.

A config is a path (nanoGPT ``config/*.py``, a flat TOML file, or a Hugging Face
``config.json``), a dict of nanoGPT keys, a Hugging Face ``config.json`` dict, or a
``PretrainedConfig`` (anything with ``to_dict()`` and a ``model_type``). Keyword overrides are
nanoGPT keys, or the ``TrainingArguments`` names below, and become ``--key=value`` as for
``python train.py``: the Rust side then checks them and names a bad key.
"""

import json
import os
import tempfile

from ._errors import ConfigError

# Keys only a Hugging Face config.json has (nanoGPT's names are n_layer, n_head, n_embd).
_HF_MARKERS = {
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "n_positions",
    "transformers_version",
    "_name_or_path",
}

# TrainingArguments fields with the same meaning as a vramplan key (transformers'
# training_args.py: per-device micro-batch, accumulation, checkpointing, torch.compile,
# AdamW's weight decay, clip_grad_norm_'s max_norm).
_TRAINING_ARGS = {
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "gradient_checkpointing": "activation_checkpointing",
    "torch_compile": "compile",
    "weight_decay": "weight_decay",
    "max_grad_norm": "grad_clip",
}

# TrainingArguments.optim values whose optimizer state vramplan models
# (transformers' OptimizerNames): torch's AdamW, bitsandbytes' 8-bit AdamW, torch's SGD.
_OPTIM = {
    "adamw_torch": "adamw",
    "adamw_torch_fused": "adamw",
    "adamw_hf": "adamw",
    "adamw_bnb_8bit": "adamw8bit",
    "adamw_8bit": "adamw8bit",
    "sgd": "sgd",
}


# TrainingArguments fields read for precision, optimizer and evaluation.
_TA_SPECIAL = {"bf16", "fp16", "optim", "eval_strategy", "evaluation_strategy", "do_eval"}


def training_args_overrides(args):
    """nanoGPT-style keys for the TrainingArguments-style ``args`` (a dict, or an object with
    ``to_dict()`` such as ``transformers.TrainingArguments``). Fields without a memory effect
    vramplan models are not read; a value it cannot model is a ConfigError naming the field."""
    if args is None:
        return {}
    fields = args.to_dict() if hasattr(args, "to_dict") else dict(args)
    out = {}
    for name, key in _TRAINING_ARGS.items():
        if fields.get(name) is not None:
            out[key] = fields[name]
    if "bf16" in fields or "fp16" in fields:
        # The Trainer runs autocast in bf16 or fp16 when asked, else plain fp32.
        if fields.get("bf16"):
            out["dtype"] = "bfloat16"
        elif fields.get("fp16"):
            out["dtype"] = "float16"
        else:
            out["dtype"] = "float32"
    optim = fields.get("optim")
    if optim is not None:
        optim = getattr(optim, "value", optim)
        if optim not in _OPTIM:
            raise ConfigError(
                f"optim = {optim!r}: expected one of {', '.join(sorted(_OPTIM))}",
                key="optim",
            )
        out["optimizer"] = _OPTIM[optim]
    strategy = fields.get("eval_strategy", fields.get("evaluation_strategy"))
    strategy = getattr(strategy, "value", strategy)
    if strategy == "no" and not fields.get("do_eval"):
        out["eval_iters"] = 0
    return out


def split_training_args(overrides):
    """Overrides with the TrainingArguments names among them translated (the rest as given)."""
    hf = {k: v for k, v in overrides.items() if k in _TRAINING_ARGS or k in _TA_SPECIAL}
    rest = {k: v for k, v in overrides.items() if k not in hf}
    out = training_args_overrides(hf)
    out.update(rest)
    return out


def literal(value):
    """A Python value as nanoGPT's configurator reads an override: a Python literal."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return repr(value)
    if isinstance(value, (list, tuple, set)) and all(isinstance(v, str) for v in value):
        # LoRA targets: PEFT takes a list, vramplan a comma-separated string.
        return repr(",".join(sorted(value) if isinstance(value, set) else value))
    raise ConfigError(
        f"{value!r}: expected a bool, int, float, str or None", key=None
    )


def is_hf_config(d):
    return any(k in d for k in _HF_MARKERS)


class Args:
    """The command line being built; temporary files live until ``close()``."""

    def __init__(self, command):
        self.argv = ["vramplan", command]
        self.keys = []  # the override keys, in order, to name the key of an error
        self._tmp = tempfile.TemporaryDirectory(prefix="vramplan-")

    def tmp_path(self, name):
        return os.path.join(self._tmp.name, name)

    def close(self):
        self._tmp.cleanup()

    def run(self, run_json):
        """``run_json(argv)``, with the temporary files' paths in a message named for what the
        caller gave (a config.json written from a dict, a log from text)."""
        try:
            return run_json(self.argv)
        except ConfigError as e:
            message = e.message
            for name, what in (("config.json", "the config dict"), ("oom.log", "the log text")):
                message = message.replace(self.tmp_path(name), what)
            raise ConfigError(message, key=e.key) from None

    def config(self, config, positional=True):
        """Add the config source: a path, a dict, or a PretrainedConfig."""
        if config is None:
            return
        if isinstance(config, (str, os.PathLike)):
            path = os.fspath(config)
            if path.lower().endswith(".json"):
                self.argv += ["--hf-config", path]
            elif positional:
                self.argv.append(path)
            else:
                self.argv += ["--config", path]
            return
        if hasattr(config, "to_dict") and hasattr(config, "model_type"):
            config = config.to_dict()
        if not isinstance(config, dict):
            raise ConfigError(
                f"config: expected a path, a dict or a PretrainedConfig, got {type(config).__name__}",
                key="config",
            )
        if is_hf_config(config):
            path = self.tmp_path("config.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(config, f, default=str)
            self.argv += ["--hf-config", path]
        else:
            self.overrides(config)

    def overrides(self, overrides):
        for key, value in split_training_args(overrides).items():
            try:
                text = literal(value)
            except ConfigError as e:
                raise ConfigError(f"{key} = {e}", key=key) from None
            self.argv.append(f"--{key}={text}")
            self.keys.append(key)

    def option(self, flag, value):
        if value is None or value is False:
            return
        if value is True:
            self.argv.append(flag)
        else:
            self.argv += [flag, str(value)]
