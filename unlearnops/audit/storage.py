"""Where audit records live: the storage seam under `AuditLog`.

A backend keeps the log's lines in order (each one record's canonical JSON, as bytes, without
the newline) and offers exactly three operations:

- `appending()`: a critical section that excludes every other writer (processes, machines).
  Inside it, `session.last_line()` reads the head and `session.append_line(line)` appends after
  it, durably; nobody can append between the two, so concurrent writers never fork the chain.
  Everything `AuditLog.append` does (check the head, sign, append, write the witness checkpoint)
  runs inside one such section.
- `lines()`: every line in order (verify, queries).
- `last_line()`: the tail line alone, cheaply (the head hash, no full read).

A backend never parses, hashes or signs: the record format, the signatures and the checkpoints
belong to `AuditLog` and are the same on every backend. `location` names where the log lives
(printable, no credentials) and is stable across processes: the witness files checkpoints
under it.

`FileStorage` is the default (one JSON Lines file, a lock file beside it). A database backend
implements the same class: `appending()` takes a lock every writer honours (e.g. a PostgreSQL
advisory lock, or `LOCK TABLE ... IN EXCLUSIVE MODE` inside one transaction), `append_line`
inserts one row and commits, `lines()` reads rows ordered by position.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from ..errors import UnlearnopsError
from .records import MAX_LINE_BYTES

LOCK_TIMEOUT_S = 60.0
_TAIL_BLOCK = 4096
_SKIP_BLOCK = 1 << 20  # bytes read at a time while skipping the rest of an oversized line


class AppendSession(ABC):
    """What a writer may do while it holds the log's append lock."""

    @abstractmethod
    def last_line(self) -> bytes | None:
        """The current tail line (None for an empty log)."""

    @abstractmethod
    def lines(self) -> Iterator[bytes]:
        """Every line, in order (for the rare check that needs more than the tail)."""

    @abstractmethod
    def append_line(self, line: bytes) -> None:
        """Append one line after the tail; durable when this returns."""


class AuditStorage(ABC):
    """One audit log's lines, wherever they are kept."""

    location: str
    # Whether other machines append to this log too (a database backend). Each machine's witness
    # then holds the checkpoint of its own last append, and a machine that joins the team has none
    # yet: for a shared log that is a first sight, not a removed witness (AuditLog.verify).
    shared: bool = False

    @abstractmethod
    def exists(self) -> bool:
        """Whether the log holds at least one line."""

    @abstractmethod
    def lines(self) -> Iterator[bytes]:
        """Every line in order, without newlines; a line cut short is yielded as it is."""

    @abstractmethod
    def last_line(self) -> bytes | None:
        """The tail line, or None for an empty log."""

    @abstractmethod
    def appending(self) -> contextlib.AbstractContextManager[AppendSession]:
        """The exclusive append section (see the module docstring)."""


class FileStorage(AuditStorage):
    """A JSON Lines file; appends are serialised by a lock file beside it (`<file>.lock`)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        # The directory resolved, the file's own name kept: a log replaced by a symbolic link (to an
        # empty file, or to another log signed with the same key) keeps its location, so the
        # witness compares it with this log's checkpoint, not with none or the other log's.
        self.location = f"file:{self.path.absolute().parent.resolve() / self.path.name}"

    def exists(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0

    def lines(self) -> Iterator[bytes]:
        """Bounded reads: a line longer than a record can be (an 8 GiB line written by someone with
        access to the workspace) is yielded cut at MAX_LINE_BYTES + 1, which parse_line names as
        damaged, and the rest of it is skipped in blocks, never held in memory whole."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            while line := handle.readline(MAX_LINE_BYTES + 1):
                if line.endswith(b"\n"):
                    yield line[:-1]
                    continue
                yield line
                while (rest := handle.readline(_SKIP_BLOCK)) and not rest.endswith(b"\n"):
                    pass

    def last_line(self) -> bytes | None:
        """Read from the end only: appending must not cost a read of the whole log."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            position = handle.tell()
            data = b""
            # A tail line longer than a record can be is read only that far: parse_line names it.
            while position > 0 and data.rstrip(b"\n").count(b"\n") < 1 and len(data) <= MAX_LINE_BYTES + 1:
                step = min(_TAIL_BLOCK, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
        stripped = data[:-1] if data.endswith(b"\n") else data
        if not stripped:
            return None
        return stripped.rsplit(b"\n", 1)[-1]

    @contextlib.contextmanager
    def appending(self) -> Iterator[AppendSession]:
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path), timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise UnlearnopsError(
                f"{self.lock_path}: another process has held the audit lock for {LOCK_TIMEOUT_S:.0f} s; "
                "retry, or remove the lock file if no unlearnops process is running"
            ) from None
        try:
            yield _FileSession(self)
        finally:
            lock.release()


class _FileSession(AppendSession):
    def __init__(self, storage: FileStorage):
        self.storage = storage

    def last_line(self) -> bytes | None:
        return self.storage.last_line()

    def lines(self) -> Iterator[bytes]:
        return self.storage.lines()

    def append_line(self, line: bytes) -> None:
        if b"\n" in line:
            raise ValueError("an audit line cannot contain a newline")
        # O_APPEND + one write + fsync: the line is on disk, whole, before the lock is released.
        descriptor = os.open(self.storage.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                # Appending after a line without its newline would glue two records together.
                raise UnlearnopsError(
                    f"{self.storage.path}: the last line is incomplete (a crash mid-write, or a cut); run "
                    "`unlearnops audit verify` and restore the log from a backup before appending"
                )
            os.write(descriptor, line + b"\n")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
