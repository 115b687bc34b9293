"""CLI area: audit verify|show|status|export|close|bind-registry|key: the signed audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import error_document
from .options import JsonOpt, WorkspaceOpt
from .output import emit, err_console, out_console, table

audit_app = typer.Typer(
    name="audit",
    help="The compliance audit log: signed, hash-chained records of ids and hashes (never text), anchored in a witness.",
    no_args_is_help=True,
)

RequestOpt = Annotated[str, typer.Option("--request", help="The forget request's id (request_id in the request JSON).")]
RegistryCheckOpt = Annotated[
    bool,
    typer.Option(
        "--registry/--no-registry",
        help="Also check registry and log against each other: every version has exactly one signed registration record "
        "and vice versa, tags and aliases agree (MLflow at $MLFLOW_TRACKING_URI or the workspace's sqlite store).",
    ),
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why, in one line (recorded in the log; an id or a short phrase, never forgotten text).")]


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(audit_app)


def _evidence(workspace: Path | None, *, create_store: bool = False):
    """The workspace's evidence; only commands that write to the registry create its store."""
    from ..evidence import Evidence
    from ..registry import tracking_uri_for
    from ..workspace import Workspace

    resolved = Workspace.resolve(workspace)
    return Evidence(resolved, tracking_uri=tracking_uri_for(resolved, create=create_store))


def _verified(evidence, check_registry: bool, as_json: bool) -> None:
    """Verify before showing anything: an unverified log is not evidence. Loud, and exit 1, on failure."""
    result = evidence.verify(check_registry=check_registry)
    if result.ok:
        return
    if as_json:
        document = {"ok": False, "log": evidence.log.storage.location, "verification": result.to_dict()}
        emit(error_document(f"the audit log does not verify: {result.reason}", field="audit log", **document), True, lambda: None)
    _print_failure(result, err_console)
    err_console.print("[bold red]the audit log does not verify: nothing it says can be relied on until this is resolved[/]", highlight=False)
    raise typer.Exit(1)


def _print_failure(result, console) -> None:
    console.print(f"[bold red]FAILED[/]: {len(result.problems)} problem(s); the first: {result.reason}", highlight=False, soft_wrap=True)
    for problem in result.problems:
        console.print(f"  - {problem['where']}: {problem['reason']}", highlight=False, soft_wrap=True)


@audit_app.command("verify")
def verify_command(workspace: WorkspaceOpt = None, registry: RegistryCheckOpt = True, as_json: JsonOpt = False) -> None:
    """Check every record (format, hash chain, Ed25519 signature, time order), the witness's signed checkpoint, and the registry against the log.

    Names the first record or checkpoint that disagrees, and every version or alias that does. Exit 0 when everything verifies, 1 when not.
    """
    evidence = _evidence(workspace)
    result = evidence.verify(check_registry=registry)
    document = {"log": evidence.log.storage.location, **result.to_dict()}
    if not result.ok:  # --json readers find why under the error object's keys (errors.error_document)
        document = error_document(f"the audit log does not verify: {result.reason}", field="audit log", **document)

    def render() -> None:
        if not result.ok:
            _print_failure(result, out_console)
            return
        checkpoint = result.checkpoint or {}
        out_console.print(
            f"[green]ok[/]: {result.checked} records signed by key {(result.key_fingerprint or '-')[:16]}…, head {result.head_hash}, "
            f"witness checkpoint at {checkpoint.get('size', '-')}, {result.versions_checked} registered version(s) cross-checked",
            highlight=False, soft_wrap=True,
        )
        for notice in result.notices:
            out_console.print(f"[yellow]note[/]: {notice}", highlight=False, soft_wrap=True)

    emit(document, as_json, render)
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("show")
def show_command(request: RequestOpt, workspace: WorkspaceOpt = None, registry: RegistryCheckOpt = True, as_json: JsonOpt = False) -> None:
    """A request's lineage: its receipt, validation, runs, gate decisions, versions, aliases and deployments (after verifying the log)."""
    from ..errors import UnlearnopsError

    evidence = _evidence(workspace)
    _verified(evidence, registry, as_json)
    lineage = evidence.log.lineage(request)
    if not lineage.records:
        raise UnlearnopsError(f"--request {request}: no record in {evidence.log.storage.location} names this request; check the id")
    summary = lineage.summary()

    def render() -> None:
        rows = [(r["seq"], r["timestamp"], r["event"], _brief(r["fields"])) for r in lineage.records]
        out_console.print(table(f"request {request} (log verified)", ["seq", "time (UTC)", "event", "fields"], rows))

    emit({**summary, "records": lineage.records}, as_json, render)


@audit_app.command("status")
def status_command(workspace: WorkspaceOpt = None, registry: RegistryCheckOpt = True, as_json: JsonOpt = False) -> None:
    """What is live now, which requests it satisfies, and each received request still open, once per request (after verifying the log)."""
    evidence = _evidence(workspace)
    _verified(evidence, registry, as_json)
    status = evidence.log.status()

    def render() -> None:
        live_rows = [
            (d["name"], d["version"], d.get("machine"), d.get("host"), d.get("port"), d["timestamp"][:19], ", ".join(d.get("request_ids") or []))
            for d in status["live"]
        ]
        columns = ["model", "version", "machine", "host", "port", "since (UTC)", "satisfies"]
        out_console.print(table("live deployments", columns, live_rows))
        pending_rows = [
            (p["request_id"], p["received"][:19], p["attempts"], p["age_hours"], p["deadline"], p["hours_left"], "OVERDUE" if p["overdue"] else "no")
            for p in status["pending"]
        ]
        out_console.print(table("pending requests", ["request", "received", "attempts", "age h", "deadline", "hours left", "overdue"], pending_rows))
        if status["closed"]:
            out_console.print(table("closed requests", ["request", "closed (UTC)", "reason"], [(c["request_id"], c["closed"][:19], c["reason"]) for c in status["closed"]]))

    emit(status, as_json, render)


@audit_app.command("close")
def close_command(request: RequestOpt, reason: ReasonOpt, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Close a received request that will not be satisfied (its runs failed, it was withdrawn), recording why."""
    evidence = _evidence(workspace)
    record = evidence.close_request(request, reason)
    emit(record, as_json, lambda: out_console.print(f"closed {request} (record {record['seq']}): {reason}", highlight=False))


@audit_app.command("bind-registry")
def bind_registry_command(
    reason: ReasonOpt,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record that this workspace's log continues with the registry at $MLFLOW_TRACKING_URI (or the workspace's sqlite store).

    Every other command refuses a registry other than the one the log was written with; this records the switch (old and new registry ids, the reason) in the log and the identity in the registry.
    """
    evidence = _evidence(workspace, create_store=True)
    bound = evidence.bind_registry(reason)
    emit(bound, as_json, lambda: out_console.print(
        f"bound to registry {bound['registry_id']} (was {bound['previous_registry_id'] or 'none'}), record {bound['seq']}", highlight=False,
    ))


@audit_app.command("key")
def key_command(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Show the audit signing key's public half (created on first use): give it to auditors as $UNLEARNOPS_AUDIT_PUBLIC_KEY."""
    evidence = _evidence(workspace)
    key = evidence.log.signing_key()
    document = {"key_path": str(key.path), "public_key": key.public.vkey, "fingerprint": key.public.fingerprint, "witness": str(evidence.log.witness)}
    emit(document, as_json, lambda: out_console.print(
        f"key {key.path}\npublic key {key.public.vkey}\nfingerprint {key.public.fingerprint}\nwitness {evidence.log.witness}", highlight=False,
    ))


@audit_app.command("export")
def export_command(
    request: RequestOpt,
    out: Annotated[Path, typer.Option("--out", help="The evidence bundle (JSON) to write; written atomically, over a regular file or nothing (never a link, FIFO or device).")],
    workspace: WorkspaceOpt = None,
    registry: RegistryCheckOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Write one request's evidence bundle: its records, lineage, verification, the signed checkpoint, sealed by a sha256.

    Exit 1 when the log does not verify (the bundle is still written, recording the failure).
    """
    from ..fileio import write_json

    bundle = _evidence(workspace).bundle(request, check_registry=registry)
    write_json(out, bundle, what="--out")  # the output policy: a regular file or nothing is replaced
    ok = bundle["verification"]["ok"]
    document = {"out": str(out), "bundle_sha256": bundle["bundle_sha256"], "records": len(bundle["records"]), "verified": ok}
    if not ok:  # --json readers find why under the error object's keys (errors.error_document)
        document = error_document("the audit log does not verify; the bundle records the failure", field="audit log", **document)

    def render() -> None:
        state = "[green]verified[/]" if ok else f"[bold red]log does NOT verify[/] ({bundle['verification']['reason']})"
        out_console.print(f"wrote {out}: {len(bundle['records'])} records, {state}, sha256 {bundle['bundle_sha256']}", highlight=False, soft_wrap=True)

    emit(document, as_json, render)
    if not ok:
        raise typer.Exit(1)


def _brief(fields: dict) -> str:
    return " ".join(f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}" for key, value in sorted(fields.items()))
