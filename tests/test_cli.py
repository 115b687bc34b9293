"""The CLI entry points: `python -m unlearnops.cli` is the same program as the `unlearnops` script."""

from __future__ import annotations

import subprocess
import sys

from unlearnops import __version__


def test_python_m_unlearnops_cli_runs_the_cli():
    version = subprocess.run([sys.executable, "-m", "unlearnops.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"unlearnops {__version__}"
    usage = subprocess.run([sys.executable, "-m", "unlearnops.cli", "no-such-command"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "no-such-command" in usage.stderr  # main()'s exit codes, not a traceback
    assert "Traceback" not in usage.stderr
