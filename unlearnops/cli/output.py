"""Where output goes: --json documents on stdout, human tables on stdout, progress and logs on stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from .. import progress

# Without a terminal (a pipe, a log file, CI) rich assumes 80 columns and cuts table cells
# ("unlear..."); there the lines are as long as their content. $COLUMNS still wins.
UNBOUNDED_WIDTH = 1000


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, width=UNBOUNDED_WIDTH)


# Progress bars and logs go to stderr so that `--json` output on stdout stays parseable; the
# library's progress (unlearnops.progress) goes to the same console, in order with the CLI's lines.
err_console = _console(stderr=True)
out_console = _console(stderr=False)
progress.configure(err_console)


def emit(document: Any, as_json: bool, render: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        render()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    result = Table(title=title)
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*[_cell(value) for value in row])
    return result


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
