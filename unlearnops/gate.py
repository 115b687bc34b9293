"""The release gate: policy thresholds applied to the QUANTIZED model, the one that ships.

`evaluate_gate` is pure (metric dicts in, a `GateReport` out), so every check can be tested
without a model. The writers turn a report into the evidence a release needs: JSON (machines),
Markdown (reviewers), JUnit XML (CI dashboards: one testcase per check) and a PNG plot of the
metrics per precision against the thresholds.

Checks, one set per metric in the registry (unlearnops.metrics), in its order; the names are
stable (CI and tests key on them). With MUSE's metrics:
  verbmem_f                     quantized VerbMem_f <= max_verbmem_f   (unmeasured: fails)
  knowmem_f                     quantized KnowMem_f <= max_knowmem_f   (unmeasured: fails)
  utility_ratio                 quantized KnowMem_r / source KnowMem_r >= min_utility_ratio
  privleak                      |quantized PrivLeak| <= max_abs_privleak
  quantization_gap.verbmem_f    quantized - full precision VerbMem_f <= max_quant_gap
  quantization_gap.knowmem_f    quantized - full precision KnowMem_f <= max_quant_gap
  inherited.<request>.verbmem_f / .knowmem_f
                                the same forget bounds on every earlier request the model
                                inherits (sustainability: forgetting must not wear off)
A metric's `Bound` gives its check (kind, threshold, what an unmeasured value means);
`quantization_gap` and `inherited` add the other two.

A check whose input was not supplied (no source metrics, no full-precision metrics, no retrain
AUC for PrivLeak) is reported as skipped, never silently passed; the pipeline always supplies
all of them. A missing measurement for an inherited request FAILS: it cannot be shown to hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import metrics
from .errors import UnlearnopsError
from .fileio import write_bytes, write_json, write_text
from .metrics import METRICS, Metric
from .policy import QUANT_GAP, Policy

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Check:
    name: str
    measured: float | None
    threshold: float
    direction: Literal["max", "min"]
    status: Status
    detail: str

    @property
    def passed(self) -> bool:
        return self.status != "failed"

    def message(self) -> str:
        """'measured 41.20 > max 30.00 (...)': what a failing JUnit testcase says."""
        if self.measured is None:
            return f"not measured: {self.detail}"
        relation = ("<=" if self.passed else ">") if self.direction == "max" else (">=" if self.passed else "<")
        return f"measured {self.measured:.4g} {relation} {self.direction} {self.threshold:.4g} ({self.detail})"


@dataclass(frozen=True)
class InheritedRequest:
    """An earlier request the model must still satisfy, and the quantized model's metrics on its forget set."""

    request_id: str
    metrics: dict[str, Any] | None
    problem: str | None = None  # why it could not be measured (corpus missing or changed)


@dataclass
class GateReport:
    passed: bool
    checks: list[Check]
    policy: dict[str, float]
    metrics: dict[str, dict[str, Any] | None]  # "quantized" / "full_precision" / "source"
    inherited: list[dict[str, Any]] = field(default_factory=list)

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "passed": self.passed,
            "checks": [{**asdict(check), "passed": check.passed} for check in self.checks],
            "policy": self.policy,
            "metrics": self.metrics,
            "inherited": self.inherited,
        }


# ---- evaluation ----------------------------------------------------------------------------


def _number(metrics: dict[str, Any] | None, key: str, *, where: str, required: bool) -> float | None:
    value = None if metrics is None else metrics.get(key)
    if value is None:
        if required:
            raise UnlearnopsError(f"{where}: missing metric '{key}'; pass the output of `unlearnops evaluate`")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnlearnopsError(f"{where}: metric '{key}' is {value!r}, expected a finite number")
    return float(value)


def _bound(name: str, measured: float | None, threshold: float, direction: str, detail: str, *, missing: Status = "skipped") -> Check:
    if measured is None:
        return Check(name, None, threshold, direction, missing, detail)
    ok = measured <= threshold if direction == "max" else measured >= threshold
    return Check(name, round(measured, 6), threshold, direction, "passed" if ok else "failed", detail)


def evaluate_gate(
    quantized: dict[str, Any],
    *,
    full_precision: dict[str, Any] | None,
    source: dict[str, Any] | None,
    policy: Policy,
    inherited: Iterable[InheritedRequest] = (),
) -> GateReport:
    """Apply `policy` to the quantized model's metrics; pure, no I/O."""
    if not isinstance(quantized, dict):
        raise UnlearnopsError("quantized metrics: expected a mapping of metric -> value (`unlearnops evaluate --json` output)")
    checks = [_metric_check(metric, quantized, source, policy) for metric in metrics.gated()]
    checks += [_gap_check(metric, quantized, full_precision, policy) for metric in metrics.with_gap()]
    inherited = list(inherited)
    for earlier in inherited:
        checks.extend(_inherited_checks(earlier, policy))
    return GateReport(
        passed=all(check.passed for check in checks),
        checks=checks,
        policy=policy.model_dump(),
        metrics={"quantized": quantized, "full_precision": full_precision, "source": source},
        inherited=[asdict(earlier) for earlier in inherited],
    )


def _metric_check(metric: Metric, quantized: dict[str, Any], source: dict[str, Any] | None, policy: Policy) -> Check:
    """The metric's bound on the quantized model (a ratio bound compares it with the source's)."""
    bound = metric.bound
    threshold = getattr(policy, bound.threshold)
    value = _number(quantized, metric.key, where="quantized metrics", required=False)
    if value is None:
        # Forgetting that was not measured cannot be shown: without an `unmeasured` reason the check FAILS.
        if bound.unmeasured is None:
            detail = f"not measured: the corpus has no {metric.needs[0]}.json; add it so forgetting can be verified"
            return _bound(metric.check, None, threshold, bound.direction, detail, missing="failed")
        return _bound(metric.check, None, threshold, bound.direction, bound.unmeasured)
    if bound.kind == "abs_max":
        return _bound(metric.check, abs(value), threshold, "max", f"|{metric.label}| of the quantized model")
    if bound.kind == "min_ratio_to_source":
        source_value = _number(source, metric.key, where="source metrics", required=False)
        if source_value is None:
            return _bound(metric.check, None, threshold, "min", f"no source metrics, {metric.label} not compared")
        # A source that knows nothing of the retain set cannot lose utility: the ratio is 1.
        ratio = value / source_value if source_value > 0 else 1.0
        return _bound(metric.check, ratio, threshold, "min", f"{metric.label} quantized {value:.2f} / source {source_value:.2f}")
    return _bound(metric.check, value, threshold, "max", f"{metric.description}, quantized")


def _gap_check(metric: Metric, quantized: dict[str, Any], full_precision: dict[str, Any] | None, policy: Policy) -> Check:
    name, threshold = f"quantization_gap.{metric.key}", getattr(policy, QUANT_GAP)
    fp_value = _number(full_precision, metric.key, where="full-precision metrics", required=False)
    if fp_value is None:
        return _bound(name, None, threshold, "max", "no full-precision metrics, gap not measured")
    q_value = _number(quantized, metric.key, where="quantized metrics", required=False)
    if q_value is None:
        return _bound(name, None, threshold, "max", f"no quantized {metric.label}, gap not measured")
    if metric.bound.kind == "abs_max":
        # Two-sided metric: what quantization may not add is distance from 0 (either sign).
        detail = (f"|{metric.label}| quantized |{q_value:+.2f}| - full precision |{fp_value:+.2f}| "
                  f"(signed change {q_value - fp_value:+.2f}): privacy lost to quantization")
        return _bound(name, abs(q_value) - abs(fp_value), threshold, "max", detail)
    detail = f"{metric.label} quantized {q_value:.2f} - full precision {fp_value:.2f}: forgetting lost to quantization"
    return _bound(name, q_value - fp_value, threshold, "max", detail)


def _inherited_checks(earlier: InheritedRequest, policy: Policy) -> list[Check]:
    checks = []
    for metric in metrics.inherited():
        name, threshold = f"inherited.{earlier.request_id}.{metric.key}", getattr(policy, metric.bound.threshold)
        if earlier.problem or earlier.metrics is None:
            detail = earlier.problem or "not re-evaluated"
            checks.append(_bound(name, None, threshold, "max", detail, missing="failed"))
            continue
        value = _number(earlier.metrics, metric.key, where=f"inherited request {earlier.request_id}", required=True)
        detail = f"{metric.label} on earlier request {earlier.request_id}'s forget set, quantized"
        checks.append(_bound(name, value, threshold, "max", detail))
    return checks


# ---- writers -------------------------------------------------------------------------------


def to_markdown(report: GateReport) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"# Release gate: {verdict}",
        "",
        "Checks on the quantized model (the one that ships).",
        "",
        "| check | measured | threshold | result | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for check in report.checks:
        measured = "-" if check.measured is None else f"{check.measured:.4g}"
        bound = f"{'<=' if check.direction == 'max' else '>='} {check.threshold:.4g}"
        lines.append(f"| `{check.name}` | {measured} | {bound} | {check.status} | {check.detail} |")
    lines += ["", "## Metrics per precision", "", "| metric | source | full precision | quantized |", "| --- | --- | --- | --- |"]
    for metric in METRICS.values():
        cells = [_fmt((report.metrics.get(role) or {}).get(metric.key)) for role in ("source", "full_precision", "quantized")]
        lines.append(f"| {metric.label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.2f}"


def to_junit_xml(report: GateReport, *, suite: str = "unlearnops.gate") -> str:
    """One testcase per check; a failure's message is 'measured X > max Y (...)'."""
    import xml.etree.ElementTree as ET

    failures = sum(check.status == "failed" for check in report.checks)
    skipped = sum(check.status == "skipped" for check in report.checks)
    root = ET.Element("testsuites", name="unlearnops", tests=str(len(report.checks)), failures=str(failures))
    suite_el = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(report.checks)), failures=str(failures), skipped=str(skipped), errors="0"
    )
    for check in report.checks:
        case = ET.SubElement(suite_el, "testcase", classname=suite, name=check.name)
        if check.status == "failed":
            ET.SubElement(case, "failure", message=check.message(), type="threshold").text = check.message()
        elif check.status == "skipped":
            ET.SubElement(case, "skipped", message=check.detail)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def plot(report: GateReport, path: Path) -> Path:
    """Bars per precision for each gated metric, with the threshold as a dashed line (written atomically)."""
    import io

    from matplotlib.figure import Figure  # the object API draws with Agg: no display, no global backend switch

    panels = [(metric.key, _panel_title(metric), _threshold_line(report, metric)) for metric in metrics.gated()]
    roles = [("source", "source"), ("full_precision", "full precision"), ("quantized", "quantized")]
    figure = Figure(figsize=(3.2 * len(panels), 3.4), layout="tight")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (key, title, threshold) in zip(axes, panels):
        values = [abs(v) if isinstance(v := (report.metrics.get(role) or {}).get(key), (int, float)) else 0.0 for role, _ in roles]
        axis.bar([label for _, label in roles], values, color=["#999999", "#4c72b0", "#dd8452"])
        if threshold is not None:
            axis.axhline(threshold, color="red", linestyle="--", linewidth=1, label="threshold")
        axis.set_title(title, fontsize=9)
        axis.tick_params(axis="x", labelsize=7, rotation=20)
    figure.suptitle(f"release gate: {report.decision}", fontsize=11)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=90)
    write_bytes(path, png.getvalue())
    return path


def _panel_title(metric: Metric) -> str:
    return f"|{metric.label}|" if metric.bound.kind == "abs_max" else f"{metric.label} ({metric.reading})"


def _threshold_line(report: GateReport, metric: Metric) -> float | None:
    """The threshold in the metric's units; a ratio bound's is min ratio x the source's value."""
    threshold = report.policy[metric.bound.threshold]
    if metric.bound.kind != "min_ratio_to_source":
        return threshold
    source_value = (report.metrics.get("source") or {}).get(metric.key)
    return threshold * source_value if isinstance(source_value, (int, float)) else None


REPORT_FILES = {"json": "gate.json", "markdown": "gate.md", "junit": "gate.junit.xml", "plot": "gate.png"}


def write_reports(report: GateReport, out: Path | str) -> dict[str, Path]:
    """Write gate.json, gate.md, gate.junit.xml and gate.png into `out`; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in REPORT_FILES.items()}
    write_json(paths["json"], report.to_dict())
    write_text(paths["markdown"], to_markdown(report))
    write_text(paths["junit"], to_junit_xml(report))
    plot(report, paths["plot"])
    return paths
