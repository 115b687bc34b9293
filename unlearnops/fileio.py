"""Safe reads (size, depth, encoding, confinement) and atomic writes.

Every file the tool reads from a user goes through `read_json`/`read_text`, so hostile input
(huge, deeply nested, non-UTF-8, binary, symlinks out of the base directory) is refused before
it is read whole. Every directory or file the tool writes goes through `atomic_dir` /
`write_json`, so a crash never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UnlearnopsError

MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32


def confined(path: Path | str, base: Path | str, *, what: str = "path") -> Path:
    """Resolve `path` (relative to `base`) and refuse it if it escapes `base` (.., absolute, symlink)."""
    base_resolved = Path(base).resolve()
    candidate = Path(path)
    try:
        resolved = (candidate if candidate.is_absolute() else base_resolved / candidate).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # symlink loop, NUL byte: hostile or broken paths
        raise UnlearnopsError(f"{what}: '{path}' cannot be resolved ({err}); use a plain path inside {base_resolved}") from None
    if resolved != base_resolved and base_resolved not in resolved.parents:
        raise UnlearnopsError(
            f"{what}: '{path}' resolves outside the base directory {base_resolved}; "
            "use a path inside it (no '..', no absolute path elsewhere, no symlink out of it)"
        )
    return resolved


def _check_size(path: Path, max_bytes: int) -> None:
    if not path.exists():
        raise UnlearnopsError(f"{path}: file not found")
    if not path.is_file():
        raise UnlearnopsError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise UnlearnopsError(f"{path}: {size} bytes exceeds the cap of {max_bytes} bytes; split or trim the file")


def read_text(path: Path | str, *, max_bytes: int = MAX_JSON_BYTES) -> str:
    path = Path(path)
    _check_size(path, max_bytes)
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise UnlearnopsError(f"{path}: binary content (NUL bytes); expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnlearnopsError(f"{path}: not valid UTF-8 (byte {err.start}); re-encode the file as UTF-8") from None


def _depth(value: Any, limit: int) -> int:
    """Depth of nested lists/dicts, iteratively (a recursive walk could itself overflow)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(text: str, *, source: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    # A cheap bracket count rejects absurd nesting before json recursion can blow the stack.
    if text.count("[") + text.count("{") > 0 and _bracket_depth(text) > max_depth:
        raise UnlearnopsError(f"{source}: JSON nested deeper than {max_depth} levels")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UnlearnopsError(f"{source}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise UnlearnopsError(f"{source}: JSON nested deeper than {max_depth} levels") from None
    if _depth(value, max_depth) > max_depth:
        raise UnlearnopsError(f"{source}: JSON nested deeper than {max_depth} levels")
    return value


def _bracket_depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def read_json(path: Path | str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    path = Path(path)
    return parse_json(read_text(path, max_bytes=max_bytes), source=str(path), max_depth=max_depth)


def read_yaml_mapping(path: Path | str, *, what: str, max_bytes: int = 1024 * 1024) -> dict:
    """A YAML file that must hold a mapping (pipelines, policies, settings), read with the caps above."""
    import yaml

    try:
        document = yaml.safe_load(read_text(path, max_bytes=max_bytes)) or {}
    except yaml.YAMLError as err:
        raise UnlearnopsError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise UnlearnopsError(f"{path}: expected a mapping of {what}")
    return document


def canonical_json(value: Any) -> bytes:
    """Canonical JSON (sorted keys, no whitespace, UTF-8): the bytes that hashes are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path | str) -> str:
    """One hash over every file's relative path and content, in sorted order."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def write_text(path: Path | str, text: str) -> None:
    """Write a text file (e.g. JSON Lines) atomically (see write_bytes)."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write a file atomically: a temporary file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path | str, value: Any) -> None:
    """Write JSON atomically (see write_text)."""
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(out: Path | str, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `out`, on failure it is removed.

    A reader never sees a half-written `out`: either the old one, or none, or the complete new one.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not overwrite:
        raise UnlearnopsError(f"{out}: already exists; choose another --out or remove it")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
