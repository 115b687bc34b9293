"""One metric specification, and the registry every other place iterates over.

A `Metric` says what a metric measures and how each part of the tool treats it: the evaluator
(which corpus files it needs, its compute function), the gate and the policy (its `Bound`, its
quantization gap, the re-check on inherited requests), the unlearning stop rule (`per_epoch`,
`stop_setting`), and every table, plot, record and MLflow metric (key, label, scale, which way
is better). Nothing here imports torch: the gate, the policy and the CLI read it cheaply.

Registration happens when the `unlearnops.metrics` package is imported (each module in it
registers its metrics); the policy's thresholds are built from the registry when
`unlearnops.policy` is first imported, so a metric registered later is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UnlearnopsError, did_you_mean

Better = Literal["lower", "higher", "zero"]
BoundKind = Literal["max", "abs_max", "min_ratio_to_source"]


# ---- what a compute function gets and returns --------------------------------------------------
@dataclass
class Run:
    """What every metric's compute function gets: the model, its corpus, and how much of it to use."""

    model: Any
    tokenizer: Any
    corpus: Any  # unlearnops.corpus.Corpus
    limit: int | None = None
    batch_size: int = 16
    show_progress: bool = False
    role: str = "target"  # which model the details lines describe: target or retrain
    retrain_auc: float | None = None  # PrivLeak's reference (the retrain model's membership AUC)

    def first(self, items: Sequence[Any]) -> list[Any]:
        return list(items[: self.limit] if self.limit else items)


@dataclass
class Outcome:
    value: float | None  # on the metric's scale
    counts: dict[str, int]  # items used: {key: n}, or {key_<part>: n} per part (privleak_forget, privleak_holdout)
    details: list[dict] = field(default_factory=list)  # one row per scored item (evaluate --details)
    extra: dict[str, Any] = field(default_factory=dict)  # other numbers the result reports (PrivLeak's raw AUC)


# ---- the specification -------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """How the release gate bounds the quantized model's value, and the policy threshold for it.

    kind: "max" (value <= threshold), "abs_max" (|value| <= threshold) or "min_ratio_to_source"
    (value / the source model's value >= threshold; a source at 0 gives ratio 1).
    """

    threshold: str  # the policy field and YAML key, e.g. "max_verbmem_f"
    kind: BoundKind
    default: float
    description: str  # the policy field's description
    low: float | None = 0.0  # the range a threshold may take (None: unbounded)
    high: float | None = 100.0
    check: str | None = None  # the check's name; default: the metric's key
    # The check's detail when the quantized value is missing; the check is then skipped. None:
    # a missing value FAILS the check (forgetting that was not measured cannot be shown).
    unmeasured: str | None = None
    # abs_max: what a value below / above 0 means, for reports naming the side a failure is on.
    sides: tuple[str, str] | None = None

    @property
    def direction(self) -> Literal["max", "min"]:
        return "min" if self.kind == "min_ratio_to_source" else "max"


@dataclass(frozen=True)
class Metric:
    key: str  # the result key, e.g. "verbmem_f"
    label: str  # short, for gate reports and plots: "VerbMem_f"
    name: str  # a table row: "VerbMem forget"
    description: str  # what it measures: "VerbMem on the forget set"
    needs: tuple[str, ...]  # corpus files, as Corpus.require names them
    compute: Callable[[Run], Outcome]
    better: Better  # which way is better: lower (forgotten), higher (kept), zero
    reading: str  # how to read a value, for tables: "lower = forgotten"
    scale: str = "0-100"
    bound: Bound | None = None  # gated on the quantized model
    # gated: quantized - full precision <= the policy's max_quant_gap (an abs_max bound: |quantized| - |full precision|)
    quantization_gap: bool = False
    inherited: bool = False  # gated: with the same bound on the forget set of every request a model inherits
    per_epoch: bool = False  # measurable after each unlearning epoch (needs no reference model; PrivLeak needs a reference AUC)
    stop_setting: str | None = None  # the UnlearnConfig field that makes it a stop target (at or below; better "zero": |value| at or below)

    @property
    def check(self) -> str:
        return (self.bound.check if self.bound else None) or self.key


METRICS: dict[str, Metric] = {}
_sealed_by: str | None = None  # what read the registry in a way a later metric could not join


def register(metric: Metric) -> Metric:
    """Add a metric (one line per metric, in a module of unlearnops/metrics/); returns it."""
    if _sealed_by:
        raise UnlearnopsError(
            f"metric '{metric.key}': registered after {_sealed_by} read the registry; register metrics in a module of "
            "unlearnops/metrics/ (imported with the package)"
        )
    if metric.key in METRICS:
        raise UnlearnopsError(f"metric '{metric.key}': registered twice")
    _check(metric)
    METRICS[metric.key] = metric
    return metric


def _check(metric: Metric) -> None:
    problems = []
    if metric.stop_setting and not (metric.per_epoch and metric.better in ("lower", "zero")):
        problems.append("a stop target needs a per-epoch metric that is lower when forgotten, or ideally zero")
    if metric.quantization_gap and not (metric.bound and metric.bound.kind in ("max", "abs_max") and metric.better in ("lower", "zero")):
        problems.append("the quantization gap applies to a forgetting bound (kind 'max', lower is better) or a two-sided one ('abs_max', zero is best)")
    if metric.inherited and not (metric.bound and metric.bound.kind == "max" and metric.better == "lower"):
        problems.append("inherited re-checks apply to a forgetting bound (kind 'max', lower is better)")
    thresholds = {m.bound.threshold for m in METRICS.values() if m.bound}
    if metric.bound and metric.bound.threshold in thresholds:
        problems.append(f"threshold '{metric.bound.threshold}' is another metric's")
    if problems:
        raise UnlearnopsError(f"metric '{metric.key}': {'; '.join(problems)}")


def seal(reader: str) -> None:
    """Called by what builds fixed structures from the registry (the policy's fields)."""
    global _sealed_by
    _sealed_by = _sealed_by or reader


def get(key: str) -> Metric:
    if key not in METRICS:
        raise UnlearnopsError(f"metric '{key}': unknown; {did_you_mean(key, METRICS)}choose from {', '.join(METRICS)}")
    return METRICS[key]


def gated() -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.bound]


def with_gap() -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.quantization_gap]


def inherited() -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.inherited]


def per_epoch() -> list[Metric]:
    return [metric for metric in METRICS.values() if metric.per_epoch]


def stop_settings() -> dict[str, str]:
    """metric key -> the UnlearnConfig field that sets its stop target."""
    return {metric.key: metric.stop_setting for metric in METRICS.values() if metric.stop_setting}
