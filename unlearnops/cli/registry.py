"""CLI area: register / promote / models: the MLflow model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UnlearnopsError, UsageError
from .options import JsonOpt, WorkspaceOpt
from .output import emit, out_console, table

TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default: the workspace's sqlite database).", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.command("register")(register_model)
    app.command("promote")(promote)
    app.command("models")(models)


def _context(workspace: Path | None, tracking_uri: str | None):
    from ..audit import AuditLog
    from ..registry import tracking_uri_for
    from ..workspace import Workspace

    ws = Workspace.resolve(workspace)
    return ws, tracking_uri or tracking_uri_for(ws), AuditLog(ws.audit_log)


def register_model(
    model: Annotated[Path, typer.Option("--model", help="The quantized model directory to register.")],
    name: Annotated[str, typer.Option("--name", help="Registered model name.")],
    gate_report: Annotated[Path | None, typer.Option("--gate-report", help="gate.json from `unlearnops gate --out`; must have passed.")] = None,
    baseline: Annotated[bool, typer.Option("--baseline", help="Register a baseline source model (no gate, role=source) as NAME@production.")] = False,
    request_id: Annotated[list[str] | None, typer.Option("--request-id", help="A request this model satisfies (repeatable).")] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Register a model directory as a new version (alias @candidate), or a baseline with --baseline.

    `unlearnops run` registers for you; this is for models gated outside the pipeline. A model whose gate report failed is refused: nothing is registered.
    """
    import json

    from .. import registry
    from ..fileio import read_json, sha256_tree

    ws, uri, audit = _context(workspace, tracking_uri)
    if baseline:
        version = registry.register_source_model(model, tracking_uri=uri, artifact_root=ws.artifact_root, name=name, audit=audit)
    else:
        if gate_report is None:
            raise UsageError("--gate-report is required (or --baseline for a source model): only a gated model is registered")
        report = read_json(gate_report)
        if not isinstance(report, dict) or report.get("decision") not in ("passed", "failed"):
            raise UnlearnopsError(f"{gate_report}: not a gate report (expected gate.json from `unlearnops gate --out`)")
        if report["decision"] != "passed":
            failed = [check["name"] for check in report.get("checks", []) if check.get("status") == "failed"]
            raise UnlearnopsError(f"{gate_report}: the gate failed ({', '.join(failed)}); nothing registered")
        model_sha = sha256_tree(model)
        run_id = registry.log_model_run(model, tracking_uri=uri, artifact_root=ws.artifact_root, run_name=f"register {name}", params={"gate_report": str(gate_report)})
        tags = {
            registry.TAG_GATE: "passed",
            registry.TAG_ROLE: "unlearned",
            registry.TAG_REQUEST_IDS: json.dumps(request_id or []),
            registry.TAG_MODEL_SHA: model_sha,
        }
        version = registry.register_version(name=name, run_id=run_id, tags=tags, run_key=f"manual:{model_sha}", tracking_uri=uri, audit=audit)
    emit(version.to_dict(), as_json, lambda: out_console.print(f"registered {version.ref} (@{', '.join(version.aliases)})", highlight=False))
    return 0


def promote(
    name: Annotated[str | None, typer.Argument(help="Registered model name (or use --model NAME/VERSION).", show_default=False)] = None,
    version: Annotated[str | None, typer.Argument(help="Version number.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="NAME/VERSION or models:/NAME/VERSION (or NAME@alias).")] = None,
    alias: Annotated[str, typer.Option("--alias", help="Alias to move.")] = "production",
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Move @production (or --alias) to a version; refuses a version that did not pass its gate."""
    from .. import registry

    if model is None and (name is None or version is None):
        raise UsageError("give NAME VERSION or --model NAME/VERSION")
    ref = model or f"{name}/{version}"
    _, uri, audit = _context(workspace, tracking_uri)
    promoted = registry.promote(ref, tracking_uri=uri, audit=audit, alias=alias)
    emit(promoted.to_dict(), as_json, lambda: out_console.print(f"{promoted.ref} is now @{alias}", highlight=False))
    return 0


def models(
    name: Annotated[str | None, typer.Argument(help="Only this registered model.", show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """List registered versions with their aliases, requests, gate results and key metrics."""
    from .. import registry

    _, uri, _ = _context(workspace, tracking_uri)
    versions = registry.list_versions(name, tracking_uri=uri)
    documents = [version.to_dict() for version in versions]

    def render() -> None:
        from ..metrics import METRICS

        rows = [
            (v["name"], v["version"], ", ".join(v["aliases"]), v["gate"], ", ".join(v["request_ids"]) or "-",
             *(v["metrics"].get(f"q.{key}") for key in METRICS))
            for v in documents
        ]
        columns = ["name", "version", "aliases", "gate", "requests", *(f"q {metric.label}" for metric in METRICS.values())]
        out_console.print(table(f"models ({registry.redact(uri)})", columns, rows))

    emit(documents, as_json, render)
    return 0
