"""The MLflow registry on a real sqlite store, through the evidence layer: versions, signed records,
aliases, idempotence, decisions from records, registry identity, and `register`'s checks before writes."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from unlearnops import audit, registry
from unlearnops.errors import UnlearnopsError
from unlearnops.evidence import Evidence
from unlearnops.fileio import sha256_file, sha256_tree


def validated(evidence: Evidence, *request_ids: str) -> None:
    for request_id in request_ids:
        evidence.log.append(audit.REQUEST_RECEIVED, request_id=request_id)
        evidence.log.append(audit.REQUEST_VALIDATED, request_id=request_id, data_sha256="d" * 64)


def register(ws, uri, evidence, model, *, gate_passed=True, run_key="key-1", request_ids=("req-1",), name="m"):
    validated(evidence, *[rid for rid in request_ids if rid not in _validated(evidence)])
    run_id = registry.log_model_run(model, tracking_uri=uri, artifact_root=ws.artifact_root, run_name="t", params={})
    return evidence.register(
        name=name, run_id=run_id, run_key=run_key, model_sha256=sha256_tree(model), gate_passed=gate_passed,
        gate_report_sha256="e" * 64, request_ids=list(request_ids), request_data={rid: "d" * 64 for rid in request_ids},
    )


def _validated(evidence: Evidence) -> set[str]:
    return {r["fields"]["request_id"] for r in evidence.log.records() if r["event"] == audit.REQUEST_VALIDATED} if evidence.log.path.exists() else set()


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://bob:s3cret@mlflow.example.com/", "https://***@mlflow.example.com/"),
        ("postgresql://user:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        ("http://host:5000/?token=abc&x=1", "http://host:5000/?token=***&x=1"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_redact_masks_credentials(uri, shown):
    assert registry.redact(uri) == shown


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("models:/m@production", ("m", None, "production")),
        ("m@candidate", ("m", None, "candidate")),
        ("models:/m/3", ("m", "3", None)),
        ("m/12", ("m", "12", None)),
    ],
)
def test_parse_ref_accepts_the_four_forms(ref, parsed):
    assert registry.parse_ref(ref) == parsed


def test_parse_ref_rejects_garbage():
    with pytest.raises(UnlearnopsError, match="models:/NAME@alias"):
        registry.parse_ref("models:/m")


def test_register_writes_version_signed_record_anchor_alias_and_identity(store):
    ws, uri, evidence, model = store
    version = register(ws, uri, evidence, model)
    assert (version.name, version.version, version.aliases) == ("m", "1", ["candidate"])
    assert version.request_ids == ["req-1"]
    assert version.request_records() == {"req-1": {"corpus_sha256": "d" * 64, "location": "data/" + "d" * 64}}
    records = evidence.log.records()
    registered = [r for r in records if r["event"] == audit.VERSION_REGISTERED]
    assert version.tags[registry.TAG_AUDIT_HEAD] == registered[-1]["hash"]
    fields = registered[-1]["fields"]
    assert (fields["name"], fields["version"], fields["model_sha256"], fields["gate_report_sha256"]) == ("m", 1, sha256_tree(model), "e" * 64)
    assert fields["request_ids"] == ["req-1"] and fields["request_data"] == ["req-1=" + "d" * 64]
    assert [r["event"] for r in records][-3:] == [audit.REGISTRY_BOUND, audit.VERSION_REGISTERED, audit.ALIAS_MOVED]
    identity = registry.read_identity(uri)
    key = evidence.log.signing_key().public
    assert identity["unlearnops.audit.public_key"] == key.vkey and identity["unlearnops.audit.key_fingerprint"] == key.fingerprint
    assert identity["unlearnops.audit.log_id"] == records[0]["fields"]["log_id"]
    result = evidence.verify()
    assert result.ok, result.problems
    assert result.versions_checked == 1


def test_register_is_idempotent_on_the_run_key(store):
    ws, uri, evidence, model = store
    first = register(ws, uri, evidence, model)
    newer = register(ws, uri, evidence, model, run_key="key-2")
    again = register(ws, uri, evidence, model)
    assert again.version == first.version
    assert len(registry.list_versions("m", tracking_uri=uri)) == 2
    assert len([r for r in evidence.log.records() if r["event"] == audit.VERSION_REGISTERED]) == 2
    # Re-registering the first run must not pull @candidate back from the newer version.
    assert registry.resolve("m@candidate", tracking_uri=uri).version == newer.version == "2"
    assert evidence.verify().ok


REGISTER_AT_ONCE = """
import sys, time
from pathlib import Path
from unlearnops.evidence import Evidence
from unlearnops.workspace import Workspace

root, run_id, model_sha, go = sys.argv[1:5]
evidence = Evidence(Workspace.resolve(root))
evidence.verified_records()  # imported and connected before the start signal
while not Path(go).exists():
    time.sleep(0.002)
version = evidence.register(name="m", run_id=run_id, run_key="same-request", model_sha256=model_sha, gate_report_sha256="e" * 64,
                            request_ids=["req-1"], request_data={"req-1": "d" * 64})
print(version.version)
"""


def test_the_same_registration_started_at_once_registers_one_version(store, tmp_path):
    """Registrations of one run key (the same request) started at the same moment, outside any run lock
    (`unlearnops register` twice, or two machines on one shared log): the idempotence check, the
    version's creation and its record are one step under the log's append lock, so exactly one
    version and one registration record result, and every caller gets that version."""
    import os
    import subprocess
    import time

    ws, uri, evidence, model = store
    register(ws, uri, evidence, model, run_key="an-earlier-request")  # the registry bound, the model created
    run_id = registry.log_model_run(model, tracking_uri=uri, artifact_root=ws.artifact_root, run_name="t", params={})
    go = tmp_path / "go"
    processes = [
        subprocess.Popen([sys.executable, "-c", REGISTER_AT_ONCE, str(ws.root), run_id, sha256_tree(model), str(go)],
                         env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)  # 4 at once registered versions 2 and 3 for one run key without the lock (3 not always)
    ]
    time.sleep(12.0)  # imports and the first verify, on a loaded machine
    go.touch()
    outputs = [process.communicate(timeout=600) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err[-2000:] for _, err in outputs]
    assert {out.strip().splitlines()[-1] for out, _ in outputs} == {"2"}
    assert [v.version for v in registry.list_versions("m", tracking_uri=uri)] == ["2", "1"]
    assert len([r for r in evidence.log.records() if r["event"] == audit.VERSION_REGISTERED]) == 2
    assert evidence.verify().ok


def test_every_record_is_checked_before_the_first_registry_write(store, tmp_path):
    """A value the log refuses (a 300-character source or reason) is refused before MLflow is touched:
    no version (tagged gate=passed, with no record, and re-created on every retry), no registry identity."""
    ws, uri, evidence, model = store
    validated(evidence, "req-1")
    run_id = registry.log_model_run(model, tracking_uri=uri, artifact_root=ws.artifact_root, run_name="t", params={})
    records = evidence.log.records()
    with pytest.raises(UnlearnopsError, match="audit field 'source_version': 300 characters"):
        evidence.register(name="m", run_id=run_id, run_key="k", model_sha256=sha256_tree(model), gate_report_sha256="e" * 64,
                          request_ids=["req-1"], request_data={"req-1": "d" * 64}, source_version="s" * 300)
    with pytest.raises(UnlearnopsError, match="no versions"):
        registry.list_versions("m", tracking_uri=uri)
    assert registry.read_identity(uri) == {} and evidence.log.records() == records
    with pytest.raises(UnlearnopsError, match="--reason"):
        evidence.bind_registry("r" * 300)
    with pytest.raises(UnlearnopsError, match="--reason"):
        evidence.bind_registry("two\nlines")
    assert registry.read_identity(uri) == {} and evidence.log.records() == records
    # A baseline under a name the log cannot hold: refused before its model run is logged too.
    runs_before = len(registry.client(uri).search_runs([registry.ensure_experiment(uri, ws.artifact_root)]))
    with pytest.raises(UnlearnopsError, match="audit field 'name': 300 characters"):
        evidence.register_source(model, name="n" * 300)
    assert len(registry.client(uri).search_runs([registry.ensure_experiment(uri, ws.artifact_root)])) == runs_before
    assert evidence.log.records() == records


def test_resolve_and_download_verify_the_artifact(store, tmp_path):
    ws, uri, evidence, model = store
    register(ws, uri, evidence, model)
    for ref in ("models:/m@candidate", "m@candidate", "models:/m/1", "m/1"):
        assert registry.resolve(ref, tracking_uri=uri).version == "1"
    path = registry.resolve("m@candidate", tracking_uri=uri).download(tmp_path / "dl")
    assert (path / "model.safetensors").read_bytes() == b"weights"
    stored = next(ws.artifact_root.rglob("model.safetensors"))
    stored.write_bytes(b"tampered")
    with pytest.raises(UnlearnopsError, match="not the registered .* artifact store was altered"):
        registry.resolve("m/1", tracking_uri=uri).download(tmp_path / "dl2")


def test_resolve_unknown_names_the_fix(store):
    _, uri, _, _ = store
    with pytest.raises(UnlearnopsError, match="unlearnops models"):
        registry.resolve("nothing@production", tracking_uri=uri)


def test_promote_decides_from_the_signed_record_not_the_gate_tag(store):
    ws, uri, evidence, model = store
    register(ws, uri, evidence, model, gate_passed=False, run_key="k-failed")
    registry.set_version_tag("m", "1", registry.TAG_GATE, "passed", tracking_uri=uri)  # the tag edited in MLflow
    with pytest.raises(UnlearnopsError, match="signed registration record .* gate did not pass"):
        evidence.promote("m/1")
    register(ws, uri, evidence, model, run_key="k-passed")
    promoted = evidence.promote("m/2")
    assert "production" in promoted.aliases
    assert registry.resolve("m@production", tracking_uri=uri).version == "2"
    assert evidence.log.records()[-1]["fields"] == {"name": "m", "alias": "production", "version": 2, "previous_version": None}


def test_register_source_model_once_as_production(store):
    ws, uri, evidence, model = store
    first = evidence.register_source(model, metrics={"knowmem_r": 90.0})
    second = evidence.register_source(model)
    assert first.version == second.version == "1"
    assert first.name == registry.SOURCE_MODEL_NAME and first.aliases == ["production"]
    assert first.tags[registry.TAG_ROLE] == "source" and first.request_ids == []
    assert evidence.registration(first.name, "1").gate_passed and evidence.registration(first.name, "1").role == "source"
    assert first.metrics() == {"knowmem_r": 90.0}


def test_one_builder_for_version_tags_refuses_what_the_registry_cannot_hold():
    with pytest.raises(UnlearnopsError, match="request id"):
        registry.version_tags(role="unlearned", model_sha256="a" * 64, gate_passed=True, request_ids=["x" * 300])


def test_a_tracking_uri_pointing_at_another_registry_is_refused_until_the_switch_is_recorded(store, tmp_path, migrated_db, monkeypatch, cli):
    ws, uri, evidence, model = store
    register(ws, uri, evidence, model)
    first_id = registry.read_identity(uri)["unlearnops.registry_id"]
    other = tmp_path / "other.db"
    shutil.copy(migrated_db, other)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    moved = Evidence(ws)
    with pytest.raises(UnlearnopsError, match="a registry unlearnops never used .* audit bind-registry"):
        moved.promote("m/1")
    refused = cli("promote", "m", "1")
    assert refused.exit_code == 1 and "bind-registry" in refused.stderr
    failed = moved.verify()
    assert not failed.ok and "not registry" in failed.reason
    bound = cli("audit", "bind-registry", "--reason", "moved to the team server", "--json")
    assert bound.exit_code == 0, bound.stderr
    record = [r for r in moved.log.records() if r["event"] == audit.REGISTRY_BOUND][-1]
    assert record["fields"]["reason"] == "moved to the team server" and record["fields"]["previous_registry_id"] == first_id
    assert registry.read_identity(f"sqlite:///{other}")["unlearnops.registry_id"] == record["fields"]["registry_id"] != first_id
    # The new registry has no version 1: the log registered it elsewhere, and verify says so.
    result = Evidence(ws).verify()
    assert not result.ok and any(p["where"] == "version m/1" for p in result.problems)


def test_a_workspace_without_the_registrys_log_cannot_take_over_its_identity(store, tmp_path, monkeypatch, cli):
    """An engineer who forgot $UNLEARNOPS_AUDIT_URL (a fresh workspace, an empty file log, their own key)
    points at the team's registry: their first registering command must not rebind the registry to their
    log (its log id, public key and checkpoint tags), which would make every other workspace's verify fail."""
    from unlearnops.audit.signing import KEY_ENV

    ws, uri, evidence, model = store
    register(ws, uri, evidence, model)  # the team's log is bound to this registry
    identity = registry.read_identity(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "their-key" / "key.pem"))
    monkeypatch.setenv("UNLEARNOPS_AUDIT_WITNESS", str(tmp_path / "their-witness"))
    elsewhere = tmp_path / "their-workspace"
    request = tmp_path / "request.json"
    request.write_text("{}")
    for command in (["register", "--baseline", "--model", model, "--name", "their-base"],
                    ["audit", "bind-registry", "--reason", "my laptop"],
                    ["run", "--request", request]):  # refused at once, not after minutes of stages
        refused = cli(*command, "--workspace", elsewhere, "--json")
        assert refused.exit_code == 1, refused.stderr
        assert "holds the evidence of audit log" in refused.stderr and "UNLEARNOPS_AUDIT_URL" in refused.stderr
    assert registry.read_identity(uri) == identity
    assert not (elsewhere / "audit.jsonl").exists() or (elsewhere / "audit.jsonl").stat().st_size == 0
    monkeypatch.undo()
    assert evidence.verify().ok


# ---- the CLI ----------------------------------------------------------------------------------------
def test_cli_models_promote_and_malformed_tags(cli, store):
    ws, uri, evidence, model = store
    register(ws, uri, evidence, model, gate_passed=False, run_key="k-failed")
    listed = cli("models", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [(v["name"], v["version"], v["gate"]) for v in json.loads(listed.stdout)] == [("m", "1", "failed")]
    refused = cli("promote", "m", "1")
    assert refused.exit_code == 1 and "gate did not pass" in refused.stderr
    registry.set_version_tag("m", "1", registry.TAG_REQUEST_IDS, "[not json", tracking_uri=uri)
    registry.set_version_tag("m", "1", registry.TAG_METRIC_PREFIX + "q.verbmem_f", "lots", tracking_uri=uri)
    dry_run = ("serve", "--model", "m/1", "--vllm-python", sys.executable, "--dry-run")
    for command in (("models",), ("models", "--json"), ("promote", "m", "1"), dry_run):
        answered = cli(*command)
        assert "Traceback" not in answered.stdout + answered.stderr
        assert answered.exit_code in (0, 1)
    # gate --lineage reads the requests from the signed record, not the corrupted tag.
    [(request_id, corpus, problem)] = evidence.forget_sets("m/1")
    assert (request_id, corpus) == ("req-1", None) and "not in this workspace" in problem
    listed = json.loads(cli("models", "--json").stdout)[0]
    assert listed["request_ids"] == [] and any("not a number" in p for p in listed["problems"])
    assert "registry inconsistency" in cli("models").stderr
    result = evidence.verify()
    assert not result.ok and any("registry inconsistency" in p["reason"] for p in result.problems)


def _gated(evidence: Evidence, model, tmp_path, *, passed=True):
    report = tmp_path / "gate" / "gate.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(json.dumps({"decision": "passed" if passed else "failed", "checks": []}))
    evidence.gate_decided(passed=passed, report=report, model_sha256=sha256_tree(model))
    return report


def _nothing_registered(uri, evidence, before: int) -> None:
    assert registry.list_versions(tracking_uri=uri) == []
    assert len(evidence.log.records()) == before


def test_cli_register_accepts_only_signed_evidence_and_checks_before_writing(cli, store, tmp_path):
    ws, uri, evidence, model = store
    validated(evidence, "req-1")
    hand_written = tmp_path / "forged.json"
    hand_written.write_text(json.dumps({"decision": "passed", "checks": []}))
    before = len(evidence.log.records())
    forged = cli("register", "--model", model, "--name", "other", "--gate-report", hand_written, "--request-id", "req-1")
    assert forged.exit_code == 1 and "no signed gate.decided record" in forged.stderr
    _nothing_registered(uri, evidence, before)

    report = _gated(evidence, model, tmp_path)
    before = len(evidence.log.records())
    long_id = cli("register", "--model", model, "--name", "other", "--gate-report", report, "--request-id", "r" * 300)
    assert long_id.exit_code == 1 and "request id" in long_id.stderr
    never_received = cli("register", "--model", model, "--name", "other", "--gate-report", report, "--request-id", "req-never")
    assert never_received.exit_code == 1 and "validated" in never_received.stderr
    other_model = tmp_path / "other-model"
    shutil.copytree(model, other_model)
    (other_model / "model.safetensors").write_bytes(b"other weights")
    swapped = cli("register", "--model", other_model, "--name", "other", "--gate-report", report, "--request-id", "req-1")
    assert swapped.exit_code == 1 and "not the model this gate report passed" in swapped.stderr
    (tmp_path / "failed").mkdir()
    failed_report = _gated(evidence, model, tmp_path / "failed", passed=False)
    failed = cli("register", "--model", model, "--name", "other", "--gate-report", failed_report)
    assert failed.exit_code == 1 and "gate failed" in failed.stderr
    assert registry.list_versions(tracking_uri=uri) == []
    assert not [r for r in evidence.log.records() if r["event"] == audit.VERSION_REGISTERED]

    result = cli("register", "--model", model, "--name", "other", "--gate-report", report, "--request-id", "req-1", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["aliases"] == ["candidate"]
    registration = evidence.registration("other", "1")
    assert registration.gate_report_sha256 == sha256_file(report) and registration.request_ids == ["req-1"]
    promoted = cli("promote", "--model", "other/1", "--json")
    assert promoted.exit_code == 0 and "production" in json.loads(promoted.stdout)["aliases"]
    assert evidence.verify().ok


def test_credentials_in_the_tracking_uri_never_reach_the_output(cli, workspace, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:hunter2@127.0.0.1:9/")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = cli("promote", "m", "1")
    assert result.exit_code == 1
    assert "hunter2" not in result.stdout + result.stderr and "alice" not in result.stdout + result.stderr
    assert "***@127.0.0.1:9" in result.stderr
