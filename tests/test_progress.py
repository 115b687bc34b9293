"""unlearnops.progress: plain lines as the work advances without a terminal, a bar on one, nothing when off."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from unlearnops import progress

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def captured():
    """Progress into a string, as into a log file (not a terminal); the default console restored after."""
    buffer = io.StringIO()
    progress.configure(Console(file=buffer, width=200))
    yield buffer
    progress.configure(None)


def test_without_a_terminal_plain_lines_appear_while_the_work_advances(captured):
    with progress.task("train target", total=40) as bar:
        for step in range(1, 41):
            bar.advance(status=f"loss {1 / step:.3f}")
            if step == 20:  # halfway: the lines so far are already written, not held for the end
                halfway = captured.getvalue().splitlines()
    assert halfway[0] == "train target: 0/40 (0%), 0.0 s"
    assert halfway[-1].startswith("train target: 20/40 (50%) loss 0.050, ")
    lines = captured.getvalue().splitlines()
    assert len(lines) == 11  # the start, then one line per tenth: not one per step
    assert lines[-1].startswith("train target: 40/40 (100%) loss 0.025, ")


def test_work_that_ends_early_or_has_no_total_still_ends_with_a_line(captured):
    with progress.task("unlearn", total=100) as bar:
        bar.advance(3, status="epoch 1")
        bar.update(total=3)  # the stopping rule ended it at 3 of 100 planned steps
    with progress.task("download") as bar:
        bar.advance(5)
    lines = captured.getvalue().splitlines()
    assert lines[-3].startswith("unlearn: 3/3 (100%) epoch 1, ")
    assert lines[-1].startswith("download: 5, ")


def test_disabled_progress_and_notes_print_nothing(captured):
    with progress.task("quiet", total=3, enabled=False) as bar:
        bar.advance(3, status="x")
        bar.update(total=1)
    progress.note("nothing", label="stage", enabled=False)
    assert captured.getvalue() == ""
    progress.note("passed", label="gate")
    assert captured.getvalue() == "gate: passed\n"


def test_on_a_terminal_it_is_a_rich_bar(captured):
    terminal = io.StringIO()
    progress.configure(Console(file=terminal, force_terminal=True, width=120))
    with progress.task("quantize rtn-w4a16", total=2) as bar:
        bar.advance(2, status="done")
    assert "quantize rtn-w4a16" in terminal.getvalue() and "2/2" in terminal.getvalue() and "━" in terminal.getvalue()


def test_cli_tables_are_not_cut_without_a_terminal(tmp_path):
    # A real process with stdout piped (no terminal, no $COLUMNS): a 150-character cell stays whole.
    name = "unlearnops-bench-unlearned-" + "x" * 123
    code = ("from unlearnops.cli.output import out_console, table; "
            f"out_console.print(table('models', ['name', 'version'], [({name!r}, 2)]))")
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert name in result.stdout
