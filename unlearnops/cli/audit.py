"""CLI area: audit verify|show|status|export: the hash-chained audit log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .options import JsonOpt, WorkspaceOpt
from .output import emit, out_console, table

audit_app = typer.Typer(
    name="audit",
    help="The compliance audit log: append-only, hash-chained records of ids and hashes (never text).",
    no_args_is_help=True,
)

RequestOpt = Annotated[str, typer.Option("--request", help="The forget request's id (request_id in the request JSON).")]
RegistryCheckOpt = Annotated[
    bool,
    typer.Option(
        "--registry/--no-registry",
        help="Also check that every registered model version's unlearnops.audit_head tag names a record of the "
        "log (MLflow at $MLFLOW_TRACKING_URI or the workspace's sqlite store).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(audit_app)


def _open(workspace: Path | None):
    from ..audit import AuditLog
    from ..workspace import Workspace

    resolved = Workspace.resolve(workspace)
    from ..audit.backends import storage_for

    return AuditLog(storage_for(resolved)), resolved


def _tracking_uri(resolved, check_registry: bool) -> str | None:
    """The registry to cross-check, or None when off or when the workspace has no store yet."""
    if not check_registry:
        return None
    uri = os.environ.get("MLFLOW_TRACKING_URI") or resolved.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # no registry was ever created here: nothing to cross-check, and none to create
    return uri


@audit_app.command("verify")
def verify_command(workspace: WorkspaceOpt = None, registry: RegistryCheckOpt = True, as_json: JsonOpt = False) -> None:
    """Check the whole chain; name the first edited, deleted, inserted or reordered record.

    Exit 0 when intact, 1 when not (the message names the record and what broke).
    """
    log, resolved = _open(workspace)
    result = log.verify(_tracking_uri(resolved, registry))
    document = {"log": log.storage.location, **result.to_dict()}

    def render() -> None:
        if result.ok:
            out_console.print(
                f"[green]ok[/]: {result.checked} records, head {result.head_hash}, "
                f"{result.versions_checked} registered version(s) cross-checked",
                highlight=False,
            )
        else:
            where = f"record {result.first_bad_seq}" if result.first_bad_seq else "registry cross-check"
            out_console.print(f"[bold red]FAILED[/] at {where}: {result.reason}", highlight=False)

    emit(document, as_json, render)
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("show")
def show_command(request: RequestOpt, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """A request's lineage: its validation, runs, gate decisions, versions, aliases and deployments."""
    from ..errors import UnlearnopsError

    log, _ = _open(workspace)
    lineage = log.lineage(request)
    if not lineage.records:
        raise UnlearnopsError(f"--request {request}: no record in {log.storage.location} names this request; check the id")
    summary = lineage.summary()

    def render() -> None:
        rows = [(r["seq"], r["timestamp"], r["event"], _brief(r["fields"])) for r in lineage.records]
        out_console.print(table(f"request {request}", ["seq", "time (UTC)", "event", "fields"], rows))

    emit({**summary, "records": lineage.records}, as_json, render)


@audit_app.command("status")
def status_command(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """What is live now, which requests it satisfies, and which received requests are still pending."""
    log, _ = _open(workspace)
    status = log.status()

    def render() -> None:
        live_rows = [
            (d["name"], d["version"], d.get("host"), d.get("port"), d["timestamp"][:19], ", ".join(d.get("request_ids") or []))
            for d in status["live"]
        ]
        out_console.print(table("live deployments", ["model", "version", "host", "port", "since (UTC)", "satisfies"], live_rows))
        pending_rows = [
            (p["request_id"], p["received"][:19], p["age_hours"], p["deadline"], p["hours_left"], "OVERDUE" if p["overdue"] else "")
            for p in status["pending"]
        ]
        out_console.print(table("pending requests", ["request", "received (UTC)", "age h", "deadline", "hours left", ""], pending_rows))

    emit(status, as_json, render)


@audit_app.command("export")
def export_command(
    request: RequestOpt,
    out: Annotated[Path, typer.Option("--out", help="The evidence bundle (JSON) to write; written atomically.")],
    workspace: WorkspaceOpt = None,
    registry: RegistryCheckOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Write one request's evidence bundle: its records, lineage, verification result, chain head, sha256.

    Exit 1 when the log does not verify (the bundle is still written, recording the failure).
    """
    from ..fileio import write_json

    log, resolved = _open(workspace)
    bundle = log.evidence_bundle(request, _tracking_uri(resolved, registry))
    write_json(out, bundle)
    ok = bundle["verification"]["ok"]
    document = {"out": str(out), "bundle_sha256": bundle["bundle_sha256"], "records": len(bundle["records"]), "verified": ok}

    def render() -> None:
        state = "[green]verified[/]" if ok else "[bold red]log does NOT verify[/]"
        out_console.print(f"wrote {out}: {len(bundle['records'])} records, {state}, sha256 {bundle['bundle_sha256']}", highlight=False)

    emit(document, as_json, render)
    if not ok:
        raise typer.Exit(1)


def _brief(fields: dict) -> str:
    return " ".join(f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}" for key, value in sorted(fields.items()))
