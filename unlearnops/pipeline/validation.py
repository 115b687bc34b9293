"""The first stage: build the benches a request names, validate it, record it in the audit log.

Runs before the parent MLflow run exists (the run is named after the validated request); the
audit log records every request read (`request.received`), and whether it was rejected (with
the failing fields) or validated.
"""

from __future__ import annotations

from .. import audit
from ..errors import UnlearnopsError
from ..fileio import sha256_file
from .context import RunContext


def validate(ctx: RunContext):
    """The request and its ValidationReport; raises (exit 1) when the request is invalid."""
    from ..request import validate_request

    build_benches(ctx)
    with ctx.runner.step("validate", announce=str(ctx.request_path)) as step:
        ctx.request_sha = sha256_file(ctx.request_path) if ctx.request_path.is_file() else None
        report = validate_request(
            ctx.request_path, workspace=ctx.workspace, base_policy=ctx.config.gate,
            min_privleak_texts=ctx.config.validate_.min_privleak_texts,
        )
        _record(ctx, report)
        step.params = {"request_id": report.request.request_id, "request_sha256": ctx.request_sha}
        step.metrics = {"checks": len(report.checks)}
    return report.request, report


def _record(ctx: RunContext, report) -> None:
    request, fields = report.request, {"request_sha256": ctx.request_sha}
    if request is not None:
        ctx.audit.append(
            audit.REQUEST_RECEIVED, request_id=request.request_id, **fields,
            deadline=request.deadline.isoformat(),  # `audit status` ages pending requests against it
        )
    if not report.ok:
        if request is not None:
            failed = sorted({check.field for check in report.failures})
            ctx.audit.append(audit.REQUEST_REJECTED, request_id=request.request_id, **fields, fields=failed)
        report.raise_for_failures()
    ctx.audit.append(audit.REQUEST_VALIDATED, request_id=request.request_id, **fields)


def build_benches(ctx: RunContext) -> None:
    """Build the benches a request names before validating it (minutes, once per workspace), as its own step."""
    from ..bench import ensure_bench, is_complete
    from ..request import load_request

    try:
        request = load_request(ctx.request_path)
    except UnlearnopsError:
        return  # validation reports it, field by field
    roles = (getattr(request, role) for role in ("forget", "retain", "holdout"))
    sizes = {source.bench for source in roles if hasattr(source, "bench")}
    for size in sorted(size for size in sizes if not is_complete(ctx.workspace.bench_dir(size))):
        announce = f"building the {size} bench in {ctx.workspace.bench_dir(size)} (once per workspace)"
        with ctx.runner.step(f"bench:{size}", announce=announce):
            ensure_bench(ctx.workspace, size)
