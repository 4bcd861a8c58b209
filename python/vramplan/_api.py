"""check / suggest / diagnose: the CLI's commands, run in-process, returning its --json."""

import json
import re

from . import _vramplan
from ._config import Args, training_args_overrides
from ._errors import ConfigError
from ._results import CheckResult, DiagnoseResult, SuggestResult, make_result

# Where the CLI's one-line messages name a key or option that its error does not carry (a
# usage error, an unknown card), most specific first.
_KEY_PATTERNS = [
    re.compile(r"override --([A-Za-z_]\w*)="),
    re.compile(r"unknown key '(\w+)'"),
    re.compile(r":\d+: ([A-Za-z_]\w*) = "),
    re.compile(r"^--([a-z][\w-]*)"),
    re.compile(r'"([A-Za-z_]\w*)"'),
]


def _key_of(message):
    for pattern in _KEY_PATTERNS:
        m = pattern.search(message)
        if m:
            return m.group(1).replace("-", "_")
    return None


def run_json(argv):
    """``vramplan ARGV --json`` in this process: (exit code, the parsed JSON). Bad input raises
    ConfigError with the CLI's message."""
    code, text, error, key = _vramplan.run_json(list(argv) + ["--json"])
    if error is not None:
        raise ConfigError(error, key=key if key is not None else _key_of(error))
    return code, json.loads(text) if text else None


def _run_args(args, *, model, gpu, gpu_file, live, margin, safety, mode):
    args.option("--model", model)
    args.option("--gpu", gpu)
    args.option("--gpu-file", gpu_file)
    args.option("--live", live)
    args.option("--margin", margin)
    args.option("--safety", safety)
    args.option("--mode", mode)


def _build(command, config, overrides, run_options, extra=(), svg=False):
    """Run ``command``: (its argv, exit code, JSON, the timeline SVG when ``svg``)."""
    args = Args(command)
    try:
        args.config(config)
        _run_args(args, **run_options)
        args.argv += list(extra)
        if svg:
            svg_path = args.tmp_path("timeline.svg")
            args.argv += ["--svg", svg_path]
        args.overrides(overrides)
        code, data = args.run(run_json)
        picture = None
        if svg:
            with open(svg_path, encoding="utf-8") as f:
                picture = f.read()
    finally:
        args.close()
    return args.argv, code, data, picture


def check(
    config=None,
    gpu=None,
    *,
    model=None,
    gpu_file=None,
    live=False,
    margin=None,
    safety=None,
    mode=None,
    training_args=None,
    **overrides,
):
    """``vramplan check``: will the run fit on ``gpu``; the figures of ``check --json``.

    ``config``: a path, a dict of nanoGPT keys, a Hugging Face config dict or PretrainedConfig.
    ``training_args``: a ``TrainingArguments`` (or dict of its fields) read for batch size,
    accumulation, checkpointing, precision, optimizer and compile. ``overrides``: nanoGPT keys
    (``batch_size=8``) or TrainingArguments names, applied last."""
    merged = {**training_args_overrides(training_args), **overrides}
    options = dict(model=model, gpu=gpu, gpu_file=gpu_file, live=live, margin=margin,
                   safety=safety, mode=mode)
    argv, code, data, picture = _build("check", config, merged, options, svg=True)
    return make_result(CheckResult, data, code, argv, svg=picture)


def suggest(
    config=None,
    gpu=None,
    *,
    model=None,
    gpu_file=None,
    live=False,
    margin=None,
    safety=None,
    mode=None,
    keep=(),
    gpus=None,
    training_args=None,
    **overrides,
):
    """``vramplan suggest``: the configuration that fits and runs fastest; ``suggest --json``.
    ``keep``: keys not to change; ``gpus``: plan for this many GPUs. Other arguments as for
    :func:`check`."""
    merged = {**training_args_overrides(training_args), **overrides}
    options = dict(model=model, gpu=gpu, gpu_file=gpu_file, live=live, margin=margin,
                   safety=safety, mode=mode)
    extra = []
    for key in [keep] if isinstance(keep, str) else keep:
        extra += ["--keep", key]
    if gpus is not None:
        extra += ["--gpus", str(gpus)]
    argv, code, data, _ = _build("suggest", config, merged, options, extra)
    return make_result(SuggestResult, data, code, argv)


def diagnose(log_text, config=None, gpu=None, *, model=None, training_args=None, **overrides):
    """``vramplan diagnose``: what a pasted CUDA out-of-memory log says, and with ``config``
    which tensor failed and what fits instead; ``diagnose --json``."""
    merged = {**training_args_overrides(training_args), **overrides}
    args = Args("diagnose")
    try:
        log = args.tmp_path("oom.log")
        with open(log, "w", encoding="utf-8") as f:
            f.write(log_text)
        args.argv.append(log)
        args.config(config, positional=False)
        args.option("--gpu", gpu)
        args.option("--model", model)
        args.overrides(merged)
        code, data = args.run(run_json)
    finally:
        args.close()
    return make_result(DiagnoseResult, data, code, args.argv)
