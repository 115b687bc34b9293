"""CLI area: report: the per-request evidence report for a data protection officer (HTML, PDF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import error_document
from .options import JsonOpt, WorkspaceOpt
from .output import emit, out_console


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("report")(report_command)


def report_command(
    request: Annotated[str, typer.Option("--request", help="The forget request's id (request_id in the request JSON).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The HTML file to write (atomically; default: <workspace>/reports/<request>.html).", show_default=False),
    ] = None,
    pdf: Annotated[
        Path | None,
        typer.Option("--pdf", help="Also print the page to this PDF with headless Chromium (chromium on PATH or $UNLEARNOPS_CHROMIUM).",
                     show_default=False),
    ] = None,
    request_file: Annotated[
        Path | None,
        typer.Option("--request-file", help="The request JSON as received, to show who asked (its sha256 must be the one the audit "
                     "log recorded).", show_default=False),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one self-contained HTML page that shows what was done for a forget request, for a data protection officer.

    The request (id, requester with --request-file, legal basis, dates, status), the model lineage (original -> unlearned version -> deployments, with dates), whether the audit log and its registry anchors verify, the evidence (VerbMem, KnowMem, PrivLeak and utility of the original model, a never-trained reference, the unlearned model at full precision and the shipped 4-bit model, against the gate's limits, as tables and charts; the quantization gap; later versions that still satisfy the request), the latest verification of each live endpoint, a plain-language summary generated from the numbers, and the limits of the evidence. No forgotten text, no script, nothing loaded from the network: it opens from an e-mail attachment.

    Exit 0 when written and the audit log verifies; 1 when the request is unknown, the request file is not the one received, or the audit log does not verify (the report is still written and says so on top).
    """
    from ..fileio import check_file_target
    from ..report import collect, write_html, write_pdf
    from ..workspace import Workspace

    resolved = Workspace.resolve(workspace)
    html = out or resolved.root / "reports" / f"{request}.html"
    check_file_target(html, what="--out")  # refused before any work: nothing half-written
    if pdf is not None:
        check_file_target(pdf, what="--pdf")
    report = collect(resolved, request, request_file=request_file)
    write_html(report, html, what="--out")
    if pdf is not None:
        write_pdf(html, pdf, what="--pdf")
    document = {
        "request_id": request, "html": str(html), "pdf": str(pdf) if pdf else None, "gate_passed": report.gate_passed,
        "audit_ok": report.audit["ok"], "status": report.request["status"],
        "endpoint": [{"endpoint": e["endpoint"], "passed": e["passed"], "at": e["timestamp"]} for e in report.endpoint_checks],
        "problems": report.problems,
    }

    def render() -> None:
        gate = {True: "[green]gate passed[/]", False: "[bold red]gate FAILED[/]", None: "no gate yet"}[report.gate_passed]
        log = "[green]audit log verifies[/]" if report.audit["ok"] else "[bold red]audit log does NOT verify[/]"
        out_console.print(f"wrote {html}{f' and {pdf}' if pdf else ''}: request {request}, {report.request['status']}, {gate}, {log}",
                          highlight=False, soft_wrap=True)

    if not report.audit["ok"]:  # --json readers find why under the error object's keys (errors.error_document)
        document = error_document(f"the audit log does not verify ({report.audit['reason']}); the report says so on top",
                                  field="audit", **document)
    emit(document, as_json, render)
    if not report.audit["ok"]:
        raise typer.Exit(1)
