"""The release gate: policy thresholds applied to the QUANTIZED model, the one that ships.

`evaluate_gate` is pure (metric dicts in, a `GateReport` out), so every check can be tested
without a model. The writers turn a report into the evidence a release needs: JSON (machines),
Markdown (reviewers), JUnit XML (CI dashboards: one testcase per check) and a PNG plot of the
metrics per precision against the thresholds.

Checks, one set per metric in the registry (unlearnops.metrics), in its order; the names are
stable (CI and tests key on them). With MUSE's metrics:
  verbmem_f                     quantized VerbMem_f <= max_verbmem_f
  knowmem_f                     quantized KnowMem_f <= max_knowmem_f
  utility_ratio                 quantized KnowMem_r / source KnowMem_r >= min_utility_ratio
  privleak                      |quantized PrivLeak| <= max_abs_privleak, both directions: a
                                failure names its side (under-unlearning: < 0, the forget texts
                                still leak membership; over-unlearning: > 0, they stand out)
  quantization_gap.verbmem_f    quantized - full precision VerbMem_f <= max_quant_gap
  quantization_gap.knowmem_f    quantized - full precision KnowMem_f <= max_quant_gap
  quantization_gap.privleak     |quantized PrivLeak| - |full precision PrivLeak| <= max_quant_gap
  inherited.<request>.verbmem_f / .knowmem_f
                                the forget bounds on every earlier request the model inherits
                                (sustainability), under the stricter of the policy that request
                                was accepted with (its registration record) and this one
A metric's `Bound` gives its check (kind, threshold, what an unmeasured value means);
`quantization_gap` and `inherited` add the other two.

Measured values are reported signed (PrivLeak -85.37, never 85.37); an abs_max bound compares
their size. A check whose input is missing is never passed silently: the policy's `may_skip`
says which checks may pass unmeasured (reported as `skipped` in every output: the table, JSON,
JUnit and the registry tag `unlearnops.gate_skipped`); any other unmeasured check FAILS. By
default PrivLeak may not be skipped. The report carries PrivLeak's reference (the retrain
model's AUC and its standard error at the request's sample sizes) and says when the sample is
too small for the bound to mean anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from . import metrics
from .errors import UnlearnopsError
from .fileio import write_bytes, write_json, write_text
from .metrics import METRICS, Metric
from .policy import MAY_SKIP, QUANT_GAP, Policy, accepted_policy, gap_check, inherited_check

Status = Literal["passed", "failed", "skipped"]
Direction = Literal["max", "min", "abs_max"]


@dataclass(frozen=True)
class Check:
    name: str
    measured: float | None  # signed, as measured; an abs_max bound compares |measured|
    threshold: float
    direction: Direction
    status: Status
    detail: str
    side: str | None = None  # abs_max: which side of 0 the value is on (PrivLeak: under- / over-unlearning)

    @property
    def passed(self) -> bool:
        return self.status != "failed"

    @property
    def measured_text(self) -> str:
        """The value as the tables show it: signed for a two-sided bound, 'not measured' when missing."""
        if self.measured is None:
            return "not measured"
        return f"{self.measured:+.4g}" if self.direction == "abs_max" else f"{self.measured:.4g}"

    @property
    def bound_text(self) -> str:
        return {"max": "<= ", "min": ">= ", "abs_max": "|x| <= "}[self.direction] + f"{self.threshold:.4g}"

    def message(self) -> str:
        """'measured 41.2 > max 30 (...)', 'measured -85.37: |-85.37| > max 50, under-unlearning (...)'."""
        if self.measured is None:
            return f"not measured: {self.detail}"
        ok = self.status != "failed"
        if self.direction == "abs_max":
            side = f", {self.side}" if self.side else ""
            return f"measured {self.measured:+.4g}: |{self.measured:+.4g}| {'<=' if ok else '>'} max {self.threshold:.4g}{side} ({self.detail})"
        relation = ("<=" if ok else ">") if self.direction == "max" else (">=" if ok else "<")
        return f"measured {self.measured:.4g} {relation} {self.direction} {self.threshold:.4g} ({self.detail})"


def check_from_dict(document: dict[str, Any]) -> Check:
    """A Check back from its JSON form (gate.json, the gate stage's record)."""
    return Check(**{item.name: document.get(item.name) for item in fields(Check)})


@dataclass(frozen=True)
class InheritedRequest:
    """An earlier request the model must still satisfy, and the quantized model's metrics on its forget set."""

    request_id: str
    metrics: dict[str, Any] | None
    problem: str | None = None  # why it could not be measured (corpus missing or changed)
    record: dict[str, Any] | None = None  # its registration record: forget corpus, sha256, the policy it was accepted with


@dataclass
class GateReport:
    passed: bool
    checks: list[Check]
    policy: dict[str, Any]
    metrics: dict[str, dict[str, Any] | None]  # "quantized" / "full_precision" / "source"
    inherited: list[dict[str, Any]] = field(default_factory=list)
    privleak_reference: dict[str, Any] | None = None  # the retrain AUC, its uncertainty, whether the bound can be resolved

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == "failed"]

    @property
    def skipped(self) -> list[str]:
        """Checks that passed without a measurement, because the policy allows it."""
        return [check.name for check in self.checks if check.status == "skipped"]

    @property
    def unmeasured(self) -> list[str]:
        """Every check without a measurement: the skipped ones and those that failed for it."""
        return [check.name for check in self.checks if check.measured is None]

    @property
    def verdict(self) -> str:
        """One line: the decision, and what was not checked ('passed; not measured, skipped by policy: utility_ratio')."""
        parts = [self.decision.upper()]
        if self.skipped:
            parts.append(f"not measured, skipped by the policy: {', '.join(self.skipped)}")
        if failed_unmeasured := [name for name in self.unmeasured if name not in self.skipped]:
            parts.append(f"not measured, so failed: {', '.join(failed_unmeasured)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "passed": self.passed,
            "verdict": self.verdict,
            "skipped": self.skipped,
            "unmeasured": self.unmeasured,
            "checks": [{**asdict(check), "passed": check.passed} for check in self.checks],
            "policy": self.policy,
            "privleak_reference": self.privleak_reference,
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


def _bound(name: str, measured: float, threshold: float, direction: Direction, detail: str, side: str | None = None) -> Check:
    size = abs(measured) if direction == "abs_max" else measured
    ok = size >= threshold if direction == "min" else size <= threshold
    return Check(name, round(measured, 6), threshold, direction, "passed" if ok else "failed", detail, side)


def _unmeasured(name: str, threshold: float, direction: Direction, why: str, policy: Policy) -> Check:
    """A check without its measurement: skipped if the policy lets it pass unmeasured, else failed."""
    if policy.may_pass_unmeasured(name):
        return Check(name, None, threshold, direction, "skipped", f"{why}; skipped: the policy lets {name} pass unmeasured ({MAY_SKIP})")
    return Check(name, None, threshold, direction, "failed", f"{why}; the policy does not let {name} pass unmeasured (add it to {MAY_SKIP} to release without it)")


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
    reference = privleak_reference(quantized, policy) if "privleak" in METRICS else None
    checks = [_metric_check(metric, quantized, source, policy, reference) for metric in metrics.gated()]
    checks += [_gap_check(metric, quantized, full_precision, policy) for metric in metrics.with_gap()]
    inherited = list(inherited)
    for earlier in inherited:
        checks.extend(_inherited_checks(earlier, policy))
    return GateReport(
        passed=all(check.passed for check in checks),
        checks=checks,
        policy=policy.model_dump(mode="json"),
        metrics={"quantized": quantized, "full_precision": full_precision, "source": source},
        inherited=[asdict(earlier) for earlier in inherited],
        privleak_reference=reference,
    )


def _metric_check(metric: Metric, quantized: dict[str, Any], source: dict[str, Any] | None, policy: Policy, reference: dict | None) -> Check:
    """The metric's bound on the quantized model (a ratio bound compares it with the source's)."""
    bound = metric.bound
    threshold = getattr(policy, bound.threshold)
    value = _number(quantized, metric.key, where="quantized metrics", required=False)
    if value is None:
        why = bound.unmeasured or f"not measured: the corpus has no {metric.needs[0]}.json; add it so forgetting can be verified"
        return _unmeasured(metric.check, threshold, _direction(bound), why, policy)
    if bound.kind == "abs_max":
        side = _side(bound, value)
        detail = _privleak_detail(quantized, value, reference) if metric.key == "privleak" and reference else f"{metric.label} of the quantized model"
        if side and abs(value) > threshold:
            detail = f"{metric.label} bound NOT met, {side}; {detail}"
        return _bound(metric.check, value, threshold, "abs_max", detail, side=side.split(" (")[0] if side else None)
    if bound.kind == "min_ratio_to_source":
        source_value = _number(source, metric.key, where="source metrics", required=False)
        if source_value is None:
            return _unmeasured(metric.check, threshold, "min", f"no source metrics, {metric.label} not compared", policy)
        # A source that knows nothing of the retain set cannot lose utility: the ratio is 1.
        ratio = value / source_value if source_value > 0 else 1.0
        return _bound(metric.check, ratio, threshold, "min", f"{metric.label} quantized {value:.2f} / source {source_value:.2f}")
    return _bound(metric.check, value, threshold, "max", f"{metric.description}, quantized")


def _direction(bound) -> Direction:
    return "abs_max" if bound.kind == "abs_max" else bound.direction


def _side(bound, value: float) -> str | None:
    """Which side of 0 a two-sided metric is on, as its Bound names it ('under-unlearning (...)')."""
    if value == 0 or not bound.sides:
        return None
    return bound.sides[0] if value < 0 else bound.sides[1]


def _privleak_detail(quantized: dict[str, Any], value: float, reference: dict) -> str:
    auc = quantized.get("auc")
    auc_text = f"AUC {auc:.3f} vs the retrain model's {reference['retrain_auc']:.3f}" if isinstance(auc, (int, float)) else "AUC not reported"
    detail = f"PrivLeak {value:+.2f} of the quantized model ({auc_text})"
    if reference.get("too_small"):
        detail += f"; {reference['message']}"
    return detail


def _gap_check(metric: Metric, quantized: dict[str, Any], full_precision: dict[str, Any] | None, policy: Policy) -> Check:
    name, threshold = gap_check(metric.key), getattr(policy, QUANT_GAP)
    fp_value = _number(full_precision, metric.key, where="full-precision metrics", required=False)
    if fp_value is None:
        return _unmeasured(name, threshold, "max", "no full-precision metrics, gap not measured", policy)
    q_value = _number(quantized, metric.key, where="quantized metrics", required=False)
    if q_value is None:
        return _unmeasured(name, threshold, "max", f"no quantized {metric.label}, gap not measured", policy)
    if metric.bound.kind == "abs_max":
        # Two-sided metric: what quantization may not add is distance from 0, on either side.
        detail = (f"{metric.label} quantized {q_value:+.2f}, full precision {fp_value:+.2f} (4-bit minus full precision "
                  f"{q_value - fp_value:+.2f}); measured: |quantized| - |full precision|, how much further from 0 quantization moved it")
        return _bound(name, abs(q_value) - abs(fp_value), threshold, "max", detail)
    detail = f"{metric.label} quantized {q_value:.2f} - full precision {fp_value:.2f}: forgetting lost to quantization"
    return _bound(name, q_value - fp_value, threshold, "max", detail)


def _inherited_checks(earlier: InheritedRequest, policy: Policy) -> list[Check]:
    """Each inherited metric on an earlier request's forget set, under the stricter of the policy that
    request was accepted with and this one (an edited or missing record never loosens a bound)."""
    accepted, source = accepted_policy(earlier.record)
    applied = policy.strictest(accepted) if accepted is not None else policy
    checks = []
    for metric in metrics.inherited():
        name, threshold = inherited_check(earlier.request_id, metric.key), getattr(applied, metric.bound.threshold)
        basis = _threshold_basis(metric, policy, accepted, source)
        if earlier.problem or earlier.metrics is None:
            checks.append(_unmeasured(name, threshold, "max", f"{earlier.problem or 'not re-evaluated'}; {basis}", applied))
            continue
        value = _number(earlier.metrics, metric.key, where=f"inherited request {earlier.request_id}", required=True)
        detail = f"{metric.label} on earlier request {earlier.request_id}'s forget set, quantized; {basis}"
        checks.append(_bound(name, value, threshold, "max", detail))
    return checks


def _threshold_basis(metric: Metric, policy: Policy, accepted: Policy | None, source: str) -> str:
    current = getattr(policy, metric.bound.threshold)
    if accepted is None:
        return f"threshold {current:g} from this run's policy ({source})"
    return f"threshold: the stricter of {getattr(accepted, metric.bound.threshold):g} ({source}) and {current:g} (this run's policy)"


# ---- PrivLeak's reference and its uncertainty ---------------------------------------------------
Z_95 = 1.959964  # two-sided 95% normal quantile


def auc_standard_error(auc: float, n_forget: int, n_holdout: int) -> float:
    """Standard error of an ROC AUC from its value and the two sample sizes (Hanley & McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_forget - 1) * (q1 - auc * auc) + (n_holdout - 1) * (q2 - auc * auc)) / (n_forget * n_holdout)
    return math.sqrt(max(variance, 0.0))


def privleak_noise(retrain_auc: float, n_forget: int, n_holdout: int) -> float:
    """Half-width of the 95% interval that sampling alone puts on PrivLeak (its points, 0-100 scale)
    at these sample sizes: 1.96 x SE(AUC) / AUC_retrain x 100."""
    return Z_95 * auc_standard_error(retrain_auc, n_forget, n_holdout) / retrain_auc * 100


def privleak_reference(quantized: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """The retrain AUC the PrivLeak check is measured against, its uncertainty at the request's
    sample sizes, and whether the bound is wider than that noise (else it cannot mean anything)."""
    retrain_auc = quantized.get("retrain_auc")
    counts = quantized.get("counts") or {}
    n_forget, n_holdout = counts.get("privleak_forget"), counts.get("privleak_holdout")
    bound = getattr(policy, METRICS["privleak"].bound.threshold)
    if not isinstance(retrain_auc, (int, float)) or not 0 < retrain_auc < 1:
        return {"retrain_auc": None, "bound": bound, "message": "no retrain AUC: PrivLeak has no reference and is not measured"}
    if not all(isinstance(n, int) and n >= 2 for n in (n_forget, n_holdout)):
        return {"retrain_auc": retrain_auc, "bound": bound,
                "message": f"retrain AUC {retrain_auc:.3f}; the sample sizes were not reported, so its uncertainty is unknown"}
    standard_error = auc_standard_error(retrain_auc, n_forget, n_holdout)
    noise = privleak_noise(retrain_auc, n_forget, n_holdout)
    reference = {
        "retrain_auc": retrain_auc, "n_forget": n_forget, "n_holdout": n_holdout,
        "auc_standard_error": round(standard_error, 4), "method": "Hanley & McNeil (1982)",
        "privleak_noise_95": round(noise, 1), "bound": bound, "too_small": noise >= bound,
    }
    sizes = f"{n_forget} forget / {n_holdout} holdout texts"
    if reference["too_small"]:
        needed = next(n for n in range(2, 100_000) if privleak_noise(retrain_auc, n, n) < bound)
        reference["texts_needed"] = needed
        reference["message"] = (
            f"sample too small for the bound to mean anything: with {sizes}, sampling alone moves PrivLeak by "
            f"+-{noise:.0f} (95%), as much as the bound {bound:g}; use at least {needed} forget and {needed} holdout texts"
        )
    else:
        reference["message"] = (
            f"retrain AUC {retrain_auc:.3f} +- {standard_error:.3f} (standard error, {sizes}); sampling alone moves "
            f"PrivLeak by +-{noise:.0f} (95%), inside the bound {bound:g}"
        )
    return reference


# ---- writers -------------------------------------------------------------------------------


def to_markdown(report: GateReport) -> str:
    lines = [
        f"# Release gate: {report.verdict}",
        "",
        "Checks on the quantized model (the one that ships). Values are signed; `|x| <=` bounds their size.",
        "",
        "| check | measured | threshold | result | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for check in report.checks:
        result = check.status + (f" ({check.side})" if check.side and check.status == "failed" else "")
        lines.append(f"| `{check.name}` | {check.measured_text} | {_cell(check.bound_text)} | {result} | {_cell(check.detail)} |")
    if report.privleak_reference:
        lines += ["", "## PrivLeak reference", "", report.privleak_reference["message"]]
    lines += ["", "## Metrics per precision", "", "| metric | source | full precision | quantized |", "| --- | --- | --- | --- |"]
    for metric in METRICS.values():
        cells = [_fmt((report.metrics.get(role) or {}).get(metric.key)) for role in ("source", "full_precision", "quantized")]
        lines.append(f"| {metric.label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A Markdown table cell: a literal | (as in |x| <= 50) would end the cell."""
    return text.replace("|", "\\|")


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
            ET.SubElement(case, "skipped", message=f"not measured: {check.detail}")
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
        values = [v if isinstance(v := (report.metrics.get(role) or {}).get(key), (int, float)) else 0.0 for role, _ in roles]
        axis.bar([label for _, label in roles], values, color=["#999999", "#4c72b0", "#dd8452"])
        two_sided = METRICS[key].bound.kind == "abs_max"
        for line in ((threshold, -threshold) if two_sided and threshold is not None else (threshold,)):
            if line is not None:
                axis.axhline(line, color="red", linestyle="--", linewidth=1)
        if two_sided:
            axis.axhline(0, color="black", linewidth=0.5)
        axis.set_title(title, fontsize=9)
        axis.tick_params(axis="x", labelsize=7, rotation=20)
    figure.suptitle(f"release gate: {report.decision}", fontsize=11)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=90)
    write_bytes(path, png.getvalue())
    return path


def _panel_title(metric: Metric) -> str:
    return f"{metric.label} (0 ideal; within the dashed lines)" if metric.bound.kind == "abs_max" else f"{metric.label} ({metric.reading})"


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
