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

from dataclasses import dataclass
from pathlib import Path

import pytest

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
    prebuilt = os.environ.get("UNLEARNOPS_TEST_BENCH")
    if prebuilt:
        return Path(prebuilt)
    from unlearnops.bench import build_bench

    out = tmp_path_factory.mktemp("bench") / "tiny"
    build_bench(out, seed=0, size="tiny", show_progress=False)
    return out
