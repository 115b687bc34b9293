"""The release gate: policy thresholds applied to the QUANTIZED model, the one that ships.

`evaluate_gate` is pure (metric dicts in, a `GateReport` out), so every check can be tested
without a model. The writers turn a report into the evidence a release needs: JSON (machines),
Markdown (reviewers), JUnit XML (CI dashboards: one testcase per check) and a PNG plot of the
metrics per precision against the thresholds.

Checks (names are stable; CI and tests key on them):
  verbmem_f                     quantized VerbMem_f <= max_verbmem_f   (unmeasured: fails)
  knowmem_f                     quantized KnowMem_f <= max_knowmem_f   (unmeasured: fails)
  utility_ratio                 quantized KnowMem_r / source KnowMem_r >= min_utility_ratio
  privleak                      |quantized PrivLeak| <= max_abs_privleak
  quantization_gap.verbmem_f    quantized - full precision VerbMem_f <= max_quant_gap
  quantization_gap.knowmem_f    quantized - full precision KnowMem_f <= max_quant_gap
  inherited.<request>.verbmem_f / .knowmem_f
                                the same forget bounds on every earlier request the model
                                inherits (sustainability: forgetting must not wear off)

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

from .errors import UnlearnopsError
from .fileio import write_json
from .policy import Policy

Status = Literal["passed", "failed", "skipped"]

# Human labels for the metrics the gate reads (MUSE's 0-100 scale).
METRIC_LABELS = {
    "verbmem_f": "VerbMem_f",
    "knowmem_f": "KnowMem_f",
    "knowmem_r": "KnowMem_r",
    "privleak": "PrivLeak",
}


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
    verbmem = _number(quantized, "verbmem_f", where="quantized metrics", required=False)
    knowmem = _number(quantized, "knowmem_f", where="quantized metrics", required=False)
    knowmem_r = _number(quantized, "knowmem_r", where="quantized metrics", required=False)
    privleak = _number(quantized, "privleak", where="quantized metrics", required=False)
    # Forgetting that was not measured cannot be shown: a missing forget metric FAILS its check.
    checks = [
        _bound("verbmem_f", verbmem, policy.max_verbmem_f, "max", _or_missing(verbmem, "VerbMem on the forget set, quantized", "verbmem/forget.json"), missing="failed"),
        _bound("knowmem_f", knowmem, policy.max_knowmem_f, "max", _or_missing(knowmem, "KnowMem on the forget QA, quantized", "knowmem/forget_qa.json"), missing="failed"),
        _utility_check(knowmem_r, source, policy),
        _bound(
            "privleak",
            None if privleak is None else abs(privleak),
            policy.max_abs_privleak,
            "max",
            "|PrivLeak| of the quantized model" if privleak is not None else "no retrain AUC, PrivLeak not computed",
        ),
        *_gap_checks(quantized, full_precision, policy),
    ]
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


def _or_missing(value: float | None, detail: str, needs: str) -> str:
    return detail if value is not None else f"not measured: the corpus has no {needs}; add it so forgetting can be verified"


def _utility_check(knowmem_r: float | None, source: dict[str, Any] | None, policy: Policy) -> Check:
    source_r = _number(source, "knowmem_r", where="source metrics", required=False)
    if knowmem_r is None:
        return _bound("utility_ratio", None, policy.min_utility_ratio, "min", "no retain QA (knowmem/retain_qa.json), utility not measured")
    if source_r is None:
        return _bound("utility_ratio", None, policy.min_utility_ratio, "min", "no source metrics, utility not compared")
    # A source that knows nothing of the retain set cannot lose utility: the ratio is 1.
    ratio = knowmem_r / source_r if source_r > 0 else 1.0
    detail = f"KnowMem_r quantized {knowmem_r:.2f} / source {source_r:.2f}"
    return _bound("utility_ratio", ratio, policy.min_utility_ratio, "min", detail)


def _gap_checks(quantized: dict[str, Any], full_precision: dict[str, Any] | None, policy: Policy) -> list[Check]:
    checks = []
    for metric in ("verbmem_f", "knowmem_f"):
        name = f"quantization_gap.{metric}"
        fp_value = _number(full_precision, metric, where="full-precision metrics", required=False)
        if fp_value is None:
            checks.append(_bound(name, None, policy.max_quant_gap, "max", "no full-precision metrics, gap not measured"))
            continue
        q_value = _number(quantized, metric, where="quantized metrics", required=False)
        if q_value is None:
            checks.append(_bound(name, None, policy.max_quant_gap, "max", f"no quantized {METRIC_LABELS[metric]}, gap not measured"))
            continue
        detail = f"{METRIC_LABELS[metric]} quantized {q_value:.2f} - full precision {fp_value:.2f}: forgetting lost to quantization"
        checks.append(_bound(name, q_value - fp_value, policy.max_quant_gap, "max", detail))
    return checks


def _inherited_checks(earlier: InheritedRequest, policy: Policy) -> list[Check]:
    checks = []
    for metric, threshold in (("verbmem_f", policy.max_verbmem_f), ("knowmem_f", policy.max_knowmem_f)):
        name = f"inherited.{earlier.request_id}.{metric}"
        if earlier.problem or earlier.metrics is None:
            detail = earlier.problem or "not re-evaluated"
            checks.append(_bound(name, None, threshold, "max", detail, missing="failed"))
            continue
        value = _number(earlier.metrics, metric, where=f"inherited request {earlier.request_id}", required=True)
        detail = f"{METRIC_LABELS[metric]} on earlier request {earlier.request_id}'s forget set, quantized"
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
    for key, label in METRIC_LABELS.items():
        cells = [_fmt((report.metrics.get(role) or {}).get(key)) for role in ("source", "full_precision", "quantized")]
        lines.append(f"| {label} | {' | '.join(cells)} |")
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
    """Bars per precision for each gated metric, with the threshold as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("verbmem_f", "VerbMem_f (lower is better)", report.policy["max_verbmem_f"]),
        ("knowmem_f", "KnowMem_f (lower is better)", report.policy["max_knowmem_f"]),
        ("knowmem_r", "KnowMem_r (utility)", _utility_floor(report)),
        ("privleak", "|PrivLeak|", report.policy["max_abs_privleak"]),
    ]
    roles = [("source", "source"), ("full_precision", "full precision"), ("quantized", "quantized")]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for axis, (key, title, threshold) in zip(axes, panels):
        values = [abs(v) if isinstance(v := (report.metrics.get(role) or {}).get(key), (int, float)) else 0.0 for role, _ in roles]
        axis.bar([label for _, label in roles], values, color=["#999999", "#4c72b0", "#dd8452"])
        if threshold is not None:
            axis.axhline(threshold, color="red", linestyle="--", linewidth=1, label="threshold")
        axis.set_title(title, fontsize=9)
        axis.tick_params(axis="x", labelsize=7, rotation=20)
    figure.suptitle(f"release gate: {report.decision}", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _utility_floor(report: GateReport) -> float | None:
    """The utility threshold in KnowMem_r units: min ratio x source KnowMem_r."""
    source_r = (report.metrics.get("source") or {}).get("knowmem_r")
    return report.policy["min_utility_ratio"] * source_r if isinstance(source_r, (int, float)) else None


REPORT_FILES = {"json": "gate.json", "markdown": "gate.md", "junit": "gate.junit.xml", "plot": "gate.png"}


def write_reports(report: GateReport, out: Path | str) -> dict[str, Path]:
    """Write gate.json, gate.md, gate.junit.xml and gate.png into `out`; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in REPORT_FILES.items()}
    write_json(paths["json"], report.to_dict())
    _write_text(paths["markdown"], to_markdown(report))
    _write_text(paths["junit"], to_junit_xml(report))
    plot(report, paths["plot"])
    return paths


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
