"""Progress of long work (training, generation, quantization, pipeline stages), below the library.

The library reports, its caller decides how it is shown:

    with progress.task("quantize gptq-w4a16", total=2, enabled=show_progress) as bar:
        bar.advance(status="verifying saved weights")    # one step done, and what comes next
        bar.update(total=steps_done)                      # the work ended early
    progress.note("passed", label="gate")                 # one line: "gate: passed"

Everything goes to stderr (stdout stays clean for `--json`): a rich progress bar on a terminal,
and plain lines when stderr is not a terminal (a log file, CI, a pipe), printed as the work
advances (each tenth of it, at least every PLAIN_INTERVAL_S seconds) rather than once at the
end. The CLI passes its own stderr console to `configure`, so that progress and its messages
interleave in order; a library caller that does nothing gets the same on a console of its own.
Nothing here imports the CLI (or typer).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Protocol

PLAIN_STEPS = 10  # plain lines per task: one each time another tenth of the work is done
PLAIN_INTERVAL_S = 30.0  # ... and at least this often while it advances


class Task(Protocol):
    """What `task()` yields: advance the work, and say what it is doing now."""

    def advance(self, steps: int = 1, *, status: str | None = None) -> None: ...

    def update(self, *, total: int | None = None, status: str | None = None) -> None: ...


_console: Any = None  # the rich Console progress is written to; None = a stderr console made on first use


def configure(console: Any = None) -> None:
    """Send progress to `console` (a rich Console, e.g. the CLI's stderr console); None = the default."""
    global _console
    _console = console


def console() -> Any:
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


@contextlib.contextmanager
def task(description: str, total: int | None = None, *, enabled: bool = True) -> Iterator[Task]:
    """Report work of `total` steps (None: unknown); with enabled=False nothing is shown."""
    if not enabled:
        yield _Silent()
        return
    out = console()
    if out.is_terminal:
        with _bar(out, description, total) as bar:
            yield bar
    else:
        plain = _Plain(out, description, total)
        try:
            yield plain
        finally:
            plain.finish()


def note(message: str, *, label: str | None = None, enabled: bool = True) -> None:
    """One line on stderr: `label: message` (the label in bold on a terminal)."""
    if not enabled:
        return
    from rich.text import Text

    line = Text()
    if label is not None:
        line.append(label, style="bold").append(": ")
    console().print(line.append(message), highlight=False, soft_wrap=True)


class _Silent:
    def advance(self, steps: int = 1, *, status: str | None = None) -> None:
        pass

    def update(self, *, total: int | None = None, status: str | None = None) -> None:
        pass


class _Bar:
    def __init__(self, progress: Any, task_id: Any):
        self._progress, self._task = progress, task_id

    def advance(self, steps: int = 1, *, status: str | None = None) -> None:
        fields = {"status": status} if status is not None else {}
        self._progress.update(self._task, advance=steps, **fields)

    def update(self, *, total: int | None = None, status: str | None = None) -> None:
        fields = {"status": status} if status is not None else {}
        self._progress.update(self._task, **({"total": total} if total is not None else {}), **fields)


@contextlib.contextmanager
def _bar(out: Any, description: str, total: int | None) -> Iterator[_Bar]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=out, transient=False) as progress:
        yield _Bar(progress, progress.add_task(description, total=total, status=""))


class _Plain:
    """Plain lines: `description: 12/40 (30%) status, 8.1 s`, as the work advances, and a last one."""

    def __init__(self, out: Any, description: str, total: int | None):
        self._out, self.description, self.total = out, description, total
        self.done, self.status = 0, ""
        self._started = self._last_line = time.monotonic()
        self._last_step = 0  # the tenth of the work last reported
        self._line()

    def advance(self, steps: int = 1, *, status: str | None = None) -> None:
        self.done += steps
        self.status = status if status is not None else self.status
        step = self.done * PLAIN_STEPS // self.total if self.total else -1
        if step > self._last_step or time.monotonic() - self._last_line >= PLAIN_INTERVAL_S:
            self._last_step = max(step, self._last_step)
            self._line()

    def update(self, *, total: int | None = None, status: str | None = None) -> None:
        self.total = total if total is not None else self.total
        self.status = status if status is not None else self.status

    def finish(self) -> None:
        if self._last_step < PLAIN_STEPS or self.total is None:
            self._line()

    def _line(self) -> None:
        self._last_line = time.monotonic()
        count = f"{self.done}/{self.total} ({self.done * 100 // self.total}%)" if self.total else f"{self.done}"
        status = f" {self.status}" if self.status else ""
        elapsed = self._last_line - self._started
        self._out.print(f"{self.description}: {count}{status}, {elapsed:.1f} s", markup=False, highlight=False, soft_wrap=True)
