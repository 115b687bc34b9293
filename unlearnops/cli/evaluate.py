"""CLI area: evaluate: MUSE metrics on any local model directory."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app (placeholder until the area lands)."""
