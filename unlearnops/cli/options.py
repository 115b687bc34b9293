"""Option types shared by every command (one home, as in huggingface_hub's `hf` CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..workspace import ENV_VAR


def non_empty_path(value: str) -> Path:
    """A path option's parser: typer would turn "" into Path("."), silently the current directory."""
    if not value.strip():
        raise typer.BadParameter("empty; give a path (or leave the option out)")
    return Path(value)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (progress and logs go to stderr).")]
WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace", envvar=ENV_VAR, parser=non_empty_path, show_default=False,
        help=f"Directory for every file the tool writes [env: {ENV_VAR} (empty = unset); default ~/.cache/unlearnops].",
    ),
]
ModelDirOpt = Annotated[Path, typer.Option("--model", parser=non_empty_path, help="A local Hugging Face model directory (safetensors).")]
CorpusOpt = Annotated[Path, typer.Option("--corpus", parser=non_empty_path, help="A corpus in MUSE's layout (raw/, verbmem/, knowmem/, privleak/).")]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--out", parser=non_empty_path,
        help="Output directory: new, empty, or an earlier output of this command (never one holding files the tool did "
        "not write); written atomically (a temporary sibling directory, then rename).",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a model's own Python code (config.json auto_map). Off by default.")
]
AllowPickleOpt = Annotated[
    bool, typer.Option("--allow-pickle", help="Allow pickle weights (*.bin), which can run code on load. Off: safetensors only.")
]
