"""The team suite: unlearnops against a real MLflow tracking server on PostgreSQL, with
basic-auth, protected @production and the shared PostgreSQL audit log.

It needs a running team setup: `bash deploy/team-up.sh DIR` (what .ci/run does) and
UNLEARNOPS_TEAM_SERVER=DIR. Without it every test here is skipped, saying so.

Accounts (deploy/team-up.sh): `alice` and `bob` are engineers, `rita` is a release manager,
`admin` is MLflow's admin. Each test that writes to the registry uses model names of its own
(the server is shared by the whole session), and each audit log is a fresh `?log=` name in the
one append-only table.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import write_bench_request
from reliability.conftest import Proc, start

TEAM_ENV = "UNLEARNOPS_TEAM_SERVER"
REPO = Path(__file__).resolve().parents[2]
CI_PIPELINE = REPO / "pipelines" / "ci.yaml"
PROCESS_TIMEOUT_S = 1200  # a loaded 2-core machine runs a tiny pipeline in 15 s quiet, minutes busy


def pytest_collection_modifyitems(config, items):
    if os.environ.get(TEAM_ENV):
        return
    skip = pytest.mark.skip(reason=f"no team server: set {TEAM_ENV} to a directory made by `bash deploy/team-up.sh DIR` (.ci/run does)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(skip)


@dataclass(frozen=True)
class Team:
    root: Path
    config: dict

    @property
    def tracking_uri(self) -> str:
        return self.config["tracking_uri"]

    def password(self, user: str) -> str:
        return Path(self.config["users"][user]["password_file"]).read_text().strip()

    def role(self, user: str) -> str:
        return self.config["users"][user]["role"]

    @property
    def postgres(self) -> dict:
        return self.config["postgres"]

    def audit_url(self, log: str) -> str:
        return f"{self.postgres['audit_dsn']}?log={log}"

    def user_env(self, user: str) -> dict[str, str]:
        """What an engineer's shell has: the server, their credentials, the database's pgpass."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": self.password(user),
            "PGPASSFILE": self.postgres["audit_pgpass"],
        }

    def connect(self, *, as_role: str = "unlearnops"):
        """A psycopg connection: the application role (pgpass), or the cluster's superuser (socket)."""
        import psycopg

        if as_role == "unlearnops":
            return psycopg.connect(self.postgres["audit_dsn"], autocommit=True, passfile=self.postgres["audit_pgpass"])
        socket_dir = self.root / "pg" / "run"
        return psycopg.connect(host=str(socket_dir), port=self.postgres["port"], user="postgres", dbname="unlearnops", autocommit=True)


@pytest.fixture(scope="session")
def team() -> Team:
    """The running team setup; this test process reads the audit database as the application role
    (libpq finds the role's password through PGPASSFILE, as on an engineer's machine)."""
    root = Path(os.environ[TEAM_ENV])
    config_file = root / "team.json"
    if not config_file.is_file():
        pytest.fail(f"{TEAM_ENV}={root}: no team.json; start the setup with `bash deploy/team-up.sh {root}`")
    setup = Team(root, json.loads(config_file.read_text()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PGPASSFILE", setup.postgres["audit_pgpass"])
        yield setup


@pytest.fixture
def as_user(monkeypatch, team):
    """Switch this process's MLflow credentials (the client reads them per request)."""

    def switch(user: str | None) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", team.tracking_uri)
        if user is None:
            monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
            monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team.password(user))

    return switch


@pytest.fixture(scope="session")
def team_log(team) -> str:
    """The audit log of the team server's registry: a registry has one log (verify cross-checks
    every registered version against it), so every registry-writing test of every session on
    this server appends to it, as every engineer's machine would."""
    return team.config["audit_log"]


@pytest.fixture
def unique() -> str:
    """A short name no other test (or earlier session on the same server) uses."""
    return uuid.uuid4().hex[:10]


# ---- engineers as processes ----------------------------------------------------------------------
@dataclass
class Engineer:
    """One person's machine: a workspace and HOME of their own, their credentials, the team's shared stores."""

    name: str
    workspace: Path
    env: dict[str, str]
    home: Path

    def start(self, *args, label: str = "cmd") -> Proc:
        return start(f"{self.name}-{label}", [str(arg) for arg in args], env=self.env, logs=self.home / "logs")

    def run(self, *args, label: str = "cmd") -> Proc:
        proc = self.start(*args, label=label)
        proc.wait(PROCESS_TIMEOUT_S)
        return proc


def exit_code(proc: Proc) -> int | None:
    return proc.popen.returncode


def output_json(proc: Proc):
    return json.loads(proc.out)


def shown(proc: Proc) -> str:
    """What an assertion message should carry: how the process ended and the tails of its output."""
    return f"{proc.name}: exit {exit_code(proc)}\n--- stdout\n{proc.out[-3000:]}\n--- stderr\n{proc.err[-3000:]}"


def engineer(team: Team, user: str, log: str, home: Path, tiny_bench: Path) -> Engineer:
    """`user` on a machine of their own: an empty workspace (the tiny bench copied in, so no run
    builds one), their MLflow credentials, and the team's shared audit log `log`."""
    workspace = home / "workspace"
    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")
    # Not this process's MLflow or libpq settings; the audit key and witness (when the log is
    # signed) stay: a team's writers share one signing key.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PG")) and key != "UNLEARNOPS_AUDIT_URL"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", MLFLOW_ENABLE_TELEMETRY="false", DO_NOT_TRACK="1")
    env.update(team.user_env(user), UNLEARNOPS_HOME=str(workspace), HOME=str(home), UNLEARNOPS_AUDIT_URL=team.audit_url(log))
    if log == team.config.get("audit_log"):  # the server's log is signed with the team's one key, in every session
        env.update(UNLEARNOPS_AUDIT_KEY=team.config["audit_key"], UNLEARNOPS_AUDIT_WITNESS=team.config["audit_witness"])
    return Engineer(user, workspace, env, home)


def bench_request(path: Path, request_id: str, registered_name: str, *, source: str) -> Path:
    """A tiny-bench forget request against `source`, registering into `registered_name`."""
    write_bench_request(path, request_id, model=source)
    document = json.loads(path.read_text())
    document["registered_model_name"] = registered_name
    path.write_text(json.dumps(document))
    return path
