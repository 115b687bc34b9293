"""The last two stages: the release gate on the quantized model, and registration of a passing one.

`register` is last and idempotent: the evidence layer keys the version on the gate stage's key, so
a killed run never leaves a registered version behind and a rerun never registers twice. The gate
decision is recorded with the report's hash and the hash of the model it measured, and the
registration record carries both, with the requests and the hashes of their validated data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import registry
from ..fileio import canonical_json, sha256_bytes, sha256_file
from ..metrics import METRICS
from .context import RunContext
from .data import RequestData
from .runner import Stage
from .stages import StageResult

GATE_ARTIFACTS = "gate"  # the parent run's folder for gate.json, gate.md, gate.junit.xml, gate.png
GATE_REPORT = "gate.json"


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
    ctx.evidence.gate_decided(
        passed=passed, report=result.path / "out" / GATE_REPORT, model_sha256=quantized.record["model_sha256"],
        run_id=ctx.run_id, request_id=request.request_id,
    )
    ctx.runner.announce("gate", "passed" if passed else "FAILED")
    ctx.tracker.log(ctx.run_id, artifacts=[result.path / "out"], artifact_path=GATE_ARTIFACTS)
    return result


def register(ctx: RunContext, request, data: RequestData, source, registration, source_dir: StageResult, unlearned: StageResult,
             quantized: StageResult, gate: StageResult, metrics: dict[str, Any]) -> registry.RegisteredVersion:
    """Register the quantized model (and its full-precision weights) as a version with alias @<register.alias>.

    The version claims this request and every request the source's signed registration record
    claims (re-checked by the gate), each with the hash of its validated data.
    """
    alias = ctx.config.registration.alias
    with ctx.runner.step("register") as step:
        name = request.registered_model_name or ctx.config.registration.name or (source.name if source else "unlearnops-model")
        existing = registry.find_by_run_key(name, gate.key, tracking_uri=ctx.tracking_uri)
        run_id = existing.source.split("/")[1] if existing and existing.source.startswith("runs:/") else ctx.run_id
        if existing is None:
            ctx.tracker.log(ctx.run_id, artifacts=[quantized.path / "out"], artifact_path=registry.MODEL_ARTIFACT)
            ctx.tracker.log(ctx.run_id, artifacts=[unlearned.path / "out" / "model"], artifact_path=registry.FULL_PRECISION_ARTIFACT)
        report = gate.record["report"]
        inherited = registration.request_ids if registration is not None else []
        request_data = dict(registration.request_data) if registration is not None else {}
        request_data[request.request_id] = data.corpus_sha256
        settings = ctx.config.unlearn_config()
        version = ctx.evidence.register(
            name=name, run_id=run_id, run_key=gate.key, model_sha256=quantized.record["model_sha256"],
            gate_report_sha256=sha256_file(gate.path / "out" / GATE_REPORT),
            request_ids=[*inherited, request.request_id], request_data=request_data,
            request_policies=_accepted_policies(ctx, registration, request.request_id, report),
            # A local source directory is named by its content: its path means nothing on another
            # machine (and may be longer than an audit field).
            source_version=f"{source.name}/{source.version}" if source else f"local:{source_dir.record['model_sha256']}",
            fp_model_sha256=unlearned.record["model_sha256"], metrics=_gated_metrics(metrics), alias=alias,
            extra_tags={
                registry.TAG_QUANT_SCHEME: ctx.config.quantize.scheme,
                registry.TAG_METHOD: f"{settings.method}+{settings.regularizer}/{settings.mode}",
                registry.TAG_GATE_SKIPPED: json.dumps(report.get("skipped", [])),
                "unlearnops.settings": json.dumps(settings.model_dump(), sort_keys=True)[:4000],
                "unlearnops.pipeline": ctx.config.name,
                "unlearnops.run_id": ctx.run_id,
            },
        )
        ctx.runner.announce("register", f"{version.ref} @{alias}")
        step.cached = existing is not None
        step.params = {"name": name, "version": version.version, "run_key": gate.key}
    return version


def _accepted_policies(ctx: RunContext, registration, request_id: str, report: dict) -> dict[str, dict]:
    """request id -> the gate policy it was accepted with: this request's is the policy this gate
    applied; each inherited request keeps its own (checked against the source's signed record)."""
    from ..policy import Policy

    policies = {}
    if registration is not None:
        for inherited_id, (record, _) in ctx.evidence.accepted_policies(registration).items():
            if record is not None:
                policies[inherited_id] = record["policy"]
    policies[request_id] = Policy.model_validate(report["policy"]).model_dump(mode="json")
    return policies


def _gated_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """{"q.verbmem_f": ..., "fp.knowmem_r": ...}: the numbers shown beside a version in `models`."""
    found = {}
    for role, prefix in (("quantized", "q"), ("full_precision", "fp")):
        for key in METRICS:
            if isinstance(value := metrics[role].get(key), (int, float)) and not isinstance(value, bool):
                found[f"{prefix}.{key}"] = value
    return found
