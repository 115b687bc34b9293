"""CLI area: `validate` a forget request, print the request `schema`.

Exit codes: 0 valid, 1 invalid (every failing check is listed), 2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import error_document
from .options import JsonOpt, WorkspaceOpt
from .output import emit, out_console, table

SHOWN_INDICES = 10  # offending items listed per check in the table; --json lists them all

RequestOpt = Annotated[
    Path,
    typer.Option(
        "--request",
        exists=True,
        dir_okay=False,
        help="The forget request (JSON). Paths in it are relative to its directory and must stay inside it.",
    ),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        exists=True,
        dir_okay=False,
        help="Pipeline or policy YAML whose gate thresholds the request's policy_overrides may only tighten "
        "[default: the built-in thresholds].",
        show_default=False,
    ),
]
MinPrivleakOpt = Annotated[
    int,
    typer.Option(
        "--min-privleak-texts",
        min=2,
        help="Fewest forget and holdout texts accepted for PrivLeak (below 10 the AUC is mostly noise; "
        "the tiny bench has 6: use 6 only for smoke tests).",
    ),
]


AllOpt = Annotated[bool, typer.Option("--all", help="List every check, not only the failing ones.")]


def validate(
    request: RequestOpt,
    policy: PolicyOpt = None,
    min_privleak_texts: MinPrivleakOpt = 10,
    show_all: AllOpt = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a forget request: schema, paths, model reference, policy overrides, and the data.

    The data checks run as a great-expectations suite: texts non-empty and within length bounds,
    no duplicates, no forget text (or near-duplicate of one) in retain or holdout, enough forget
    and holdout texts for PrivLeak, QA and verbmem items complete. Offending items are named by
    index, never by their text. A {"bench": ...} source uses (and if needed builds) the bench in
    the workspace.
    """
    from ..policy import Policy
    from ..request import validate_request

    base_policy = Policy.from_yaml(policy) if policy else None
    # No spinner here: a bench built on first use shows its own progress bars (one live display at a time).
    report = validate_request(request, workspace=workspace, base_policy=base_policy, min_privleak_texts=min_privleak_texts)
    document = report.to_json()
    if not report.ok:  # --json readers find the first failure under the error object's keys (errors.error_document)
        first = report.failures[0]
        document = error_document(f"invalid request: {first.field}: {first.message}", field=first.field, **document)
    emit(document, as_json, lambda: _render(report, show_all))
    if not report.ok:
        raise typer.Exit(1)


def _render(report, show_all: bool) -> None:
    shown = report.checks if show_all else report.failures
    rows = [
        (
            "[green]pass[/]" if check.passed else "[bold red]FAIL[/]",
            check.field,
            check.name,
            check.message,
            _indices(check.offending_indices),
        )
        for check in shown
    ]
    name = report.request.request_id if report.request else str(report.path)
    if rows:
        result = table(f"forget request {name}", ("result", "field", "check", "message", "offending items"), rows)
        for column in result.columns:
            column.overflow = "fold"  # a field name cut to "policy_overrid…" would hide what to fix
        out_console.print(result)
    failed = len(report.failures)
    if report.ok:
        counts = ", ".join(f"{count} {field}" for field, count in report.data.counts().items()) if report.data else ""
        out_console.print(f"[bold green]valid[/]: {name}, {len(report.checks)} checks passed in {report.seconds:.1f} s ({counts})")
    else:
        hint = "" if show_all else "; --all lists the passing ones too"
        out_console.print(f"[bold red]invalid[/]: {name}, {failed} of {len(report.checks)} checks failed{hint}")


def _indices(indices: list[int]) -> str:
    if not indices:
        return ""
    shown = ", ".join(str(index) for index in indices[:SHOWN_INDICES])
    return shown + (f" (+{len(indices) - SHOWN_INDICES} more)" if len(indices) > SHOWN_INDICES else "")


request_app = typer.Typer(help="Forget requests: the JSON Schema they follow.", no_args_is_help=True)


@request_app.command("schema")
def schema(as_json: JsonOpt = False) -> None:
    """Print the JSON Schema of a forget request (for editors and other tools)."""
    from ..request import request_schema

    document = request_schema()
    emit(document, as_json, lambda: out_console.print_json(json.dumps(document)))


def register(app: typer.Typer) -> None:
    """Add `validate` and `request schema` to the top-level app."""
    app.command("validate")(validate)
    app.add_typer(request_app, name="request")
