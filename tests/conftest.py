"""Shared fixtures: a tiny bench built once per session, an isolated workspace, a CLI runner."""

from __future__ import annotations

import os

# 2-core machines: torch's default thread pool oversubscribes and runs many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# The audit log's signing key and witness live outside every workspace (docs/audit.md): each test
# session gets a throwaway pair, never the user's own (~/.config, ~/.local/state).
import atexit
import shutil
import tempfile

_AUDIT_SECRETS = tempfile.mkdtemp(prefix="unlearnops-test-audit-")
atexit.register(shutil.rmtree, _AUDIT_SECRETS, True)
os.environ["UNLEARNOPS_AUDIT_KEY"] = os.path.join(_AUDIT_SECRETS, "key", "audit-signing-key.pem")
os.environ["UNLEARNOPS_AUDIT_WITNESS"] = os.path.join(_AUDIT_SECRETS, "witness")
os.environ.pop("UNLEARNOPS_AUDIT_PUBLIC_KEY", None)

from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import session_bench

# tests/data holds inputs, among them the worked example of a metric and its test (run by test_metrics.py
# in a copy of the package that has the metric): not part of this suite.
collect_ignore = ["data"]

SHARED_MUSE_NEWS = Path(__file__).resolve().parents[1].parent / "shared" / "muse-news"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """Run `unlearnops ARGS...` in-process; returns exit code and captured output."""
    from unlearnops.cli import main

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty workspace for one test (UNLEARNOPS_HOME points at it)."""
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("UNLEARNOPS_HOME", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory) -> Path:
    """The `--size tiny` bench (corpus/, target/, retrain/, bench.json), built once per session.

    Set UNLEARNOPS_TEST_BENCH to a prebuilt tiny bench to skip the build while iterating.
    """
    return session_bench(tmp_path_factory, "tiny", "UNLEARNOPS_TEST_BENCH")



@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory):
    """An empty MLflow sqlite database, created once: the schema migration takes ~9 s per database."""
    from unlearnops import registry

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    registry.client(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(workspace, tmp_path, monkeypatch, migrated_db):
    """(Workspace, its tracking URI, its Evidence, a two-file model directory) on a migrated sqlite store."""
    from unlearnops import registry
    from unlearnops.evidence import Evidence
    from unlearnops.workspace import Workspace

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = Workspace.resolve(workspace)
    shutil.copy(migrated_db, workspace / "mlflow.db")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"weights")
    return ws, registry.tracking_uri_for(ws), Evidence(ws), model
