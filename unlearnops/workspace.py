"""The workspace: the one directory that holds every file the tool writes.

Resolution order: the --workspace option, then $UNLEARNOPS_HOME, then ~/.cache/unlearnops
(the Hugging Face convention for a per-user cache). A workspace must accept a new file, tried
for real (a probe file): permission bits say nothing about /proc, a read-only mount or root.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UnlearnopsError, UsageError

ENV_VAR = "UNLEARNOPS_HOME"
DEFAULT_BENCH = "default"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, option: Path | str | None = None) -> "Workspace":
        if isinstance(option, str) and not option.strip():
            raise UsageError("--workspace: empty; give a directory (or leave the option out to use the default)", field="--workspace")
        chosen = option or os.environ.get(ENV_VAR) or Path.home() / ".cache" / "unlearnops"
        try:
            root = Path(chosen).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
        except (OSError, RuntimeError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise UnlearnopsError(f"workspace {chosen}: cannot create it ({reason}); set --workspace or ${ENV_VAR}", field="--workspace") from None
        _probe_writable(root)
        return cls(root)

    def bench_dir(self, name: str = DEFAULT_BENCH) -> Path:
        return self.root / "bench" / name

    @property
    def tracking_db(self) -> Path:
        """The sqlite file of the workspace's MLflow store (it may not exist yet)."""
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        """The workspace's MLflow store, created on first use so that a crash never leaves it half-built."""
        from .tracking_store import ensure_sqlite_store

        ensure_sqlite_store(self.tracking_db, lock=self.locks_dir / "mlflow-db.lock")
        return f"sqlite:///{self.tracking_db}"

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


def _probe_writable(root: Path) -> None:
    """Create and remove a file in `root`: the only test that holds for /proc, read-only mounts and root."""
    if not root.is_dir():
        raise UnlearnopsError(f"workspace {root}: not a directory; set --workspace or ${ENV_VAR} to a directory", field="--workspace")
    try:
        descriptor, probe = tempfile.mkstemp(dir=root, prefix=".write-probe.")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as err:
        why = "read-only file system" if err.errno == errno.EROFS else (err.strerror or str(err))
        raise UnlearnopsError(
            f"workspace {root}: cannot create a file in it ({why}); make it writable or set --workspace or ${ENV_VAR} "
            "to a writable directory",
            field="--workspace",
        ) from None
