"""The data trained on is the data validated: a content-addressed snapshot made at validation.

Validation parses the request's data into memory (request.ResolvedData); the snapshot writes
exactly that content, in MUSE's layout, to `<workspace>/data/<sha256>/corpus/` (with a copy of
the bench's `bench.json` beside it when the data is a bench: the stopping rule and the PrivLeak
reference read it there), named by the hash of what it holds. Every stage reads the snapshot,
never the request's files again, so a file edited after `validate` changes nothing that is
trained or measured; and `check()` re-hashes the snapshot before each stage and refuses, naming
the file, if anything in the workspace changed it since.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnlearnopsError
from ..fileio import read_json, sha256_file, write_json

SNAPSHOTS = "data"
CORPUS = "corpus"
MANIFEST = "snapshot.json"  # relative path -> sha256 of every file, for naming what changed


@dataclass(frozen=True)
class Snapshot:
    path: Path
    sha256: str  # over every file's relative path and hash (fileio.sha256_tree's definition)
    files: dict[str, str]  # relative path -> sha256, as validated
    workspace_root: Path

    @property
    def corpus(self) -> Path:
        return self.path / CORPUS

    @property
    def location(self) -> str:
        """Where the snapshot lives, relative to the workspace: meaningful in a shared registry."""
        return self.path.relative_to(self.workspace_root).as_posix()

    def check(self) -> None:
        """Refuse, naming the file, if the snapshot no longer holds exactly what was validated."""
        present = {path.relative_to(self.path).as_posix() for path in self.path.rglob("*") if path.is_file()} - {MANIFEST}
        for relative in sorted(present | set(self.files)):
            if relative not in self.files:
                raise UnlearnopsError(f"{self.path / relative}: added after validation; the data trained on must be the data validated")
            if relative not in present:
                raise UnlearnopsError(f"{self.path / relative}: removed after validation; rerun the request to validate its data again")
            if sha256_file(self.path / relative) != self.files[relative]:
                raise UnlearnopsError(
                    f"{self.path / relative}: changed after validation (sha256 differs from the validated content); "
                    "rerun the request to validate its data again"
                )


def _tree_sha256(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(relative.encode() + b"\0" + files[relative].encode())
    return digest.hexdigest()


def take(data, workspace, *, bench: Path | None = None) -> Snapshot:
    """Write `data` (request.ResolvedData, as validated) to its content-addressed snapshot.

    `bench` is the bench directory when the data came from one: its bench.json is copied beside
    the snapshot's corpus.
    """
    root = workspace.root / SNAPSHOTS
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".snapshot.", suffix=".partial"))
    try:
        data.to_corpus().write(tmp / CORPUS)
        if bench is not None and (bench / "bench.json").is_file():
            shutil.copyfile(bench / "bench.json", tmp / "bench.json")
        files = {path.relative_to(tmp).as_posix(): sha256_file(path) for path in sorted(tmp.rglob("*")) if path.is_file()}
        write_json(tmp / MANIFEST, files)
        digest = _tree_sha256(files)
        target = root / digest
        if target.is_dir():
            shutil.rmtree(tmp)  # this content was snapshotted before: check() below vouches for that copy
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    snapshot = Snapshot(target, digest, files, workspace.root)
    snapshot.check()
    return snapshot


def load(workspace, sha256: str) -> Snapshot:
    """The snapshot a record names (for re-checking an earlier request's forget set)."""
    path = workspace.root / SNAPSHOTS / sha256
    if not (path / MANIFEST).is_file():
        raise UnlearnopsError(f"{path}: the validated data of this request is not in this workspace; restore it to re-check the request")
    files = read_json(path / MANIFEST)
    if not isinstance(files, dict) or _tree_sha256({str(k): str(v) for k, v in files.items()}) != sha256:
        raise UnlearnopsError(f"{path / MANIFEST}: does not match the snapshot's name (edited); restore the snapshot")
    return Snapshot(path, sha256, files, workspace.root)
