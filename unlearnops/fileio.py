"""Safe reads (size, depth, encoding, numbers, confinement) and atomic writes that never destroy.

Every file the tool reads from a user goes through `read_json`/`read_text`/`read_yaml_mapping`,
so hostile input (huge, deeply nested, non-UTF-8, binary, symlinks out of the base directory,
duplicate keys, integers too long to convert) is refused with a message before it can do harm.

Every directory or file the tool writes goes through `atomic_dir` / `write_text` / `write_json`,
the one output policy behind every `--out`: built in a temporary sibling, then renamed into
place, so a crash never leaves a half-written output; a file is only ever replaced if it is a
regular file (never a symlink, FIFO, device or directory); a directory is only replaced if it
is empty or holds nothing but what unlearnops wrote there (its OUTPUT_MARKER lists it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UnlearnopsError, UsageError

MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32
# One number policy for every parser (JSON and YAML): no setting, count or id needs more digits,
# and Python refuses to convert an integer of over 4,300 digits with a bare ValueError.
MAX_INT_DIGITS = 64
OUTPUT_MARKER = ".unlearnops-output.json"  # in every directory atomic_dir writes: what it wrote


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


def _read_capped(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes, checked on the open descriptor (a FIFO never blocks)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UnlearnopsError(f"{_short(path)}: file not found") from None
    except OSError as err:  # a name too long, a loop of links, a part that is a file: say which, not "disk full"
        raise UnlearnopsError(f"{_short(path)}: cannot be read ({err.strerror or err}); check the path") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UnlearnopsError(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise UnlearnopsError(f"{path}: {info.st_size} bytes exceeds the cap of {max_bytes} bytes; split or trim the file")
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(descriptor, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(descriptor)
    raw = b"".join(chunks)
    if len(raw) > max_bytes:  # it grew while we read
        raise UnlearnopsError(f"{path}: over the cap of {max_bytes} bytes; split or trim the file")
    return raw


def _short(path: Path | str, keep: int = 160) -> str:
    text = str(path)
    return text if len(text) <= keep else f"{text[: keep // 2]}...{text[-keep // 2 :]} ({len(text)} characters)"


def read_text(path: Path | str, *, max_bytes: int = MAX_JSON_BYTES) -> str:
    path = Path(path)
    raw = _read_capped(path, max_bytes)
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


class _RefusedValue(ValueError):
    """Raised from inside the JSON/YAML parsers; parse_json and read_yaml_mapping turn it into a message."""


def _checked_int(text: str) -> int:
    digits = sum(char.isdigit() for char in text)
    if digits > MAX_INT_DIGITS:
        raise _RefusedValue(f"an integer of {digits} digits; numbers have at most {MAX_INT_DIGITS} digits here")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when a key repeats: with "last wins" a reader and the tool would see different values."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            shown = key if len(key) <= 64 else key[:64] + "..."
            raise _RefusedValue(f"duplicate key '{shown}' in one object; keep one")
        seen.add(key)
    return dict(pairs)


def parse_json(text: str, *, source: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    # A cheap bracket count rejects absurd nesting before json recursion can blow the stack.
    if text.count("[") + text.count("{") > 0 and _bracket_depth(text) > max_depth:
        raise UnlearnopsError(f"{source}: JSON nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_int=_checked_int, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise UnlearnopsError(f"{source}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except _RefusedValue as err:
        raise UnlearnopsError(f"{source}: {err}") from None
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
    """A YAML file that must hold a mapping (pipelines, policies, settings), read with the caps and number policy above."""
    import yaml

    try:
        document = yaml.load(read_text(path, max_bytes=max_bytes), Loader=_yaml_loader()) or {}
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UnlearnopsError(f"{path}: invalid YAML{_yaml_where(err)}: {problem}") from None
    except _RefusedValue as err:
        raise UnlearnopsError(f"{path}: {err}") from None
    except RecursionError:
        raise UnlearnopsError(f"{path}: YAML nested too deeply") from None
    if not isinstance(document, dict):
        raise UnlearnopsError(f"{path}: expected a mapping of {what}")
    return document


def _yaml_where(err: Exception) -> str:
    mark = getattr(err, "problem_mark", None)
    return f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""


@functools.cache
def _yaml_loader():
    """yaml.SafeLoader with the JSON policy: integers of at most MAX_INT_DIGITS digits, no repeated key."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` then an explicit key is YAML's override, not a repeat
                key = self.construct_object(key_node, deep=True)
                with contextlib.suppress(TypeError):  # an unhashable key fails in SafeLoader with its own message
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key '{str(key)[:64]}' in one mapping; keep one", key_node.start_mark
                        )
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    def construct_int(loader, node):
        if sum(char.isdigit() for char in node.value) > MAX_INT_DIGITS:  # before int() can refuse a 4,301-digit value
            _checked_int(node.value)
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
        if len(str(abs(value))) > MAX_INT_DIGITS:  # 0x / 0o / 0b literals are short for their size
            raise _RefusedValue(f"an integer of {len(str(abs(value)))} digits; numbers have at most {MAX_INT_DIGITS} digits here")
        return value

    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    return Loader


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
    """One hash over every file's relative path and content, in sorted order (OUTPUT_MARKER files excluded:
    they record what was written, not what the output is)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


# ---- writing: one policy for every output ---------------------------------------------------------


def check_file_target(path: Path | str, *, what: str = "output") -> None:
    """Refuse to write over anything but a regular file: a symlink, FIFO, device, socket or directory stays as it is."""
    _refuse_other_kinds(Path(path), stat.S_ISREG, what, "name a new or regular file")


def _refuse_other_kinds(path: Path, allowed, what: str, fix: str) -> bool:
    """Whether `path` exists (not following links); refuse it when its kind is not `allowed` (stat.S_IS*)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as err:
        raise _refusal(what, f"{_short(path)}: cannot be inspected ({err.strerror}); {fix}") from None
    if not allowed(mode):
        raise _refusal(what, f"{path}: exists and is a {_kind(mode)}, which unlearnops never replaces; {fix}")
    return True


def _refusal(what: str, message: str) -> UnlearnopsError:
    """An output the policy refuses: a usage error (exit 2) when an option named it, as click treats a bad option value."""
    option = _option(what)
    return (UsageError if option else UnlearnopsError)(f"{what} {message}", field=option)


def _option(what: str) -> str | None:
    return what if what.startswith("--") else None


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
             (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def write_text(path: Path | str, text: str, *, what: str = "output") -> None:
    """Write a text file (e.g. JSON Lines) atomically (see write_bytes)."""
    write_bytes(path, text.encode("utf-8"), what=what)


def write_bytes(path: Path | str, data: bytes, *, what: str = "output") -> None:
    """Write a file atomically: a temporary file in the same directory, then rename over a regular file or nothing."""
    path = Path(path)
    check_file_target(path, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        check_file_target(path, what=what)  # again: the path may have changed while we wrote
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path | str, value: Any, *, what: str = "output") -> None:
    """Write JSON atomically (see write_text)."""
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n", what=what)


def check_dir_target(out: Path | str, *, what: str = "output") -> None:
    """Refuse an output directory that writing would destroy: anything but nothing, an empty directory,
    or a directory holding only what unlearnops wrote there (its OUTPUT_MARKER lists every entry)."""
    out = Path(out)
    if not _refuse_other_kinds(out, stat.S_ISDIR, what, "choose a new or empty directory"):
        return
    written = _written_entries(out)
    foreign = sorted(_entries(out) - (written or set()))
    if foreign and written is None:
        raise _refusal(what, (
            f"{out}: a non-empty directory unlearnops did not write (no {OUTPUT_MARKER} listing its files; it holds "
            f"e.g. {foreign[0]}), which writing the output would delete; choose a new or empty directory, or remove it"))
    if foreign:
        raise _refusal(what, (
            f"{out}: an earlier output holding {len(foreign)} file(s) unlearnops did not write there (e.g. {foreign[0]}), "
            "which writing the output would delete; move them out or choose another directory"))


def _entries(root: Path) -> set[str]:
    """Every file, link and directory under root, relative, without following symlinks (directories end in '/')."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root)
        found.update((base / name).as_posix() + "/" for name in dirs if not os.path.islink(os.path.join(folder, name)))
        found.update((base / name).as_posix() for name in files)
        found.update((base / name).as_posix() for name in dirs if os.path.islink(os.path.join(folder, name)))
    found.discard(OUTPUT_MARKER)
    return found


def _written_entries(out: Path) -> set[str] | None:
    """What the OUTPUT_MARKER of a directory atomic_dir wrote says it holds (None: no readable marker)."""
    marker = out / OUTPUT_MARKER
    if not marker.is_file() or marker.is_symlink():
        return None
    try:
        document = read_json(marker, max_bytes=16 * 1024 * 1024)
    except UnlearnopsError:
        return None
    entries = document.get("entries") if isinstance(document, dict) and document.get("written_by") == "unlearnops" else None
    return {entry for entry in entries if isinstance(entry, str)} if isinstance(entries, list) else None


@contextlib.contextmanager
def atomic_dir(out: Path | str, *, what: str = "output") -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `out`, on failure it is removed.

    A reader never sees a half-written `out`: either the old one, or the complete new one. `out`
    is checked (check_dir_target) before the work and again before the swap, so nothing of the
    user's is ever deleted; the new directory records what it holds in OUTPUT_MARKER.
    """
    out = Path(out)
    check_dir_target(out, what=what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        yield tmp
        write_json(tmp / OUTPUT_MARKER, {"written_by": "unlearnops", "entries": sorted(_entries(tmp))}, what="output marker")
        check_dir_target(out, what=what)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename tmp to out; an earlier output is moved aside first and removed only once the new one is in place."""
    if not os.path.lexists(out):
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.replace(out, old / "previous")
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / "previous", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
