"""CLI area: unlearn: LoRA or full fine-tuning unlearning."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app (placeholder until the area lands)."""
