"""What `run` returns and leaves on the parent MLflow run: the decision, the metrics per precision,
the stage timings, and where the evidence is."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..metrics import inherited as inherited_metrics
from ..registry import TAG_GATE_SKIPPED
from .context import RunContext
from .runner import StageTiming

GATE_TAG = "unlearnops.gate"


@dataclass
class RunSummary:
    request_id: str
    run_id: str
    passed: bool
    version: dict[str, Any] | None
    gate: dict[str, Any]
    metrics: dict[str, float]
    stages: list[StageTiming] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reports_dir: str | None = None  # gate.json, gate.md, gate.junit.xml, gate.png in the stage store
    workspace: str | None = None  # the workspace root: stage outputs, MLflow store, audit log

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(ctx: RunContext, request, version, report: dict, metrics: dict, reports_dir) -> RunSummary:
    """The run's summary; its flat metrics and the gate decision are logged on the parent run."""
    passed = version is not None
    flat = flat_metrics(metrics)
    ctx.tracker.log(ctx.run_id, metrics={**flat, "gate.passed": float(passed)})
    ctx.tracker.client.set_tag(ctx.run_id, GATE_TAG, "passed" if passed else "failed")
    ctx.tracker.client.set_tag(ctx.run_id, TAG_GATE_SKIPPED, json.dumps(report.get("skipped", [])))
    failures = [] if passed else [f"{c['name']}: {check_message(c)}" for c in report["checks"] if c["status"] == "failed"]
    return RunSummary(
        request.request_id, ctx.run_id, passed, version.to_dict() if version else None, report, flat, ctx.runner.timings,
        failures, str(reports_dir), str(ctx.workspace.root),
    )


def flat_metrics(metrics: dict) -> dict[str, float]:
    """{"q.verbmem_f": ..., "fp.knowmem_r": ..., "source.auc": ..., "inherited.<id>.verbmem_f": ...}."""
    flat = {}
    for role, prefix in (("source", "source"), ("full_precision", "fp"), ("quantized", "q")):
        for key, value in (metrics[role] or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{prefix}.{key}"] = float(value)
    rechecked = [metric.key for metric in inherited_metrics()]
    for item in metrics["inherited"]:
        for key, value in (item["metrics"] or {}).items():
            if key in rechecked and isinstance(value, (int, float)):
                flat[f"inherited.{item['request_id']}.{key}"] = float(value)
    return flat


def check_message(check: dict) -> str:
    from ..gate import check_from_dict

    return check_from_dict(check).message()
