"""Faults: SIGKILL in every stage, half-written stage outputs, a full or read-only disk, and an
MLflow store that is locked or unreachable. Each must end in a clear one-line error (exit 1, no
traceback), leave nothing half-registered, and let the same request be rerun to completion.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from unlearnops.registry import TAG_ROLE

from .conftest import CI_PIPELINE, REQUEST_ID, child_env, partial_outputs, registered_versions, start

pytestmark = pytest.mark.slow


def unlearned_versions(workspace: Path) -> list:
    return [v for v in registered_versions(workspace) if v.tags.get(TAG_ROLE) == "unlearned"]


def winner(chain):
    (proc,) = [proc for proc in chain.finals if proc.popen.returncode == 0]
    return json.loads(proc.out)


def assert_clean_failure(result, *words: str) -> None:
    """Exit 1 with one `error:` line that says what happened, and no traceback."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert "error:" in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# ---- SIGKILL in each stage ---------------------------------------------------------------------


def test_each_kill_landed_inside_its_stage(killed_chain):
    kills = {kill.stage: kill for kill in killed_chain.kills}
    assert list(kills) == ["unlearn", "quantize", "evaluate", "register"]
    for kill in kills.values():
        assert kill.proc.popen.returncode == -9, f"{kill.stage}: not killed by SIGKILL"
    # A killed stage left only a temporary sibling, never an output a rerun could mistake for complete.
    for stage in ("unlearn", "quantize", "evaluate"):
        assert kills[stage].completed[stage] == []
        assert any(p.parent.name == stage for p in kills[stage].partials), kills[stage].partials
    assert len(kills["quantize"].completed["unlearn"]) == 1
    assert len(kills["evaluate"].completed["quantize"]) == 1
    assert len(kills["register"].completed["gate"]) == 1
    # What a kill left complete stays complete: every later run reuses it (none is rebuilt under a new key).
    assert kills["register"].completed["unlearn"] == kills["quantize"].completed["unlearn"]
    assert kills["register"].versions <= 2  # source + at most the half-registered version


def test_rerun_after_the_kills_resumes_finishes_once_and_registers_one_version(killed_chain, cli):
    summary = winner(killed_chain)
    assert summary["passed"] and summary["version"]["version"] == "2"
    cached = {stage["stage"]: stage["cached"] for stage in summary["stages"]}
    assert all(cached[name] for name in ("source", "unlearn", "quantize", "evaluate:quantized", "gate")), cached
    (version,) = unlearned_versions(killed_chain.workspace)
    assert version.request_ids == [REQUEST_ID] and version.aliases == ["candidate"]
    assert len(registered_versions(killed_chain.workspace)) == 2
    assert partial_outputs(killed_chain.workspace) == []  # every temporary output of a killed stage was swept
    records = killed_chain.records
    registered = [r for r in records if r["event"] == "version.registered" and str(r["fields"]["version"]) == "2"]
    assert len(registered) == 1
    assert version.tags["unlearnops.audit_head"] == registered[0]["hash"]
    finished = [r["fields"]["status"] for r in records if r["event"] == "run.finished"]
    assert finished == ["registered"]  # four killed runs never claimed to finish; one run did
    verify = cli("audit", "verify", "--workspace", killed_chain.workspace, "--json")
    assert verify.exit_code == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"]


def test_a_half_written_stage_output_is_redone_never_used(killed_chain):
    workspace = killed_chain.workspace
    key = {stage["stage"]: stage["key"] for stage in winner(killed_chain)["stages"]}["evaluate:quantized"]
    output = workspace / "stages" / "evaluate" / key
    # As if a copy was interrupted: the completion marker is missing and a file is truncated, and
    # a temporary sibling of a killed build lies beside it.
    (output / ".complete").unlink()
    metrics = output / "metrics.json"
    metrics.write_bytes(metrics.read_bytes()[:20])
    leftover = output.parent / f".{key}.killed.partial"
    leftover.mkdir()
    (leftover / "metrics.json").write_text("{")

    proc = start("5-after-corruption", ["run", "--request", str(killed_chain.request), "--pipeline", str(CI_PIPELINE), "--json"],
                 env=child_env(workspace), logs=killed_chain.logs)
    assert proc.wait() == 0, proc.err[-3000:]
    stages = {stage["stage"]: stage["cached"] for stage in json.loads(proc.out)["stages"]}
    assert stages["evaluate:quantized"] is False  # redone
    assert stages["evaluate:source"] and stages["gate"]  # the same metrics: nothing downstream changed
    assert json.loads(metrics.read_text())["verbmem_f"] is not None and (output / ".complete").is_file()
    assert not leftover.exists()
    assert len(unlearned_versions(workspace)) == 1


# ---- a full or read-only disk ------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}): needs root/CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def kib_used(path: Path) -> int:
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize // 1024


def test_full_or_read_only_disk_fails_cleanly_then_the_rerun_completes(killed_chain, cli, tmp_path, monkeypatch):
    # The workspace is a tmpfs holding the bench and the chain's stage outputs (but a fresh MLflow
    # store): the run reuses every stage, so the disk fills while MLflow and registration write.
    with tmpfs(tmp_path / "disk", "64m") as workspace:
        shutil.copytree(killed_chain.workspace / "bench", workspace / "bench")
        shutil.copytree(killed_chain.workspace / "stages", workspace / "stages")
        monkeypatch.setenv("UNLEARNOPS_HOME", str(workspace))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        args = ("run", "--request", killed_chain.request, "--pipeline", CI_PIPELINE)

        remount(workspace, "ro")
        assert_clean_failure(cli(*args), str(workspace), "writable")

        remount(workspace, f"rw,size={kib_used(workspace) + 4096}k")  # less than the MLflow store + registered artifacts
        full = cli(*args)
        assert_clean_failure(full)
        assert "No space left on device" in full.stderr or "disk is full" in full.stderr, full.stderr
        assert not any(REQUEST_ID in v.request_ids for v in registered_versions(workspace)), "a partial registration"
        assert partial_outputs(workspace) == []

        remount(workspace, "size=256m")
        rerun = cli(*args, "--json")
        assert rerun.exit_code == 0, rerun.stderr[-3000:]
        assert json.loads(rerun.stdout)["version"]["request_ids"] == [REQUEST_ID]
        assert len(unlearned_versions(workspace)) == 1
        assert cli("audit", "verify").exit_code == 0


# ---- MLflow locked or unreachable --------------------------------------------------------------


def test_mlflow_locked_or_unreachable_fails_cleanly_then_the_rerun_completes(killed_chain, cli, monkeypatch):
    workspace = killed_chain.workspace
    monkeypatch.setenv("UNLEARNOPS_HOME", str(workspace))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    args = ("run", "--request", killed_chain.request, "--pipeline", CI_PIPELINE)
    audit_before = (workspace / "audit.jsonl").read_bytes()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert_clean_failure(cli(*args), "MLflow", "127.0.0.1:9")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    holder = sqlite3.connect(workspace / "mlflow.db", isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process writing the store, never letting go
        assert_clean_failure(cli(*args), "MLflow", "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert len(unlearned_versions(workspace)) == 1  # nothing registered by the failed runs
    rerun = cli(*args, "--json")
    assert rerun.exit_code == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout)["version"]["version"] == "2"
    assert len(unlearned_versions(workspace)) == 1
    assert (workspace / "audit.jsonl").read_bytes().startswith(audit_before)
    assert cli("audit", "verify").exit_code == 0


# ---- SIGTERM (a scheduler's stop, `kill`, a container shutdown) ---------------------------------


def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_staging_directory(tiny_bench, tmp_path):
    """A terminated command removes what it was writing (fileio.atomic_dir's staging sibling), exits 143
    with one line, and leaves --out as it was: absent here, so a rerun starts clean."""
    out = tmp_path / "quantized"
    command = ["quantize", "--model", str(tiny_bench / "target"), "--corpus", str(tiny_bench / "corpus"), "--out", str(out),
               "--scheme", "gptq-w4a16", "--json"]
    proc = start("quantize", command, env=child_env(tmp_path / "workspace"), logs=tmp_path / "logs")
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".quantized.*.partial")):
        assert proc.popen.poll() is None, f"quantize ended before it staged its output: {proc.err[-2000:]}"
        assert time.monotonic() < deadline, "quantize did not start writing in time"
        time.sleep(0.02)
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(timeout=120) == 143, proc.err[-2000:]
    assert "Traceback" not in proc.err and "terminated (SIGTERM)" in proc.err
    assert json.loads(proc.out)["exit_code"] == 143
    assert not out.exists() and list(tmp_path.glob(".quantized.*")) == []
