"""The last two stages: the release gate on the quantized model, and registration of a passing one.

`register` is last and idempotent: registry.register_version keys on the gate stage's key, so a
killed run never leaves a registered version behind and a rerun never registers twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import audit, registry
from ..fileio import canonical_json, sha256_bytes, sha256_file
from ..metrics import METRICS
from .context import RunContext
from .data import RequestData
from .runner import Stage
from .stages import StageResult

GATE_ARTIFACTS = "gate"  # the parent run's folder for gate.json, gate.md, gate.junit.xml, gate.png


def gate_stage(ctx: RunContext, request, metrics: dict[str, Any], policy, quantized: StageResult) -> StageResult:
    """Apply the policy to the quantized model's metrics; write the reports; record the decision."""
    from ..gate import InheritedRequest, evaluate_gate, write_reports

    def build(tmp: Path) -> dict:
        report = evaluate_gate(
            metrics["quantized"], full_precision=metrics["full_precision"], source=metrics["source"], policy=policy,
            inherited=[InheritedRequest(**item) for item in metrics["inherited"]],
        )
        write_reports(report, tmp / "out")
        return {"report": report.to_dict()}

    inputs = {"quantized": quantized.record["model_sha256"], "metrics": sha256_bytes(canonical_json(metrics)), "request": ctx.request_sha}
    result = ctx.runner.run(Stage("gate", policy.model_dump(), inputs, build))
    passed = result.record["report"]["passed"]
    ctx.audit.append(
        audit.GATE_DECIDED, run_id=ctx.run_id, request_id=request.request_id, passed=passed,
        gate_report_sha256=sha256_file(result.path / "out" / "gate.json"),
    )
    ctx.runner.announce("gate", "passed" if passed else "FAILED")
    ctx.tracker.log(ctx.run_id, artifacts=[result.path / "out"], artifact_path=GATE_ARTIFACTS)
    return result


def register(ctx: RunContext, request, data: RequestData, source, unlearned: StageResult, quantized: StageResult,
             gate: StageResult, metrics: dict[str, Any]) -> registry.RegisteredVersion:
    """Register the quantized model (and its full-precision weights) as a version with alias @<register.alias>."""
    alias = ctx.config.registration.alias
    with ctx.runner.step("register") as step:
        name = request.registered_model_name or ctx.config.registration.name or (source.name if source else "unlearnops-model")
        existing = registry.find_by_run_key(name, gate.key, tracking_uri=ctx.tracking_uri)
        run_id = existing.source.split("/")[1] if existing and existing.source.startswith("runs:/") else ctx.run_id
        if existing is None:
            ctx.tracker.log(ctx.run_id, artifacts=[quantized.path / "out"], artifact_path=registry.MODEL_ARTIFACT)
            ctx.tracker.log(ctx.run_id, artifacts=[unlearned.path / "out" / "model"], artifact_path=registry.FULL_PRECISION_ARTIFACT)
        tags = version_tags(ctx, request, data, source, quantized, metrics, gate.record["report"])
        tags[registry.TAG_FP_SHA] = unlearned.record["model_sha256"]
        version = registry.register_version(
            name=name, run_id=run_id, tags=tags, run_key=gate.key, tracking_uri=ctx.tracking_uri, audit=ctx.audit, alias=alias,
        )
        ctx.runner.announce("register", f"{version.ref} @{alias}")
        step.cached = existing is not None
        step.params = {"name": name, "version": version.version, "run_key": gate.key}
    return version


def version_tags(ctx: RunContext, request, data: RequestData, source, quantized: StageResult, metrics, report: dict) -> dict[str, str]:
    from ..policy import Policy, policy_record

    lineage = source.request_ids if source is not None else []
    request_ids = list(dict.fromkeys([*lineage, request.request_id]))
    records = source.request_records() if source is not None else {}
    # The policy the gate applied is the one this request was accepted with: later versions re-check it under it.
    accepted = policy_record(Policy.model_validate(report["policy"]))
    records[request.request_id] = {"forget_corpus": str(data.corpus), "corpus_sha256": data.corpus_sha256, **accepted}
    unlearn_config = ctx.config.unlearn_config()
    tags = {
        registry.TAG_REQUEST_IDS: json.dumps(request_ids),
        registry.TAG_SOURCE_VERSION: f"{source.name}/{source.version}" if source else str(request.model),
        registry.TAG_GATE: "passed",
        registry.TAG_GATE_SKIPPED: json.dumps(report.get("skipped", [])),
        registry.TAG_MODEL_SHA: quantized.record["model_sha256"],
        registry.TAG_ROLE: "unlearned",
        registry.TAG_QUANT_SCHEME: ctx.config.quantize.scheme,
        registry.TAG_METHOD: f"{unlearn_config.method}+{unlearn_config.regularizer}/{unlearn_config.mode}",
        "unlearnops.settings": json.dumps(unlearn_config.model_dump(), sort_keys=True)[:4000],
        "unlearnops.pipeline": ctx.config.name,
        "unlearnops.run_id": ctx.run_id,
        **{registry.request_tag(rid): json.dumps(record, sort_keys=True) for rid, record in records.items()},
    }
    for role, prefix in (("quantized", "q"), ("full_precision", "fp")):
        for key in METRICS:
            if isinstance(value := metrics[role].get(key), (int, float)):
                tags[f"{registry.TAG_METRIC_PREFIX}{prefix}.{key}"] = f"{value:.4f}"
    return tags
