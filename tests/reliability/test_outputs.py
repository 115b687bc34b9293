"""One output policy for every `--out` (fileio.atomic_dir / write_text): nothing of the user's is
ever removed or replaced.

A directory output is refused unless it is new, empty, or an earlier output of unlearnops that
holds nothing else; a file output never replaces what is not a regular file (a symlink, FIFO,
device node or directory stays exactly as it was); outputs appear complete or not at all.

The property test draws what lies at --out (and beside it) before a writing command runs, and
checks afterwards that every entry the tool did not write is unchanged: same kind, same bytes,
same link target. The commands are run in-process through the CLI (`gate` with --out and
--junit, `audit export --out`, `evaluate --details`); `quantize` and `unlearn`, which train or
quantize for seconds, get the refusals (made before any work) in the property and one
replacement of their own earlier output each.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import save_tiny_llama
from unlearnops.audit import REQUEST_RECEIVED, AuditLog
from unlearnops.fileio import OUTPUT_MARKER

REPO = Path(__file__).resolve().parents[2]
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
METRICS = {"verbmem_f": 10.0, "knowmem_f": 10.0, "knowmem_r": 40.0, "privleak": 5.0}
TEXTS = ["The quick brown fox jumps over the lazy dog.", "A tiny model for the output policy tests, nothing more."]


# ---- what lies on disk, before and after -----------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root (links not followed): kind and bytes, link target, or device numbers."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            relative = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                entries[relative] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                entries[relative] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISDIR(info.st_mode):
                entries[relative] = ("dir",)
            else:
                entries[relative] = ("special", stat.S_IFMT(info.st_mode), info.st_rdev)
    return entries


def make_device(path: Path) -> bool:
    """A character device node like /dev/full (1, 7), made here; False where mknod is not allowed."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except (PermissionError, OSError):
        return False
    return True


# What may lie at the output path. "earlier output" is a directory the same command wrote before.
STATES = ["absent", "empty dir", "foreign dir", "regular file", "symlink to file", "symlink to dir", "dangling symlink",
          "fifo", "device", "earlier output", "earlier output + foreign file", "earlier output + foreign link"]


def lay_out(state: str, target: Path, outside: Path, earlier) -> None:
    """Put `state` at target; `outside` holds what links point at; `earlier()` writes a real earlier output."""
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "precious.txt").write_text("the user's file, outside\n")
    if state == "empty dir":
        target.mkdir()
    elif state == "foreign dir":
        (target / "notes").mkdir(parents=True)
        (target / "notes" / "todo.md").write_text("the user's notes\n")
        (target / "gate.json").write_text("the user's own gate.json\n")  # a name the command writes too
    elif state == "regular file":
        target.write_text("the user's file at the output path\n")
    elif state == "symlink to file":
        target.symlink_to(outside / "precious.txt")
    elif state == "symlink to dir":
        target.symlink_to(outside, target_is_directory=True)
    elif state == "dangling symlink":
        target.symlink_to(outside / "nothing-here")
    elif state == "fifo":
        os.mkfifo(target)
    elif state == "device":
        if not make_device(target):  # no CAP_MKNOD here: a FIFO is the nearest special file
            os.mkfifo(target)
    elif state.startswith("earlier output"):
        earlier(target)
        if state.endswith("foreign file"):
            (target / "added-by-user.txt").write_text("added after unlearnops wrote the directory\n")
        elif state.endswith("foreign link"):
            (target / "link-by-user").symlink_to(outside / "precious.txt")


def assert_nothing_foreign_changed(before: dict, after: dict, owned: set[str]) -> None:
    """Every entry that was not the tool's own (owned: paths it may replace) is still there, unchanged."""
    for path, entry in before.items():
        if any(path == mine or path.startswith(mine + "/") for mine in owned):
            continue
        assert after.get(path) == entry, f"{path}: was {entry}, now {after.get(path)}"


def ours(target: Path) -> set[str]:
    """The entries of an earlier unlearnops output at target (its marker lists them)."""
    marker = target / OUTPUT_MARKER
    if target.is_symlink() or not marker.is_file():
        return set()
    listed = json.loads(marker.read_text())["entries"]
    return {f"{target.name}/{entry.rstrip('/')}" for entry in listed} | {f"{target.name}/{OUTPUT_MARKER}"}


# ---- the commands -------------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path_factory, tiny_bench):
    root = tmp_path_factory.mktemp("inputs")
    (root / "bench").symlink_to(tiny_bench, target_is_directory=True)
    (root / "metrics.json").write_text(json.dumps(METRICS))
    log = AuditLog(root / "workspace" / "audit.jsonl")
    log.append(REQUEST_RECEIVED, request_id="outputs-0001", request_sha256="0" * 64, deadline="2026-12-02T09:30:00+00:00")
    return root


def gate_args(inputs: Path, out: Path) -> list:
    return ["gate", "--metrics", inputs / "metrics.json", "--policy", REPO / "pipelines" / "ci.yaml", "--out", out, "--json"]


def junit_args(inputs: Path, out: Path) -> list:
    return ["gate", "--metrics", inputs / "metrics.json", "--policy", REPO / "pipelines" / "ci.yaml", "--junit", out, "--json"]


def export_args(inputs: Path, out: Path) -> list:
    return ["audit", "export", "--request", "outputs-0001", "--out", out, "--workspace", inputs / "workspace", "--no-registry", "--json"]


def details_args(inputs: Path, out: Path) -> list:
    bench = inputs / "bench"
    return ["evaluate", "--model", bench / "target", "--corpus", bench / "corpus", "--metric", "verbmem_f", "--limit", "1",
            "--details", out, "--json"]


# command -> (argument builder, writes a directory?)
CHEAP = {"gate --out": (gate_args, True), "gate --junit": (junit_args, False), "audit export --out": (export_args, False),
         "evaluate --details": (details_args, False)}


@PROPERTY
@given(command=st.sampled_from(sorted(CHEAP)), state=st.sampled_from(STATES), neighbours=st.booleans())
def test_out_never_removes_or_replaces_a_file_it_did_not_write(cli, inputs, tmp_path_factory, command, state, neighbours):
    build, is_dir = CHEAP[command]
    root = tmp_path_factory.mktemp("out")
    target = root / "target"
    if neighbours:  # files beside the output: never touched, whatever happens at the output itself
        (root / "beside.txt").write_text("beside the output\n")
        (root / f".{target.name}.partial").mkdir()
    if state.startswith("earlier output") and not is_dir:
        state = "regular file"  # a file output's "earlier output" is a regular file
    lay_out(state, target, root / "outside", lambda path: cli(*build(inputs, path)))
    before = snapshot(root)
    result = cli(*build(inputs, target))
    after = snapshot(root)

    replaceable = {"absent", "empty dir", "earlier output"} if is_dir else {"absent", "regular file"}
    if state in replaceable:
        assert result.exit_code == 0, result.stderr
        owned = ours(target) | {target.name} if is_dir else {target.name}
    else:
        assert result.exit_code == 2, (state, result.stdout, result.stderr)  # a bad option value: a usage error
        error = json.loads(result.stdout)
        assert error["exit_code"] == 2 and error["field"] in ("--out", "--junit", "--details"), error
        assert "Traceback" not in result.stderr
        owned = set()
    assert_nothing_foreign_changed(before, after, owned)
    assert not [p for pattern in (".target.*.partial", ".target.*.old", ".target.*.tmp") for p in root.glob(pattern)], \
        "a temporary sibling was left behind"
    if result.exit_code == 0:
        assert target.is_dir() if is_dir else target.is_file() and not target.is_symlink()


def test_a_device_node_is_never_replaced(cli, inputs, tmp_path):
    """`audit export --out /dev/full` replaced the device (as root): the node, made here, stays a device."""
    device = tmp_path / "full"
    if not make_device(device):
        pytest.skip("mknod is not allowed here (needs CAP_MKNOD)")
    for args in (export_args(inputs, device), junit_args(inputs, device), gate_args(inputs, device)):
        result = cli(*args)
        assert result.exit_code == 2 and "character device" in json.loads(result.stdout)["error"], result.stdout
        assert stat.S_ISCHR(os.lstat(device).st_mode) and os.lstat(device).st_rdev == os.makedev(1, 7)


# ---- the commands that train or quantize --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("model") / "model", TEXTS * 20)


@pytest.mark.slow
@pytest.mark.parametrize("state", [s for s in STATES if s not in ("absent", "empty dir", "earlier output")])
def test_quantize_and_unlearn_refuse_what_they_would_destroy_before_any_work(cli, tiny_model, tiny_bench, tmp_path, state):
    target = tmp_path / "target"
    lay_out(state, target, tmp_path / "outside", lambda path: (path.mkdir(), (path / OUTPUT_MARKER).write_text(
        json.dumps({"written_by": "unlearnops", "entries": []}))))
    before = snapshot(tmp_path)
    for args in (["quantize", "--model", tiny_model, "--scheme", "rtn-w4a16", "--group-size", "32", "--out", target, "--json"],
                 ["unlearn", "--model", tiny_bench / "target", "--corpus", tiny_bench / "corpus", "--out", target, "--json"]):
        result = cli(*args)
        assert result.exit_code == 2, (args[0], state, result.stdout, result.stderr)
        assert json.loads(result.stdout)["field"] == "--out"
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_quantize_replaces_its_own_earlier_output_atomically(cli, tiny_model, tmp_path):
    out = tmp_path / "quantized"
    args = ["quantize", "--model", tiny_model, "--scheme", "rtn-w4a16", "--group-size", "32", "--out", out, "--json"]
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    assert (out / OUTPUT_MARKER).is_file() and (out / "quantize.json").is_file()
    second = cli(*args)
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["scheme"] == "rtn-w4a16"
    assert not list(tmp_path.glob(".quantized.*")), "temporary siblings left behind"
    (out / "mine.txt").write_text("now the directory holds a file of the user's")
    refused = cli(*args)
    assert refused.exit_code == 2 and "mine.txt" in json.loads(refused.stdout)["error"]
    assert (out / "mine.txt").read_text().startswith("now the directory")
