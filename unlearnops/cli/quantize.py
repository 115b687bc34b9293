"""CLI area: quantize / quantize-report: 4-bit and 8-bit post-training quantization."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app (placeholder until the area lands)."""
