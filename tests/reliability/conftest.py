"""Real `unlearnops run` processes on the tiny bench, killed and rerun: the fixtures the
reliability tests share.

`killed_chain` is ONE workspace taken through the whole fault chain (the pipeline is the
expensive part, so the fault, concurrency and leak tests all read this one run):

    run -> SIGKILL in unlearn -> rerun -> SIGKILL in quantize -> rerun -> SIGKILL in evaluate
        -> rerun -> SIGKILL in register -> two reruns started at once (the lock lets one in)

"In stage X" is read from the workspace, not from test hooks in the product: a stage is
running when its temporary sibling `stages/<X>/.<key>.*.partial` exists (fileio.atomic_dir),
and registration is running when a new `mlartifacts/<run>/artifacts/model` directory appears
(the first thing `_register` writes).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import session_bench, write_bench_request
from unlearnops.audit import AuditLog

REPO = Path(__file__).resolve().parents[2]
CI_PIPELINE = REPO / "pipelines" / "ci.yaml"
REQUEST_ID = "reliability-0001"
SOURCE_NAME = "unlearnops-bench"
STAGE_TIMEOUT_S = 900  # a shared 2-core machine can be several times slower than CI
POLL_S = 0.02


@pytest.fixture(scope="session")
def default_bench(tmp_path_factory) -> Path:
    """The `--size default` bench, built once per session (3-6 minutes on 2 cores); the examples name it.

    Set UNLEARNOPS_TEST_DEFAULT_BENCH to a prebuilt default bench to skip the build while iterating.
    """
    return session_bench(tmp_path_factory, "default", "UNLEARNOPS_TEST_DEFAULT_BENCH")


def unlearnops_exe() -> str:
    """The console script of the venv running the tests (.venv/bin/unlearnops)."""
    return str(Path(sys.executable).with_name("unlearnops"))


def write_request(path: Path, request_id: str = REQUEST_ID) -> Path:
    return write_bench_request(path, request_id, model=f"models:/{SOURCE_NAME}@production")


def child_env(workspace: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update(
        UNLEARNOPS_HOME=str(workspace), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MLFLOW_ENABLE_TELEMETRY="false", DO_NOT_TRACK="1",
    )
    env.update(extra)
    return env


@dataclass
class Proc:
    """One `unlearnops` subprocess; stdout and stderr go to files (read for leaks afterwards)."""

    name: str
    popen: subprocess.Popen
    stdout: Path
    stderr: Path

    @property
    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait(self, timeout: float = STAGE_TIMEOUT_S) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name}: still running after {timeout} s\n{self.err[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL the process group: nothing runs a cleanup handler."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(60)


def start(name: str, args: list[str], *, env: dict[str, str], logs: Path) -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        popen = subprocess.Popen([unlearnops_exe(), *args], stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True)
    return Proc(name, popen, stdout, stderr)


def kill_when(proc: Proc, ready: Callable[[], bool], what: str, *, poll: float = POLL_S) -> None:
    """SIGKILL `proc` as soon as `ready()` holds; fail if it exits first."""
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while not ready():
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name}: exited {proc.popen.returncode} before {what}\n{proc.err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{proc.name}: no sign of {what} after {STAGE_TIMEOUT_S} s")
        time.sleep(poll)
    proc.kill()


def stage_running(workspace: Path, stage: str) -> Callable[[], bool]:
    return lambda: any((workspace / "stages" / stage).glob(".*.partial"))


def model_artifacts(workspace: Path) -> set[Path]:
    return set((workspace / "mlartifacts").glob("*/artifacts/model"))


def complete_outputs(workspace: Path, stage: str) -> list[Path]:
    return sorted(path for path in (workspace / "stages" / stage).glob("*") if (path / ".complete").is_file())


def partial_outputs(workspace: Path) -> list[Path]:
    return sorted((workspace / "stages").glob("*/.*.partial"))


def registered_versions(workspace: Path) -> list:
    from unlearnops import registry

    return registry.list_versions(SOURCE_NAME, tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")


@dataclass
class Kill:
    stage: str
    proc: Proc
    partials: list[Path]  # temporary stage outputs left by the kill
    completed: dict[str, list[str]]  # keys of the complete outputs per stage right after the kill
    versions: int  # registered versions of the bench model right after the kill


@dataclass
class Chain:
    workspace: Path
    request: Path
    logs: Path
    kills: list[Kill] = field(default_factory=list)
    finals: list[Proc] = field(default_factory=list)  # the two reruns started together
    records: list[dict] = field(default_factory=list)  # the audit log when the chain ended (later tests add to it)

    def printed(self) -> str:
        """Everything every process of the chain printed (stdout and stderr)."""
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.iterdir()))


STAGES = ("source", "unlearn", "quantize", "evaluate", "gate")


def _observe(stage: str, proc: Proc, workspace: Path) -> Kill:
    completed = {name: [path.name for path in complete_outputs(workspace, name)] for name in STAGES}
    return Kill(stage, proc, partial_outputs(workspace), completed, len(registered_versions(workspace)))


@pytest.fixture(scope="session")
def killed_chain(tiny_bench, tmp_path_factory) -> Chain:
    root = tmp_path_factory.mktemp("killed-chain")
    workspace = root / "workspace"
    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")
    chain = Chain(workspace, write_request(root / "request.json"), root / "logs")
    env = child_env(workspace)
    run_args = ["run", "--request", str(chain.request), "--pipeline", str(CI_PIPELINE)]

    for attempt, stage in enumerate(("unlearn", "quantize", "evaluate")):
        proc = start(f"{attempt}-killed-in-{stage}", run_args, env=env, logs=chain.logs)
        kill_when(proc, stage_running(workspace, stage), f"stage {stage}")
        chain.kills.append(_observe(stage, proc, workspace))

    before = model_artifacts(workspace)
    proc = start("3-killed-in-register", run_args, env=env, logs=chain.logs)
    kill_when(proc, lambda: bool(model_artifacts(workspace) - before), "registration (a new model/ artifact)")
    chain.kills.append(_observe("register", proc, workspace))

    # Two reruns at once on the same workspace: the run lock lets exactly one of them in.
    chain.finals = [start(f"4-final-{n}", [*run_args, "--json"], env=env, logs=chain.logs) for n in "ab"]
    for proc in chain.finals:
        proc.wait()
    chain.records = AuditLog(workspace / "audit.jsonl").records()
    return chain
