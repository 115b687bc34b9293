"""The workspace: the one directory that holds every file the tool writes.

Resolution order: the --workspace option, then $UNLEARNOPS_HOME, then ~/.cache/unlearnops
(the Hugging Face convention for a per-user cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UnlearnopsError

ENV_VAR = "UNLEARNOPS_HOME"
DEFAULT_BENCH = "default"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, option: Path | str | None = None) -> "Workspace":
        chosen = option or os.environ.get(ENV_VAR) or Path.home() / ".cache" / "unlearnops"
        root = Path(chosen).expanduser().resolve()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UnlearnopsError(f"workspace {root}: cannot create it ({err.strerror}); set --workspace or ${ENV_VAR}") from None
        if not os.access(root, os.W_OK):
            raise UnlearnopsError(f"workspace {root}: not writable; set --workspace or ${ENV_VAR} to a writable directory")
        return cls(root)

    def bench_dir(self, name: str = DEFAULT_BENCH) -> Path:
        return self.root / "bench" / name

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def stages_dir(self) -> Path:
        return self.root / "stages"

    @property
    def locks_dir(self) -> Path:
        path = self.root / "locks"
        path.mkdir(parents=True, exist_ok=True)
        return path
