"""The metric registry: every metric unlearnops measures, gates and reports, registered once.

    from unlearnops.metrics import METRICS          # key -> Metric, in registration order
    for metric in METRICS.values(): ...

Each module of this package registers its metrics when the package is imported: muse.py (MUSE's
VerbMem_f, KnowMem_f, KnowMem_r, PrivLeak) first, then every other module in name order. Adding
a metric is one module here (a compute function and one `register(Metric(...))`) and its test;
docs/architecture.md walks through one.
"""

import importlib
import pkgutil

from .spec import METRICS, Bound, Metric, Outcome, Run, gated, get, inherited, per_epoch, register, seal, stop_settings, with_gap

from . import muse  # noqa: E402, F401  (MUSE's metrics first: tables and reports follow the registry's order)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "spec":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METRICS", "Bound", "Metric", "Outcome", "Run", "gated", "get", "inherited", "per_epoch", "register", "seal", "stop_settings",
    "with_gap",
]
