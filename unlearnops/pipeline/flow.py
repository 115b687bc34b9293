"""The order of the stages, and the bracket around them: the parent MLflow run and the audit
log's run.started / run.finished records.

    validate -> source -> unlearn -> quantize -> evaluate -> gate -> register (if the gate passed)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .. import audit
from ..workspace import Workspace
from .config import PipelineConfig
from .context import RunContext
from .evaluation import evaluate_all
from .lock import run_lock
from .release import gate_stage, register
from .steps import quantize_stage, resolve_source, source_stage, unlearn_stage
from .summary import RunSummary, summarise
from .validation import validate


def run_request(
    request_path: Path | str,
    pipeline_yaml: Path | str | None = None,
    workspace: Workspace | None = None,
    *,
    wait: bool = False,
    show_progress: bool = True,
    supersede: bool = False,
) -> RunSummary:
    """Run one forget request through the pipeline; the summary says whether a version was registered.

    `supersede`: a request id received before with other content is accepted as replacing it
    (recorded as request.superseded); without it such a request is refused before anything is written.
    """
    workspace = workspace or Workspace.resolve()
    config = PipelineConfig.load(pipeline_yaml)
    with run_lock(workspace, wait=wait):
        ctx = RunContext.open(Path(request_path), config, workspace, show_progress=show_progress, supersede=supersede)
        return execute(ctx)


def execute(ctx: RunContext) -> RunSummary:
    request, report = validate(ctx)
    parent_tags = {"unlearnops.request_id": request.request_id, "unlearnops.pipeline": ctx.config.name,
                   "unlearnops.request_sha256": ctx.request_sha or ""}
    run_id = ctx.runner.open_parent(f"request {request.request_id}", parent_tags)
    ctx.audit.append(audit.RUN_STARTED, run_id=run_id, request_id=request.request_id, pipeline=ctx.config.name)
    try:
        summary = stages(ctx, request, report)
    except BaseException:
        # Recording the failure must not replace its cause (a full disk fails these writes too).
        with contextlib.suppress(Exception):
            ctx.tracker.finish("FAILED")
        with contextlib.suppress(Exception):
            ctx.audit.append(audit.RUN_FINISHED, run_id=run_id, request_id=request.request_id, status="failed")
        raise
    ctx.tracker.finish("FINISHED")
    status = "registered" if summary.passed else "gate-failed"
    ctx.audit.append(audit.RUN_FINISHED, run_id=run_id, request_id=request.request_id, status=status)
    return summary


def stages(ctx: RunContext, request, report) -> RunSummary:
    policy = report.policy  # the pipeline's gate tightened by the request's overrides
    data = ctx.data  # the snapshot validation took: every stage reads exactly the validated content
    source, registration = resolve_source(ctx, request, data)  # the version and its signed registration record
    source_dir = source_stage(ctx, source, registration, request)
    log_request_digest(ctx, report, data, source)
    unlearned = unlearn_stage(ctx, source_dir, data)
    quantized = quantize_stage(ctx, unlearned, data)
    metrics = evaluate_all(ctx, registration, source_dir, unlearned, quantized, data)
    gate = gate_stage(ctx, request, metrics, policy, quantized)
    decision = gate.record["report"]
    version = None
    if decision["passed"]:
        version = register(ctx, request, data, source, registration, source_dir, unlearned, quantized, gate, metrics)
    else:
        ctx.runner.announce("register", "skipped: the gate failed, nothing registered")
    return summarise(ctx, request, version, decision, metrics, gate.path / "out")


def log_request_digest(ctx: RunContext, report, data, source) -> None:
    """Ids and hashes only (request.request_digest): the forget texts never enter the tracking store."""
    from .. import registry
    from ..fileio import write_json
    from ..request import request_digest

    digest = {**request_digest(report), "corpus_sha256": data.corpus_sha256, "source_version": source.ref if source else None}
    path = ctx.workspace.stages_dir / "requests" / f"{report.request.request_id}.json"
    write_json(path, digest)
    params = {
        "pipeline": ctx.config.model_dump(by_alias=True),
        "tracking_uri": registry.redact(ctx.tracking_uri),
        "request_id": report.request.request_id,
    }
    ctx.tracker.log(ctx.run_id, params=params, artifacts=[path], artifact_path="requests")
