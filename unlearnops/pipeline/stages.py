"""Content-addressed stage outputs: `<stages_dir>/<stage>/<sha256 of inputs' hashes + config>`.

A stage's directory is built in a temporary sibling and renamed into place (fileio.atomic_dir),
with `stage.json` (what it was built from, how long it took) and the completion marker
`.complete` written last. A directory without the marker (a copy interrupted, a crash on a
filesystem without atomic rename) is treated as absent and rebuilt; temporary siblings left by
a killed run are swept before a rebuild. The caller holds the workspace run lock.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fileio import atomic_dir, canonical_json, read_json, sha256_bytes, write_json

MARKER = ".complete"
RECORD = "stage.json"


def stage_key(stage: str, config: Any, inputs: dict[str, str]) -> str:
    """sha256 over the stage name, its settings and the hashes of what it reads."""
    return sha256_bytes(canonical_json({"stage": stage, "config": config, "inputs": inputs}))


@dataclass
class StageResult:
    stage: str
    key: str
    path: Path
    cached: bool
    seconds: float
    record: dict[str, Any]


class StageStore:
    def __init__(self, root: Path):
        self.root = root

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def is_complete(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MARKER).is_file()

    def run(self, stage: str, config: Any, inputs: dict[str, str], build: Callable[[Path], dict[str, Any]]) -> StageResult:
        """Return the stage's complete output, building it with `build(tmp_dir) -> record` if needed."""
        key = stage_key(stage, config, inputs)
        out = self.path(stage, key)
        if self.is_complete(stage, key):
            return StageResult(stage, key, out, True, 0.0, read_json(out / RECORD))
        self._sweep(out)
        started = time.perf_counter()
        with atomic_dir(out) as tmp:
            record = build(tmp) or {}
            seconds = round(time.perf_counter() - started, 2)
            record = {"stage": stage, "key": key, "config": config, "inputs": inputs, "seconds": seconds, **record}
            write_json(tmp / RECORD, record)
            (tmp / MARKER).write_text(key + "\n")  # last: its presence means everything above is on disk
        return StageResult(stage, key, out, False, seconds, record)

    @staticmethod
    def _sweep(out: Path) -> None:
        """Remove an incomplete output and temporary siblings a killed run left behind."""
        if out.exists():
            shutil.rmtree(out)
        for partial in out.parent.glob(f".{out.name}.*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
