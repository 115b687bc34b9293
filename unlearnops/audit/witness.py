"""The witness: where each log's latest signed checkpoint is kept, away from the log.

    $UNLEARNOPS_AUDIT_WITNESS     a directory (put it on other storage: another disk, a mount the
                                  workspace's users cannot write)
    default                       $XDG_STATE_HOME/unlearnops/witness (~/.local/state/unlearnops/witness)

One file per log location, `<sha256(location)[:32]>.checkpoint`, holding the signed note of the
log's last append (replaced atomically after every append). A log that is cut, rolled back or
replaced no longer extends the checkpoint its witness holds, so `verify` catches what a hash
chain alone cannot: the last records removed, or the whole file swapped for an older copy.
Keyed by location, the witness also notices a log deleted or replaced by another one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from ..errors import UnlearnopsError
from .signing import ORIGIN_PREFIX

WITNESS_ENV = "UNLEARNOPS_AUDIT_WITNESS"
SUFFIX = ".checkpoint"
MAX_NOTE_BYTES = 4096


def default_witness_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "unlearnops" / "witness"


class WitnessDir:
    def __init__(self, path: Path | str | None = None):
        self.path = Path(path or os.environ.get(WITNESS_ENV) or default_witness_dir()).expanduser()

    def __str__(self) -> str:
        return str(self.path)

    def file_for(self, location: str) -> Path:
        return self.path / (hashlib.sha256(location.encode()).hexdigest()[:32] + SUFFIX)

    def read(self, location: str) -> str | None:
        """The signed note last written for the log at `location` (None if the witness has none)."""
        return _read_note(self.file_for(location))

    def find(self, log_id: str) -> str | None:
        """A note for this log id under any location (a workspace that moved keeps its witness)."""
        if not self.path.is_dir():
            return None
        origin = (ORIGIN_PREFIX + log_id + "\n").encode()
        for candidate in sorted(self.path.glob("*" + SUFFIX)):
            note = _read_note(candidate)
            if note is not None and note.encode().startswith(origin):
                return note
        return None

    def prepare(self) -> None:
        """Create the directory before the first append, so a witness failure never follows a write to the log."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise UnlearnopsError(f"audit witness {self.path}: cannot create it ({err.strerror}); set ${WITNESS_ENV}", field=f"${WITNESS_ENV}") from None
        if not os.access(self.path, os.W_OK):
            raise UnlearnopsError(f"audit witness {self.path}: not writable; set ${WITNESS_ENV} to a writable directory", field=f"${WITNESS_ENV}")

    def write(self, location: str, note: str) -> None:
        """Replace the location's checkpoint atomically (temporary file, fsync, rename)."""
        target = self.file_for(location)
        descriptor, temporary = tempfile.mkstemp(dir=self.path, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(note)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def _read_note(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_NOTE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UnlearnopsError(f"audit witness {path}: cannot read it ({err.strerror})", field=f"${WITNESS_ENV}") from None
    if len(data) > MAX_NOTE_BYTES:
        return "\n"  # not a checkpoint: open_checkpoint reports it
    return data.decode("utf-8", errors="replace")
