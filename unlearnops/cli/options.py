"""Option types shared by every command (one home, as in huggingface_hub's `hf` CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..workspace import ENV_VAR

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (progress and logs go to stderr).")]
WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", envvar=ENV_VAR, help=f"Directory for every file the tool writes [env: {ENV_VAR}; default ~/.cache/unlearnops].", show_default=False),
]
ModelDirOpt = Annotated[Path, typer.Option("--model", help="A local Hugging Face model directory (safetensors).")]
CorpusOpt = Annotated[Path, typer.Option("--corpus", help="A corpus in MUSE's layout (raw/, verbmem/, knowmem/, privleak/).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output directory; written atomically (a temporary directory, then rename).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow a model's own Python code (config.json auto_map). Off by default.")
]
AllowPickleOpt = Annotated[
    bool, typer.Option("--allow-pickle", help="Allow pickle weights (*.bin), which can run code on load. Off: safetensors only.")
]
