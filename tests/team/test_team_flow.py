"""A team on one registry and one audit trail: a release manager registers the baseline, two
engineers run forget requests at the same moment from their own machines (workspaces), a
release manager promotes, anyone can plan serving it, and every workspace verifies the one
shared log against the one registry.

Each person is a real `unlearnops` process with a workspace, credentials and HOME of its own;
what they share is only what a team shares: the MLflow server and the PostgreSQL audit log.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest

from unlearnops.audit import ALIAS_MOVED, VERSION_REGISTERED, AuditLog
from unlearnops.audit.postgres import PostgresStorage

from .conftest import CI_PIPELINE, PROCESS_TIMEOUT_S, Engineer, Proc, bench_request, engineer, exit_code, output_json, shown

pytestmark = pytest.mark.slow


@dataclass
class Flow:
    source: str  # the baseline's registered name
    unlearned: str  # where both engineers' versions go
    requests: dict[str, str]  # engineer -> request id
    people: dict[str, Engineer]
    runs: dict[str, Proc]
    log_url: str


@pytest.fixture(scope="module")
def flow(team, team_log, tiny_bench, tmp_path_factory) -> Flow:
    suffix = uuid.uuid4().hex[:8]
    source, unlearned = f"bench-{suffix}", f"unlearned-{suffix}"
    base = tmp_path_factory.mktemp("team-flow")
    people = {user: engineer(team, user, team_log, base / user, tiny_bench) for user in ("rita", "alice", "bob")}

    baseline = people["rita"].run("register", "--baseline", "--model", tiny_bench / "target", "--name", source, "--json", label="baseline")
    assert exit_code(baseline) == 0, shown(baseline)

    requests = {user: f"team-{user}-{suffix}" for user in ("alice", "bob")}
    request_files = {user: bench_request(people[user].home / "request.json", request_id, unlearned, source=f"models:/{source}@production")
                     for user, request_id in requests.items()}
    # Both at once: their registrations race for the same registered model.
    started = {user: people[user].start("run", "--request", request_files[user], "--pipeline", CI_PIPELINE, "--json", label="run")
               for user in requests}
    for proc in started.values():
        proc.wait(PROCESS_TIMEOUT_S)
    return Flow(source, unlearned, requests, people, started, team.audit_url(team_log))


def _versions(person: Engineer, name: str) -> list[dict]:
    listed = person.run("models", name, "--json", label=f"models-{name}")
    assert exit_code(listed) == 0, shown(listed)
    return output_json(listed)


def test_two_engineers_run_at_once_and_each_request_is_registered_exactly_once(flow):
    for user, proc in flow.runs.items():
        assert exit_code(proc) == 0, shown(proc)
        assert output_json(proc)["passed"] is True
    versions = _versions(flow.people["alice"], flow.unlearned)
    assert sorted(int(v["version"]) for v in versions) == [1, 2]  # numbered once each, no gap
    assert sorted(rid for v in versions for rid in v["request_ids"]) == sorted(flow.requests.values())
    run_keys = [v["tags"]["unlearnops.run_key"] for v in versions]
    assert len(set(run_keys)) == 2
    assert {output_json(proc)["version"]["version"] for proc in flow.runs.values()} == {"1", "2"}

    records = AuditLog(PostgresStorage(flow.log_url)).records()
    # The team log is shared with the other team tests (their own model names): count this flow's.
    registered = Counter((r["fields"]["name"], str(r["fields"]["version"])) for r in records
                         if r["event"] == VERSION_REGISTERED and r["fields"]["name"] in (flow.source, flow.unlearned))
    assert registered == {(flow.source, "1"): 1, (flow.unlearned, "1"): 1, (flow.unlearned, "2"): 1}
    # The other engineer's view of the registry is the same.
    assert _versions(flow.people["bob"], flow.unlearned) == versions


def test_an_engineer_cannot_promote_and_nothing_is_recorded_when_the_server_refuses(flow):
    records_before = AuditLog(PostgresStorage(flow.log_url)).records()
    refused = flow.people["alice"].run("promote", flow.unlearned, "1", "--json", label="promote-alice")
    assert exit_code(refused) == 1, shown(refused)
    assert "Traceback" not in refused.err and "PERMISSION_DENIED" in refused.err + refused.out
    assert AuditLog(PostgresStorage(flow.log_url)).records() == records_before
    assert all("production" not in v["aliases"] for v in _versions(flow.people["bob"], flow.unlearned))


def test_a_release_manager_promotes_and_every_workspace_sees_and_verifies_the_same_state(flow, team):
    promoted = flow.people["rita"].run("promote", flow.unlearned, "2", "--json", label="promote-rita")
    assert exit_code(promoted) == 0, shown(promoted)
    assert "production" in output_json(promoted)["aliases"]

    log = AuditLog(PostgresStorage(flow.log_url))
    records = log.records()
    for person in flow.people.values():
        verified = person.run("audit", "verify", "--json", label=f"verify-{person.name}")
        assert exit_code(verified) == 0, shown(verified)
        document = output_json(verified)
        assert document["ok"] and document["checked"] == len(records)
        assert document["versions_checked"] >= 3  # the baseline and both unlearned versions, cross-checked

    # Aliases agree with the last alias record for each (model, alias).
    last_alias = {}
    for record in records:
        if record["event"] == ALIAS_MOVED:
            last_alias[(record["fields"]["name"], record["fields"]["alias"])] = str(record["fields"]["version"])
    for name in (flow.source, flow.unlearned):
        for version in _versions(flow.people["bob"], name):
            for alias in version["aliases"]:
                assert last_alias[(name, alias)] == version["version"], (name, alias)
    assert last_alias[(flow.unlearned, "production")] == "2"
    assert last_alias[(flow.source, "production")] == "1"

    status = flow.people["alice"].run("audit", "status", "--json", label="status")
    assert exit_code(status) == 0, shown(status)
    pending = {entry["request_id"] for entry in output_json(status)["pending"]}
    assert set(flow.requests.values()) <= pending  # planned, not deployed: both still pending
    lineage = flow.people["alice"].run("audit", "show", "--request", flow.requests["bob"], "--json", label="show")
    assert exit_code(lineage) == 0, shown(lineage)
    events = [record["event"] for record in output_json(lineage)["records"]]
    assert VERSION_REGISTERED in events and ALIAS_MOVED in events


@pytest.mark.skipif(not os.environ.get("UNLEARNOPS_VLLM_PYTHON"), reason="needs the vLLM serving venv (UNLEARNOPS_VLLM_PYTHON; .ci/run sets it)")
def test_anyone_can_plan_serving_what_a_release_manager_promoted(flow):
    """Resolved through the server, checked against the shared log's signed record, files via its proxy."""
    plan = flow.people["bob"].run("serve", "--model", f"{flow.unlearned}@production", "--dry-run", "--json", label="serve-plan")
    assert exit_code(plan) == 0, shown(plan)
    assert json.dumps(output_json(plan)).count(f"{flow.unlearned}/2") >= 1


def test_no_password_reaches_output_files_runs_or_the_audit_log(flow, team, as_user):
    """The engineers' MLflow passwords and the database password, everywhere a run leaves a trace."""
    secrets = [team.password(user) for user in ("rita", "alice", "bob", "admin")]
    secrets.append(open(team.postgres["audit_pgpass"]).read().strip().rsplit(":", 1)[1])
    for person in flow.people.values():
        for path in person.home.rglob("*"):
            if path.is_file() and path.stat().st_size < 2**26:
                data = path.read_bytes()
                assert not [s for s in secrets if s.encode() in data], path

    from mlflow import MlflowClient

    as_user("admin")
    admin = MlflowClient(team.tracking_uri, team.tracking_uri)
    experiments = [e.experiment_id for e in admin.search_experiments()]
    runs = admin.search_runs(experiments, max_results=1000)
    assert runs
    for run in runs:
        text = json.dumps({"params": run.data.params, "tags": run.data.tags})
        assert not [s for s in secrets if s in text], run.info.run_id
    for name in (flow.source, flow.unlearned):
        for version in admin.search_model_versions(f"name = '{name}'"):
            assert not [s for s in secrets if s in json.dumps(version.tags)]
    with team.connect() as connection:
        lines = [row[0] for row in connection.execute("SELECT line FROM audit.records")]
    assert lines and not [s for s in secrets for line in lines if s in line]
