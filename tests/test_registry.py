"""The MLflow registry on a real sqlite store: versions, tags, aliases, idempotence, audit anchoring."""

from __future__ import annotations

import json
import shutil

import pytest

from unlearnops import registry
from unlearnops.audit import AuditLog
from unlearnops.errors import UnlearnopsError
from unlearnops.workspace import Workspace


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory):
    """An empty MLflow sqlite database, created once: the schema migration takes ~9 s per database."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    registry.client(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(workspace, tmp_path, monkeypatch, migrated_db):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = Workspace.resolve(workspace)
    shutil.copy(migrated_db, workspace / "mlflow.db")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"weights")
    return ws, registry.tracking_uri_for(ws), AuditLog(ws.audit_log), model


def register(ws, uri, audit, model, *, gate="passed", run_key="key-1", request_ids=("req-1",), name="m"):
    run_id = registry.log_model_run(model, tracking_uri=uri, artifact_root=ws.artifact_root, run_name="t", params={})
    tags = {
        registry.TAG_GATE: gate,
        registry.TAG_REQUEST_IDS: json.dumps(list(request_ids)),
        registry.TAG_MODEL_SHA: registry.sha256_tree(model),
        registry.request_tag("req-1"): json.dumps({"forget_corpus": "/c", "corpus_sha256": "ab"}),
    }
    return registry.register_version(name=name, run_id=run_id, tags=tags, run_key=run_key, tracking_uri=uri, audit=audit)


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


def test_register_tags_alias_and_audit_anchor(store):
    ws, uri, audit, model = store
    version = register(ws, uri, audit, model)
    assert (version.name, version.version, version.aliases) == ("m", "1", ["candidate"])
    assert version.gate_passed and version.request_ids == ["req-1"]
    assert version.request_records() == {"req-1": {"forget_corpus": "/c", "corpus_sha256": "ab"}}
    registered = [r for r in audit.records() if r["event"] == "version.registered"]
    assert version.tags[registry.TAG_AUDIT_HEAD] == registered[-1]["hash"]
    assert registered[-1]["fields"]["request_ids"] == ["req-1"]
    assert [r["event"] for r in audit.records()] == ["version.registered", "alias.moved"]
    assert audit.verify(uri).ok


def test_register_is_idempotent_on_the_run_key(store):
    ws, uri, audit, model = store
    first = register(ws, uri, audit, model)
    newer = register(ws, uri, audit, model, run_key="key-2")
    again = register(ws, uri, audit, model)
    assert again.version == first.version
    assert len(registry.list_versions("m", tracking_uri=uri)) == 2
    assert len([r for r in audit.records() if r["event"] == "version.registered"]) == 2
    # Re-registering the first run must not pull @candidate back from the newer version.
    assert registry.resolve("m@candidate", tracking_uri=uri).version == newer.version == "2"


def test_resolve_and_download_verify_the_artifact(store, tmp_path):
    ws, uri, audit, model = store
    register(ws, uri, audit, model)
    for ref in ("models:/m@candidate", "m@candidate", "models:/m/1", "m/1"):
        assert registry.resolve(ref, tracking_uri=uri).version == "1"
    path = registry.resolve("m@candidate", tracking_uri=uri).download(tmp_path / "dl")
    assert (path / "model.safetensors").read_bytes() == b"weights"
    stored = next(ws.artifact_root.rglob("model.safetensors"))
    stored.write_bytes(b"tampered")
    with pytest.raises(UnlearnopsError, match="do not match"):
        registry.resolve("m/1", tracking_uri=uri).download(tmp_path / "dl2")


def test_resolve_unknown_names_the_fix(store):
    _, uri, _, _ = store
    with pytest.raises(UnlearnopsError, match="unlearnops models"):
        registry.resolve("nothing@production", tracking_uri=uri)


def test_promote_refuses_a_failed_gate_and_moves_production(store):
    ws, uri, audit, model = store
    register(ws, uri, audit, model, gate="failed", run_key="k-failed")
    with pytest.raises(UnlearnopsError, match="not 'passed'"):
        registry.promote("m/1", tracking_uri=uri, audit=audit)
    register(ws, uri, audit, model, run_key="k-passed")
    promoted = registry.promote("m/2", tracking_uri=uri, audit=audit)
    assert "production" in promoted.aliases
    assert registry.resolve("m@production", tracking_uri=uri).version == "2"
    assert audit.records()[-1]["fields"] == {"name": "m", "alias": "production", "version": 2, "previous_version": None}


def test_register_source_model_once_as_production(store):
    ws, uri, audit, model = store
    first = registry.register_source_model(model, tracking_uri=uri, artifact_root=ws.artifact_root, audit=audit, metrics={"knowmem_r": 90.0})
    second = registry.register_source_model(model, tracking_uri=uri, artifact_root=ws.artifact_root, audit=audit)
    assert first.version == second.version == "1"
    assert first.name == registry.SOURCE_MODEL_NAME and first.aliases == ["production"]
    assert first.tags[registry.TAG_ROLE] == "source" and first.gate_passed and first.request_ids == []
    assert first.metrics() == {"knowmem_r": 90.0}


def test_cli_models_promote_and_register(cli, store, tmp_path):
    ws, uri, audit, model = store
    register(ws, uri, audit, model, gate="failed", run_key="k-failed")
    listed = cli("models", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [(v["name"], v["version"], v["gate"]) for v in json.loads(listed.stdout)] == [("m", "1", "failed")]
    refused = cli("promote", "m", "1")
    assert refused.exit_code == 1 and "not 'passed'" in refused.stderr

    failed_report = tmp_path / "gate.json"
    failed_report.write_text(json.dumps({"decision": "failed", "checks": [{"name": "verbmem_f", "status": "failed"}]}))
    result = cli("register", "--model", model, "--name", "other", "--gate-report", failed_report)
    assert result.exit_code == 1 and "nothing registered" in result.stderr
    assert cli("models", "other").exit_code == 1

    failed_report.write_text(json.dumps({"decision": "passed", "checks": []}))
    result = cli("register", "--model", model, "--name", "other", "--gate-report", failed_report, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["aliases"] == ["candidate"]
    promoted = cli("promote", "--model", "other/1", "--json")
    assert promoted.exit_code == 0 and "production" in json.loads(promoted.stdout)["aliases"]


def test_credentials_in_the_tracking_uri_never_reach_the_output(cli, workspace, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:hunter2@127.0.0.1:9/")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = cli("promote", "m", "1")
    assert result.exit_code == 1
    assert "hunter2" not in result.stdout + result.stderr and "alice" not in result.stdout + result.stderr
    assert "***@127.0.0.1:9" in result.stderr
