"""CLI area: register / promote / models: the MLflow model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .options import JsonOpt, WorkspaceOpt
from .output import emit, err_console, out_console, table

TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default: the workspace's sqlite database).", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.command("register")(register_model)
    app.command("promote")(promote)
    app.command("models")(models)


def _evidence(workspace: Path | None, tracking_uri: str | None):
    from ..evidence import Evidence
    from ..workspace import Workspace

    return Evidence(Workspace.resolve(workspace), tracking_uri=tracking_uri)


def register_model(
    model: Annotated[Path, typer.Option("--model", help="The quantized model directory to register.")],
    name: Annotated[str, typer.Option("--name", help="Registered model name.")],
    gate_report: Annotated[Path | None, typer.Option("--gate-report", help="gate.json written by `unlearnops gate --model DIR --out DIR` in this workspace; its passing decision must be in the signed audit log for this very model.")] = None,
    baseline: Annotated[bool, typer.Option("--baseline", help="Register a baseline source model (no gate, role=source) as NAME@production.")] = False,
    request_id: Annotated[list[str] | None, typer.Option("--request-id", help="A request this model satisfies (repeatable); the audit log must show it was validated.")] = None,
    workspace: WorkspaceOpt = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Register a model directory as a new version (alias @candidate), or a baseline with --baseline.

    `unlearnops run` registers for you; this is for models gated outside the pipeline. Only signed evidence is accepted: the gate report's hash must be in a signed gate.decided record that passed for this model's files, and each --request-id must have been validated. Every check runs before anything is written.
    """
    evidence = _evidence(workspace, tracking_uri)
    if baseline:
        if gate_report is not None or request_id:
            raise UsageError("--baseline registers a source model: it takes no --gate-report and no --request-id")
        version = evidence.register_source(model, name=name)
    else:
        if gate_report is None:
            raise UsageError("--gate-report is required (or --baseline for a source model): only a gated model is registered")
        version = evidence.register_gated(model, name=name, gate_report=gate_report, request_ids=request_id or [])
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
    """Move @production (or --alias) to a version whose signed registration record says its gate passed."""
    if model is None and (name is None or version is None):
        raise UsageError("give NAME VERSION or --model NAME/VERSION")
    ref = model or f"{name}/{version}"
    promoted = _evidence(workspace, tracking_uri).promote(ref, alias=alias)
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
    from ..workspace import Workspace

    uri = tracking_uri or registry.tracking_uri_for(Workspace.resolve(workspace))
    versions = registry.list_versions(name, tracking_uri=uri)
    documents = [version.to_dict() for version in versions]

    def render() -> None:
        from ..metrics import METRICS

        rows = [
            (v["name"], v["version"], ", ".join(v["aliases"]), v["gate"], ", ".join(v["request_ids"]) or "-",
             *(v["metrics"].get(f"q.{key}") for key in METRICS), "INCONSISTENT" if v["problems"] else "")
            for v in documents
        ]
        columns = ["name", "version", "aliases", "gate (tag)", "requests", *(f"q {metric.label}" for metric in METRICS.values()), "registry"]
        out_console.print(table(f"models ({registry.redact(uri)})", columns, rows))
        for v in documents:
            for problem in v["problems"]:
                err_console.print(f"[yellow]registry inconsistency[/]: {v['name']}/{v['version']}: {problem}", highlight=False)

    emit(documents, as_json, render)
    return 0
