"""vramplan: will this transformer training run fit on my GPU?

The CLI's commands as functions returning the same fields as ``--json``::

    import vramplan
    r = vramplan.check("config/train_gpt2.py", gpu="rtx3060", batch_size=64)
    r.fits, r.peak["device_bytes"], r.to_dict()

Pre-flight hooks for trainers are in :mod:`vramplan.callbacks`.
"""

from ._api import check, diagnose, run_json, suggest
from ._errors import ConfigError
from ._results import CheckResult, DiagnoseResult, Result, SuggestResult
from ._vramplan import __version__

__all__ = [
    "check",
    "suggest",
    "diagnose",
    "run_json",
    "ConfigError",
    "Result",
    "CheckResult",
    "SuggestResult",
    "DiagnoseResult",
    "__version__",
]
