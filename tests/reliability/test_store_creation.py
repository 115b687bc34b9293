"""The workspace's MLflow store: a first command killed while the store is created never bricks
the workspace, a store half-built by MLflow itself is redone, and a corrupt or outdated store is
named for what it is (not "check reachability").

The kills are real SIGKILLs of `unlearnops run` processes on a fresh workspace, at moments read
from the workspace (the partial store `.mlflow.db.<pid>.creating` appearing, then growing past
sizes the migrations reach in order, then `mlflow.db` in place), not from hooks in the product.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import CI_PIPELINE, REQUEST_ID, child_env, kill_when, registered_versions, start, unlearnops_exe, write_request

pytestmark = pytest.mark.slow

KILL_TIMEOUT_S = 600


def head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def store_state(db: Path) -> str:
    """'absent', or 'complete' (head revision, integrity ok), or what is wrong with it."""
    if not db.exists():
        return "absent"
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.Error as err:
        return f"broken: {err}"
    finally:
        connection.close()
    return "complete" if revision == head_revision() and integrity == "ok" else f"revision {revision}, integrity {integrity}"


def partial_stores(workspace: Path) -> list[Path]:
    return sorted(workspace.glob(".mlflow.db.*.creating"))


def partial_at_least(workspace: Path, size: int):
    def ready() -> bool:
        for path in partial_stores(workspace):
            try:
                if path.stat().st_size >= size:
                    return True
            except FileNotFoundError:
                pass
        return False

    return ready


MOMENTS = {  # name -> what must hold when the process is killed
    "partial store appears": lambda workspace: partial_at_least(workspace, 0),
    "tables created (150 KB)": lambda workspace: partial_at_least(workspace, 150_000),
    "mid-migrations (450 KB)": lambda workspace: partial_at_least(workspace, 450_000),
    "last migrations (800 KB)": lambda workspace: partial_at_least(workspace, 800_000),
    "store renamed into place": lambda workspace: lambda: (workspace / "mlflow.db").exists(),
}


def test_a_first_run_killed_while_the_store_is_created_never_bricks_the_workspace(tiny_bench, tmp_path):
    workspace = tmp_path / "workspace"
    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")
    request = write_request(tmp_path / "request.json")
    env = child_env(workspace)
    args = ["run", "--request", str(request), "--pipeline", str(CI_PIPELINE), "--json"]
    states = {}
    for index, (moment, condition) in enumerate(MOMENTS.items()):
        if moment == "store renamed into place":
            assert store_state(workspace / "mlflow.db") == "absent"  # every earlier kill left no store in place
        proc = start(f"store-kill-{index}", args, env=env, logs=tmp_path / "logs")
        kill_when(proc, condition(workspace), moment, poll=0.005)  # the first moments last tens of milliseconds
        assert proc.popen.returncode == -9
        states[moment] = store_state(workspace / "mlflow.db")
    # Killed before the rename: no store (never a half-built one); killed after: a complete one.
    assert states == {moment: ("complete" if moment == "store renamed into place" else "absent") for moment in MOMENTS}, states

    final = start("store-final", args, env=env, logs=tmp_path / "logs")
    assert final.wait() == 0, final.err[-3000:]
    summary = json.loads(final.out)
    assert summary["passed"] and summary["version"]["request_ids"] == [REQUEST_ID]
    assert store_state(workspace / "mlflow.db") == "complete"
    assert partial_stores(workspace) == []  # what the killed creators left was swept
    assert len(registered_versions(workspace)) == 2  # the bench source + this request's version


def test_a_store_mlflow_left_half_migrated_is_redone_and_a_used_one_is_never_touched(tmp_path):
    # MLflow itself, killed mid-migration, leaves the store that bricked workspaces ("table ... already exists").
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    db = workspace / "mlflow.db"
    create = [sys.executable, "-c", f"from mlflow import MlflowClient; MlflowClient('sqlite:///{db}').search_experiments()"]
    proc = subprocess.Popen(create, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not (db.exists() and db.stat().st_size > 300_000):
        assert proc.poll() is None and time.monotonic() < deadline, "MLflow finished before it could be killed mid-migration"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert store_state(db) != "complete"

    env = child_env(workspace)
    models = subprocess.run([unlearnops_exe(), "models", "--json"], env=env, capture_output=True, text=True, timeout=KILL_TIMEOUT_S)
    assert models.returncode == 0, models.stderr
    assert json.loads(models.stdout) == []
    assert store_state(db) == "complete"

    # A store holding data at another revision is not redone: it is refused with the fix.
    connection = sqlite3.connect(db)
    connection.execute("INSERT INTO experiments (name, lifecycle_stage) VALUES ('someone-elses', 'active')")
    connection.execute("UPDATE alembic_version SET version_num = '0a8213491aaa'")
    connection.commit()
    connection.close()
    before = db.read_bytes()
    refused = subprocess.run([unlearnops_exe(), "models", "--json"], env=env, capture_output=True, text=True, timeout=KILL_TIMEOUT_S)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    error = json.loads(refused.stdout)
    assert "mlflow db upgrade" in error["error"] and error["exit_code"] == 1
    assert db.read_bytes() == before


@pytest.mark.parametrize("content", [b"not a database at all, just text\n", b"SQLite format 3\x00" + b"\xff" * 8192])
def test_a_corrupt_store_is_named_corrupt_not_unreachable(cli, tmp_path, monkeypatch, content):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    monkeypatch.setenv("UNLEARNOPS_HOME", str(workspace))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (workspace / "mlflow.db").write_bytes(content)
    result = cli("models", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    error = json.loads(result.stdout)
    assert "corrupt" in error["error"] and "reachab" not in error["error"]
    assert (workspace / "mlflow.db").read_bytes() == content  # the user's file, left for them to restore or move
