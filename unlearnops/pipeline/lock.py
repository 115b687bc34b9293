"""One `run` per workspace at a time: stage directories and registration are not shared."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import UnlearnopsError
from ..workspace import Workspace

LOCK_NAME = "run.lock"


@contextlib.contextmanager
def run_lock(workspace: Workspace, *, wait: bool = False) -> Iterator[None]:
    """Hold `<workspace>/locks/run.lock`; without `wait`, fail at once if another run holds it."""
    from filelock import FileLock, Timeout

    path = workspace.locks_dir / LOCK_NAME
    lock = FileLock(str(path), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        raise UnlearnopsError(
            f"{path}: another `unlearnops run` is using this workspace; wait for it to finish, pass --wait, "
            "or use another --workspace"
        ) from None
    try:
        yield
    finally:
        lock.release()
