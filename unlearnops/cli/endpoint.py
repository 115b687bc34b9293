"""CLI area: verify-endpoint: the live endpoint measured against the registered evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import error_document
from .options import JsonOpt, WorkspaceOpt
from .output import emit, out_console, table


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("verify-endpoint")(verify_endpoint_command)


def verify_endpoint_command(
    url: Annotated[str, typer.Option("--url", help="The server's base URL, e.g. http://127.0.0.1:8000 (an OpenAI-compatible API).")],
    request: Annotated[
        str | None,
        typer.Option("--request", help="A forget request id the deployed version must satisfy (exit 1 if it does not).", show_default=False),
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option("--deployment", help="The deployment id to check against (default: the live deployment at the URL's host and port, "
                     "else the one serving a name the endpoint lists).", show_default=False),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="UNLEARNOPS_API_KEY", help="Bearer key for the server's /v1/* (never printed or recorded).",
                     show_default=False),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Requests in flight at once.")] = 16,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", help="A metric not to verify (repeatable): verbmem_f, knowmem_f, knowmem_r, privleak. Recorded as skipped; "
                     "e.g. privleak for a server that returns no prompt log-probabilities.", show_default=False),
    ] = None,
    tolerance: Annotated[
        list[str] | None,
        typer.Option("--tolerance", help="METRIC=VALUE (repeatable): the largest difference from the registered evaluation that still "
                     "counts as the same model. Defaults: verbmem_f, knowmem_f, knowmem_r 2.0 points; auc 0.02.", show_default=False),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="A directory with the model's tokenizer and config.json (default: read from the registered "
                     "artifact, without its weights).", show_default=False),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure VerbMem, KnowMem and PrivLeak through a running server's API and compare them with the registered evaluation.

    The audit log (verified first) says which version is deployed at the URL; the server must list its served name. The metrics are measured as `unlearnops evaluate` measures them (the same items, prompts and scoring), through greedy /v1/completions and prompt log-probabilities (echo + logprobs), many requests in flight. Each must agree with the version's registered evaluation within the stated tolerance (docs/report.md).

    Records endpoint.verified or endpoint.mismatch in the audit log (with the sha256 of the verification document written under the workspace's endpoint/verifications/). Exit 0 when the endpoint serves the measured model, 1 on a mismatch or when it cannot be measured (unreachable, wrong key, no prompt log-probabilities: pass --skip privleak), 2 on a usage error. Meant to run on a schedule in CI against production.
    """
    from ..endpoint import verify_endpoint
    from ..workspace import Workspace

    verification = verify_endpoint(
        Workspace.resolve(workspace), url, api_key=api_key, request_id=request, deployment_id=deployment, concurrency=concurrency,
        skip=tuple(skip or ()), tokenizer=tokenizer, tolerance=_tolerances(tolerance), show_progress=not as_json,
    )
    document = {
        **verification.to_dict(), "document": str(verification.document_path), "event": verification.event,
        "record_seq": verification.record["seq"] if verification.record else None,
    }
    document.pop("items", None)
    if not verification.passed:  # --json readers find why under the error object's keys (errors.error_document)
        failed = [check.name for check in verification.checks if check.status == "failed"]
        document = error_document(f"endpoint mismatch: {', '.join(failed)} disagree with the registered evaluation", field="endpoint",
                                  **document)

    def render() -> None:
        rows = [(c.name, c.registered, c.measured, c.difference, c.tolerance, c.status) for c in verification.checks]
        out_console.print(table(f"endpoint {verification.endpoint}", ["check", "registered", "measured", "difference", "tolerance", "result"], rows))
        measured = verification.measurement
        if measured is not None:
            out_console.print(f"{measured.requests} requests, {measured.concurrency} in flight, {measured.seconds:.1f} s", highlight=False)
        verdict = "[green]verified[/]" if verification.passed else "[bold red]MISMATCH[/]"
        out_console.print(
            f"{verdict}: {verification.deployment['name']}/{verification.deployment['version']} (deployment "
            f"{verification.deployment['deployment_id']}); recorded {verification.event} (seq {document['record_seq']}), "
            f"{verification.document_path}", highlight=False, soft_wrap=True,
        )

    emit(document, as_json, render)
    if not verification.passed:
        raise typer.Exit(1)


def _tolerances(values: list[str] | None) -> dict[str, float]:
    from ..errors import UsageError

    parsed = {}
    for value in values or ():
        key, sep, number = value.partition("=")
        try:
            parsed[key.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--tolerance {value}: expected METRIC=NUMBER, e.g. verbmem_f=5")
    return parsed
