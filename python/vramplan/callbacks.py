"""Pre-flight checks inside what users already run: one check before the first step.

- :func:`preflight` — for any script (nanoGPT's train.py: pass its ``config`` dict).
- ``VramplanTrainerCallback`` — a ``transformers.TrainerCallback``: on ``on_train_begin`` it
  simulates the live ``model.config`` (and PEFT's LoRA settings) with the ``TrainingArguments``.
- ``VramplanLightningCallback`` — a ``lightning.pytorch.Callback``: on ``on_fit_start``.

Each prints the verdict; with ``strict=True`` a run that does not fit raises
:class:`DoesNotFit` before the first step. transformers and lightning are optional: the
classes are built on first access, from those libraries' public interfaces only.
"""

from ._api import check
from ._errors import ConfigError


class DoesNotFit(RuntimeError):
    """Raised by a strict pre-flight: the simulated run does not fit. ``result`` is the
    :class:`vramplan.CheckResult`."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


def verdict(result):
    """One line, as the CLI's verdict: fits or not, on which card, the peak and the budget."""
    peak = result.peak or {}
    device = peak.get("device_bytes", 0) / (1 << 30)
    gpu = result.gpu or {}
    if result.fits is None:
        return f"vramplan: peak {device:.2f} GiB on the device (no GPU given: no verdict)"
    usable = gpu.get("usable_bytes", 0) / (1 << 30)
    name = gpu.get("name", "the GPU")
    if result.fits:
        return (
            f"vramplan: FITS on {name}: peak {device:.2f} GiB on the device, "
            f"{usable:.2f} GiB usable (phase `{peak.get('phase')}`)"
        )
    short = -result.headroom_bytes / (1 << 30)
    return (
        f"vramplan: DOES NOT FIT on {name}: short by {short:.2f} GiB — first overflow at "
        f"phase `{result.first_overflow_phase}` (peak {device:.2f} GiB on the device, "
        f"{usable:.2f} GiB usable)"
    )


def preflight(config=None, gpu=None, *, strict=False, print_fn=print, **kwargs):
    """``check`` the run, print the verdict, and with ``strict`` raise :class:`DoesNotFit`
    when it does not fit. Arguments as for :func:`vramplan.check`. Returns the result."""
    result = check(config, gpu, **kwargs)
    line = verdict(result)
    print_fn(line)
    if strict and result.fits is False:
        raise DoesNotFit(line, result)
    return result


def _hf_config_dict(config):
    """A Hugging Face config (PretrainedConfig or dict) as a plain dict."""
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def peft_overrides(model):
    """vramplan's LoRA and quantization keys for a model PEFT wrapped (``model.peft_config``,
    LoraConfig's r / target_modules / lora_dropout) or bitsandbytes quantized
    (``config.quantization_config``); {} for a plain model."""
    out = {}
    peft = getattr(model, "peft_config", None)
    if isinstance(peft, dict) and peft:
        lora = next(iter(peft.values()))
        if getattr(lora, "r", None):
            out["lora_rank"] = int(lora.r)
            targets = getattr(lora, "target_modules", None)
            if isinstance(targets, str):
                out["lora_targets"] = targets
            elif targets:
                out["lora_targets"] = ",".join(sorted(targets))
            out["lora_dropout"] = float(getattr(lora, "lora_dropout", 0.0) or 0.0)
    config = getattr(model, "config", None)
    q = getattr(config, "quantization_config", None) if config is not None else None
    if q is not None:
        q = q.to_dict() if hasattr(q, "to_dict") else dict(q)
        if q.get("load_in_4bit"):
            out["quantization"] = q.get("bnb_4bit_quant_type", "fp4")
            out["double_quant"] = bool(q.get("bnb_4bit_use_double_quant", False))
        elif q.get("load_in_8bit"):
            out["quantization"] = "int8"
    return out


def _sequence_length(args, config, block_size, print_fn):
    """The tokens per sequence: given, else TRL's max_seq_length / max_length, else the
    model's maximum (the worst case, said so)."""
    if block_size is not None:
        return block_size
    for name in ("max_seq_length", "max_length"):
        n = getattr(args, name, None)
        if isinstance(n, int) and n > 0:
            return n
    for name in ("n_positions", "max_position_embeddings"):
        n = config.get(name)
        if isinstance(n, int) and n > 0:
            print_fn(
                f"vramplan: block_size = {n} assumed (the model's {name}, the worst case); "
                "pass block_size= to the callback for the length you train"
            )
            return n
    raise ConfigError("block_size: cannot tell the sequence length; pass block_size=", "block_size")


def _build_trainer_callback():
    from transformers import TrainerCallback

    class VramplanTrainerCallback(TrainerCallback):
        """Pre-flight for ``transformers.Trainer``: ``Trainer(..., callbacks=[
        VramplanTrainerCallback(gpu="a100-80gb", block_size=2048, strict=True)])``."""

        def __init__(self, gpu=None, *, block_size=None, strict=False, print_fn=print, **overrides):
            self.gpu = gpu
            self.block_size = block_size
            self.strict = strict
            self.print_fn = print_fn
            self.overrides = overrides
            self.result = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            config = _hf_config_dict(model.config)
            keys = peft_overrides(model)
            keys["block_size"] = _sequence_length(args, config, self.block_size, self.print_fn)
            keys.update(self.overrides)
            self.result = preflight(
                config, self.gpu, strict=self.strict, print_fn=self.print_fn,
                training_args=args, **keys,
            )
            return control

    return VramplanTrainerCallback


_LIGHTNING_PRECISION = {
    # Lightning's precision plugins: "-mixed" is autocast over fp32 weights, as vramplan's
    # dtype; "32-true" is plain fp32.
    "bf16-mixed": "bfloat16",
    "16-mixed": "float16",
    "32-true": "float32",
    "32": "float32",
}


def _build_lightning_callback():
    try:
        from lightning.pytorch import Callback
    except ImportError:
        from pytorch_lightning import Callback

    class VramplanLightningCallback(Callback):
        """Pre-flight for ``lightning.Trainer``: ``Trainer(callbacks=[VramplanLightningCallback(
        config, gpu="rtx4090", batch_size=8, strict=True)])``. ``config`` defaults to the
        module's Hugging Face config (``pl_module.config`` or ``pl_module.model.config``);
        accumulation and precision come from the Trainer."""

        def __init__(self, config=None, gpu=None, *, strict=False, print_fn=print, **overrides):
            self.config = config
            self.gpu = gpu
            self.strict = strict
            self.print_fn = print_fn
            self.overrides = overrides
            self.result = None

        def on_fit_start(self, trainer, pl_module):
            config = self.config
            keys = {"gradient_accumulation_steps": int(trainer.accumulate_grad_batches)}
            if config is None:
                inner = getattr(pl_module, "model", None)
                for owner in (pl_module, inner):
                    c = getattr(owner, "config", None)
                    if c is not None and hasattr(c, "to_dict"):
                        config = c
                        keys.update(peft_overrides(owner))
                        break
            precision = str(getattr(trainer, "precision", ""))
            if precision in _LIGHTNING_PRECISION:
                keys["dtype"] = _LIGHTNING_PRECISION[precision]
            else:
                self.print_fn(
                    f"vramplan: precision {precision!r} is not modelled; dtype as configured"
                )
            keys.update(self.overrides)
            self.result = preflight(
                config, self.gpu, strict=self.strict, print_fn=self.print_fn, **keys
            )

    return VramplanLightningCallback


_BUILDERS = {
    "VramplanTrainerCallback": _build_trainer_callback,
    "VramplanLightningCallback": _build_lightning_callback,
}
_BUILT = {}


def __getattr__(name):
    # PEP 562: the callback classes exist only once their library is imported.
    if name in _BUILDERS:
        if name not in _BUILT:
            _BUILT[name] = _BUILDERS[name]()
        return _BUILT[name]
    raise AttributeError(f"module 'vramplan.callbacks' has no attribute {name!r}")
