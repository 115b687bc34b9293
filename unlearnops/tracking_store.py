"""The workspace's MLflow sqlite store, created so that a crash can never leave it half-built.

MLflow creates a missing sqlite store in place: tables first, then ~60 alembic migrations, a
few seconds in all. A process killed in between leaves a store that every later command (and
`mlflow db upgrade`) refuses ("table ... already exists", "out-of-date database schema"). So
the store is built aside (`.mlflow.db.<pid>.creating`), migrated to MLflow's head revision and
only then renamed into place: `mlflow.db` exists complete or not at all. A store left
incomplete by an older version or by MLflow itself is redone when it holds no data (a killed
creation never does), and refused with the fix otherwise. One creator at a time (a file lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from .errors import UnlearnopsError

SQLITE_HEADER = b"SQLite format 3\x00"
PARTIAL_SUFFIX = ".creating"
BUSY_TIMEOUT_S = 10.0  # a writer holds the store this long at most in normal use
_ready: set[Path] = set()  # stores this process already checked


def ensure_sqlite_store(db: Path, *, lock: Path) -> None:
    """Make `db` a complete MLflow store (create it aside and rename, or redo an empty incomplete one)."""
    db = Path(db)
    if db in _ready:
        return
    from filelock import FileLock

    with FileLock(str(lock)):
        _sweep_partials(db)
        if not _is_complete(db):
            _create(db)
    _ready.add(db)


def _is_complete(db: Path) -> bool:
    """True for a store at MLflow's head revision, False when absent or an empty incomplete one (removed)."""
    if not db.exists():
        return False
    with db.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise _corrupt(db, "it does not start with the sqlite header")
    revision, holds_data = _inspect(db)
    head = _head_revision()
    if revision == head:
        return True
    if holds_data:
        raise UnlearnopsError(
            f"MLflow tracking store {db}: schema revision {revision or 'none'}, this MLflow needs {head}; "
            f"back the file up, then run `mlflow db upgrade sqlite:///{db}` and rerun",
        )
    # An interrupted creation (by an older unlearnops or by MLflow itself): nothing in it to keep.
    for path in (db, *_sidecars(db)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return False


def _inspect(db: Path) -> tuple[str | None, bool]:
    """(alembic revision, whether any experiment beyond Default, run or registered model exists)."""
    try:  # read-write: a store whose writer was killed has a hot journal, which the first reader must roll back
        connection = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as err:
        raise _unreadable(db, err) from None
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        queries = {
            "experiments": "SELECT COUNT(*) FROM experiments WHERE name != 'Default'",
            "runs": "SELECT COUNT(*) FROM runs",
            "registered_models": "SELECT COUNT(*) FROM registered_models",
        }
        holds_data = any(connection.execute(sql).fetchone()[0] for table, sql in queries.items() if table in tables)
        return revision, holds_data
    except sqlite3.Error as err:
        raise _unreadable(db, err) from None
    finally:
        connection.close()


def _unreadable(db: Path, err: sqlite3.Error) -> UnlearnopsError:
    text = str(err)
    if "locked" in text or "busy" in text:
        return UnlearnopsError(
            f"MLflow tracking store {db}: database is locked by another process for over {BUSY_TIMEOUT_S:.0f} s; "
            "wait for it to finish (or stop it), then rerun"
        )
    if "readonly" in text or "read-only" in text:
        return UnlearnopsError(f"MLflow tracking store {db}: cannot be written ({text}); make the file writable, then rerun")
    return _corrupt(db, text)


def _corrupt(db: Path, why: str) -> UnlearnopsError:
    return UnlearnopsError(
        f"MLflow tracking store {db}: not a readable sqlite database ({why}); the file is corrupt: restore it from a "
        f"backup, or move it aside (`mv {db} {db}.corrupt`) to start an empty registry, then rerun"
    )


def _head_revision() -> str:
    _quiet()
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _create(db: Path) -> None:
    """Build the store in a temporary sibling, migrate it to the head revision, then rename it into place."""
    _quiet()
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables, _verify_schema

    db.parent.mkdir(parents=True, exist_ok=True)
    partial = db.with_name(f".{db.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
    try:
        try:
            _initialize_tables(engine)
            _verify_schema(engine)
        finally:
            engine.dispose()
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, db)
    except BaseException:  # a full disk, say: leave nothing half-built behind (a SIGKILL's leftovers are swept)
        for path in (partial, *_sidecars(partial)):
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    _fsync_dir(db.parent)


def _sweep_partials(db: Path) -> None:
    """Remove what a creator killed mid-way left behind (the lock is held: no creator is running)."""
    for path in db.parent.glob(f".{db.name}.*{PARTIAL_SUFFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _sidecars(db: Path) -> list[Path]:
    return [db.with_name(db.name + suffix) for suffix in ("-journal", "-wal", "-shm")]


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _quiet() -> None:
    # Creating the tables logs each step at INFO on stderr.
    for name in ("alembic", "mlflow.store.db.utils"):
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.level, logging.WARNING))
