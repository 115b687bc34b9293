"""Two `unlearnops run` processes on one workspace at once: the workspace lock lets one in and
turns the other away with a clear message (or, with --wait, makes it queue); the MLflow sqlite
store and the audit chain stay consistent either way.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from unlearnops.audit import AuditLog

from .conftest import CI_PIPELINE, REQUEST_ID, child_env, registered_versions, start

pytestmark = pytest.mark.slow


def test_of_two_runs_started_together_one_runs_and_the_other_is_refused_clearly(killed_chain):
    by_code = {proc.popen.returncode: proc for proc in killed_chain.finals}
    assert sorted(by_code) == [0, 1], {code: proc.err[-2000:] for code, proc in by_code.items()}
    refused = by_code[1]
    assert "another `unlearnops run` is using this workspace" in refused.err and "--wait" in refused.err
    assert "Traceback" not in refused.err
    error = json.loads(refused.out)  # --json: the error object on stdout, for a CI job parsing it
    assert "another `unlearnops run`" in error["error"] and error["exit_code"] == 1
    assert json.loads(by_code[0].out)["version"]["request_ids"] == [REQUEST_ID]


def test_two_waiting_runs_are_serialised_and_the_stores_stay_consistent(killed_chain, cli):
    workspace = killed_chain.workspace
    audit = AuditLog(workspace / "audit.jsonl")
    seen = len(audit.records())
    args = ["run", "--request", str(killed_chain.request), "--pipeline", str(CI_PIPELINE), "--wait", "--json"]
    procs = [start(f"6-waiting-{n}", args, env=child_env(workspace), logs=killed_chain.logs) for n in "ab"]
    for proc in procs:
        assert proc.wait() == 0, proc.err[-3000:]
    summaries = [json.loads(proc.out) for proc in procs]
    assert {summary["version"]["version"] for summary in summaries} == {"2"}  # the same version, registered once
    assert all(stage["cached"] for summary in summaries for stage in summary["stages"] if stage["stage"] != "validate")

    # Serialised: each run's records are contiguous, never interleaved with the other's.
    new = audit.records()[seen:]
    run_of = [r["fields"]["run_id"] for r in new if "run_id" in r["fields"]]
    assert len(set(run_of)) == 2
    first = run_of[0]
    assert run_of == [first] * run_of.count(first) + [run_of[-1]] * (len(run_of) - run_of.count(first))
    assert [r["fields"]["status"] for r in new if r["event"] == "run.finished"] == ["registered", "registered"]
    assert not [r for r in new if r["event"] == "version.registered"]

    assert len(registered_versions(workspace)) == 2
    with sqlite3.connect(workspace / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    verify = cli("audit", "verify", "--workspace", workspace)
    assert verify.exit_code == 0, verify.stdout + verify.stderr
