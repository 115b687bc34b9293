"""The tamper suite (issue 13): an attacker with write access to the workspace, the registry or both,
but without the operator's signing key and witness, tries every class of tampering; each one is
detected with the record, checkpoint, version or alias named.

Log classes run on a plain log (fast); registry classes on a real MLflow sqlite store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unlearnops import audit, registry
from unlearnops.audit import AuditLog, record_hash
from unlearnops.errors import UnlearnopsError
from unlearnops.evidence import Evidence
from unlearnops.fileio import canonical_json, sha256_tree
from unlearnops.workspace import Workspace


def _life(path: Path, **keys) -> AuditLog:
    """9 records: log.created, a request received -> gate -> registered -> promoted -> deployed, then a second request."""
    log = AuditLog(path, **keys)
    log.append(audit.REQUEST_RECEIVED, request_id="req-1", deadline="2026-12-01T00:00:00Z")
    log.append(audit.REQUEST_VALIDATED, request_id="req-1")
    log.append(audit.GATE_DECIDED, run_id="run-1", passed=True, gate_report_sha256="b" * 64)
    log.append(audit.VERSION_REGISTERED, run_id="run-1", name="news", version=1, request_ids=["req-1"], model_sha256="c" * 64,
               gate_passed=True, role="unlearned")
    log.append(audit.ALIAS_MOVED, name="news", alias="production", version=1)
    log.append(audit.DEPLOYMENT_STARTED, deployment_id="dep-1", name="news", version="1", request_ids=["req-1"])
    log.append(audit.DEPLOYMENT_STOPPED, deployment_id="dep-1", reason="signal SIGTERM")
    log.append(audit.REQUEST_RECEIVED, request_id="req-2", deadline="2026-12-24T00:00:00Z")
    return log


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(canonical_json(r).decode() + "\n" for r in records))


def _rechain(records: list[dict], start: int) -> list[dict]:
    """What a forger without the key can do: renumber, relink and re-hash from `start` (signatures kept or guessed)."""
    for index in range(start, len(records)):
        records[index]["seq"] = index + 1
        records[index]["prev"] = records[index - 1]["hash"] if index else audit.GENESIS
        records[index]["hash"] = record_hash(records[index])
    return records


def _forged(records: list[dict], event: str, **fields) -> dict:
    last = records[-1]
    forged = {"seq": last["seq"] + 1, "timestamp": last["timestamp"], "event": event, "fields": fields, "prev": last["hash"]}
    forged["hash"] = record_hash(forged)
    forged["sig"] = last["sig"]  # the best a forger has: a real signature, of another record
    return forged


# ---- each tampering: (records) -> records, and the record it must name ---------------------------
def edit_a_field(records):
    records[3]["fields"]["passed"] = False
    return records


def edit_and_rehash_the_chain(records):
    records[3]["fields"]["passed"] = False
    return _rechain(records, 3)


def delete_a_record(records):
    del records[4]
    return records


def delete_and_rechain(records):
    del records[4]
    return _rechain(records, 4)


def reorder(records):
    records[4], records[5] = records[5], records[4]
    return records


def reorder_and_rechain(records):
    records[4], records[5] = records[5], records[4]
    return _rechain(records, 4)


def insert_a_copy(records):
    records.insert(3, dict(records[7]))
    return records


def insert_forged_and_rechain(records):
    records.insert(3, _forged(records[:3], audit.REQUEST_REJECTED, request_id="req-1"))
    return _rechain(records, 3)


def forge_an_appended_deployment(records):
    """The issue's example: a request never received shown as satisfied by a forged deployment."""
    return records + [_forged(records, audit.DEPLOYMENT_STARTED, deployment_id="dep-x", name="news", version="1", request_ids=["req-9"])]


def forge_an_appended_rejection(records):
    """The issue's example: closing a pending request with a forged rejection."""
    return records + [_forged(records, audit.REQUEST_REJECTED, request_id="req-2")]


def truncate_1(records):
    return records[:-1]


def truncate_2(records):
    return records[:-2]


def truncate_4_after_the_registration(records):
    return records[:-4]


def a_log_that_breaks_the_append_rules(records):
    """Re-hashed correctly but with a field append refuses (a float): verify enforces the same rules."""
    records[8]["fields"]["score"] = 0.5
    return _rechain(records, 8)


def time_running_backwards(records):
    records[5]["timestamp"] = "2001-01-01T00:00:00.000000Z"
    return _rechain(records, 5)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (edit_a_field, 4),
        (edit_and_rehash_the_chain, 4),
        (delete_a_record, 5),
        (delete_and_rechain, 5),
        (reorder, 5),
        (reorder_and_rechain, 5),
        (insert_a_copy, 4),
        (insert_forged_and_rechain, 4),
        (forge_an_appended_deployment, 10),
        (forge_an_appended_rejection, 10),
        (truncate_1, 9),
        (truncate_2, 8),
        (truncate_4_after_the_registration, 6),
        (a_log_that_breaks_the_append_rules, 9),
        (time_running_backwards, 6),
    ],
)
def test_log_tampering_is_detected_and_named(tmp_path, tamper, named):
    log = _life(tmp_path / "audit.jsonl")
    _write(log.path, tamper(_records(log.path)))
    result = AuditLog(log.path).verify()
    assert not result.ok
    assert result.first_bad_seq == named, result.reason
    assert f"record {named}" in result.reason or f"records {named}" in result.reason


def test_a_truncated_or_forged_log_cannot_be_appended_to_or_shown(cli, workspace):
    log = _life(workspace / "audit.jsonl")
    genuine = _records(log.path)
    _write(log.path, truncate_2(list(genuine)))
    with pytest.raises(UnlearnopsError, match="records were cut or the log was rolled back"):
        AuditLog(log.path).append(audit.RUN_STARTED, run_id="after-the-cut")
    assert cli("audit", "status").exit_code == 1
    _write(log.path, forge_an_appended_deployment(genuine))
    status = cli("audit", "status", "--json")
    assert status.exit_code == 1 and "does not verify" in status.stderr and "record 10" in status.stderr
    with pytest.raises(UnlearnopsError, match="not signed by this key"):
        AuditLog(log.path).append(audit.RUN_STARTED, run_id="after-the-forgery")


def test_a_rollback_to_an_older_copy_is_named(tmp_path):
    log = _life(tmp_path / "audit.jsonl")
    older = log.path.read_bytes()  # a backup taken at 9 records
    log.append(audit.REQUEST_REJECTED, request_id="req-2", reason_code="withdrawn")
    log.append(audit.RUN_STARTED, run_id="run-2")
    log.path.write_bytes(older)
    result = AuditLog(log.path).verify()
    assert (result.ok, result.first_bad_seq) == (False, 10)
    assert "records 10-11 missing" in result.reason and "checkpoint" in result.reason


def test_a_log_re_signed_with_another_key_is_named_at_record_1(tmp_path):
    from unlearnops.audit.signing import SigningKey

    path = tmp_path / "ws" / "audit.jsonl"
    _life(path)
    path.unlink()
    attacker = _life(path, signing_key=SigningKey.generate(), witness=tmp_path / "attacker-witness")
    assert attacker.verify().ok  # a complete, self-consistent history, signed by the attacker's own key...
    result = AuditLog(path).verify()  # ...checked against the operator's key
    assert (result.ok, result.first_bad_seq) == (False, 1) and "not the configured key" in result.reason


def test_a_deleted_or_replaced_log_is_named_by_the_witness(tmp_path):
    log = _life(tmp_path / "audit.jsonl")
    log.path.write_bytes(b"")
    result = AuditLog(log.path).verify()
    assert not result.ok and "had 9 records here and is gone" in result.reason
    # The next append starts a new log, which says which log it replaced: the deletion stays on record.
    AuditLog(log.path).append(audit.RUN_STARTED, run_id="fresh")
    fresh = AuditLog(log.path).verify()
    assert fresh.ok and "replaced log" in fresh.notices[0] and "(9 records)" in fresh.notices[0]


def test_a_log_swapped_for_a_symlink_is_named_by_the_witness(tmp_path):
    """The witness keys checkpoints by the log's location: replacing the log with a symbolic link (to an
    empty file, or to another genuine log signed by the same operator's key) must not move the location
    to one the witness knows nothing about, or knows as the other log's."""
    log = _life(tmp_path / "ws" / "audit.jsonl")
    other = _life(tmp_path / "other-ws" / "audit.jsonl")  # another workspace of the same operator: same key
    genuine = log.path.read_bytes()
    empty = tmp_path / "elsewhere" / "audit.jsonl"
    empty.parent.mkdir()
    empty.touch()
    for target, words in ((empty, "had 9 records here and is gone"), (other.path, "the log was replaced")):
        log.path.unlink()
        log.path.symlink_to(target)
        result = AuditLog(log.path).verify()
        assert not result.ok and words in result.reason, result.reason
    with pytest.raises(UnlearnopsError, match="the log was replaced"):
        AuditLog(log.path).append(audit.RUN_STARTED, run_id="through-the-link")
    assert other.verify().ok and len(other.records()) == 9  # nothing was appended to the other log through the link
    log.path.unlink()
    log.path.write_bytes(genuine)
    assert AuditLog(log.path).verify().ok


def test_a_forged_or_edited_witness_checkpoint_is_named(tmp_path):
    log = _life(tmp_path / "audit.jsonl")
    witness_file = log.witness.file_for(log.storage.location)
    for note in _life(tmp_path / "other" / "audit.jsonl").checkpoint_note(), witness_file.read_text().replace("\n9\n", "\n5\n"):
        saved = witness_file.read_text()
        witness_file.write_text(note)
        result = AuditLog(log.path).verify()
        assert not result.ok and "checkpoint in witness" in result.reason
        witness_file.write_text(saved)
    assert AuditLog(log.path).verify().ok


# ---- the registry side (real MLflow on sqlite) ------------------------------------------------------
@pytest.fixture
def registered(store):
    """A workspace with version news/1 registered through unlearnops and promoted to @production."""
    ws, uri, evidence, model = store
    evidence.log.append(audit.REQUEST_RECEIVED, request_id="req-1")
    evidence.log.append(audit.REQUEST_VALIDATED, request_id="req-1", data_sha256="d" * 64)
    run_id = registry.log_model_run(model, tracking_uri=uri, artifact_root=ws.artifact_root, run_name="t", params={})
    evidence.register(name="news", run_id=run_id, run_key="k1", model_sha256=sha256_tree(model), gate_report_sha256="e" * 64,
                      request_ids=["req-1"], request_data={"req-1": "d" * 64})
    evidence.promote("news/1")
    assert evidence.verify().ok
    return evidence, uri, run_id


def _problems(evidence: Evidence) -> dict[str, str]:
    result = evidence.verify()
    assert not result.ok
    return {problem["where"]: problem["reason"] for problem in result.problems}


@pytest.mark.parametrize(
    ("tag", "value", "words"),
    [
        (registry.TAG_MODEL_SHA, "f" * 64, "tag edited"),
        (registry.TAG_GATE, "failed", "tag edited"),
        (registry.TAG_AUDIT_HEAD, "0" * 64, "tag edited"),
        (registry.TAG_REQUEST_IDS, '["req-1", "req-never"]', "claims"),
    ],
)
def test_a_registry_tag_edited_is_named(registered, tag, value, words):
    evidence, uri, _ = registered
    registry.set_version_tag("news", "1", tag, value, tracking_uri=uri)
    assert words in _problems(evidence)["version news/1"]


def test_a_registry_tag_deleted_is_named(registered):
    evidence, uri, _ = registered
    registry.client(uri).delete_model_version_tag("news", "1", registry.TAG_AUDIT_HEAD)
    assert "audit_head tag was deleted" in _problems(evidence)["version news/1"]


def test_a_registration_in_progress_is_waited_for_not_reported_as_tampering(registered, workspace):
    """On a team, another machine's registration (version created and recorded, its audit_head tag not
    yet set) is seen half-done by a reader: `verify` waits for the writer's append section and checks
    again, instead of reporting the tag as deleted. A tag really deleted is still named (test above)."""
    import subprocess
    import sys
    import time

    evidence, uri, _ = registered
    head = registry.resolve("news/1", tracking_uri=uri).tags[registry.TAG_AUDIT_HEAD]
    with evidence.log.exclusive():  # the writer's section, as Evidence.register holds it
        registry.client(uri).delete_model_version_tag("news", "1", registry.TAG_AUDIT_HEAD)  # "not yet set"
        reader = subprocess.Popen([sys.executable, "-m", "unlearnops.cli", "audit", "verify", "--json", "--workspace", str(workspace)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        assert reader.poll() is None, "verify answered without waiting for the registration in progress"
        registry.set_version_tag("news", "1", registry.TAG_AUDIT_HEAD, head, tracking_uri=uri)
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0 and json.loads(out)["ok"], out + err


def test_an_alias_moved_outside_unlearnops_is_named(registered, tmp_path):
    evidence, uri, run_id = registered
    client = registry.client(uri)
    client.create_model_version("news", source=f"runs:/{run_id}/model", run_id=run_id)  # version 2, outside the tool
    client.set_registered_model_alias("news", "production", "2")
    problems = _problems(evidence)
    assert "says version 1: moved outside unlearnops" in problems["alias news@production"]
    assert "created outside unlearnops" in problems["version news/2"]


def test_an_alias_moved_outside_unlearnops_is_never_followed(registered, tmp_path):
    """An insider with registry write rolls @production back to an older version that passed its gate
    but does not satisfy a newer request: `verify` names it, and no decision follows the moved alias
    (serve, the pipeline's source, promote, gate --lineage all resolve through Evidence.resolve)."""
    evidence, uri, run_id = registered
    evidence.log.append(audit.REQUEST_VALIDATED, request_id="req-2", data_sha256="d" * 64)
    evidence.register(name="news", run_id=run_id, run_key="k2", model_sha256="a" * 64, gate_report_sha256="e" * 64,
                      request_ids=["req-1", "req-2"], request_data={"req-1": "d" * 64, "req-2": "d" * 64})
    evidence.promote("news/2")
    assert evidence.resolve("news@production")[0].version == "2"
    registry.client(uri).set_registered_model_alias("news", "production", "1")  # the rollback, in MLflow only
    before = evidence.log.records()
    for decide in (lambda: evidence.resolve("news@production"), lambda: evidence.forget_sets("news@production"),
                   lambda: evidence.promote("news@production", alias="stable")):
        with pytest.raises(UnlearnopsError, match=r"news@production points at version 1 in the registry, but its last "
                                                  r"signed alias.moved record \(seq \d+\) says version 2"):
            decide()
    # An alias no signed record ever set (made in MLflow) is not followed either.
    registry.client(uri).set_registered_model_alias("news", "stable", "1")
    with pytest.raises(UnlearnopsError, match="news@stable: no signed alias.moved record set it"):
        evidence.resolve("news@stable")
    assert evidence.log.records() == before  # nothing recorded by a refusal
    evidence.resolve("news/1")  # a version number names the version itself: nothing to check
    evidence.promote("news/2")  # the release manager restores it through unlearnops: followed again
    assert evidence.resolve("news@production")[0].version == "2"


def test_a_version_created_outside_with_a_passed_gate_tag_is_named_and_refused(registered):
    """The issue's example: a version made in MLflow and tagged unlearnops.gate=passed."""
    evidence, uri, run_id = registered
    client = registry.client(uri)
    client.create_registered_model("evil")
    client.create_model_version("evil", source=f"runs:/{run_id}/model", run_id=run_id,
                                tags={registry.TAG_GATE: "passed", registry.TAG_MODEL_SHA: "a" * 64})
    assert "created outside unlearnops" in _problems(evidence)["version evil/1"]
    with pytest.raises(UnlearnopsError, match="no signed registration record"):
        evidence.promote("evil/1")
    with pytest.raises(UnlearnopsError, match="no signed registration record"):
        evidence.resolve("evil/1")


def test_a_version_deleted_outside_unlearnops_is_named(registered):
    evidence, uri, _ = registered
    registry.client(uri).delete_model_version("news", "1")
    assert "deleted outside unlearnops" in _problems(evidence)["version news/1"]


def test_a_registry_replaced_or_deleted_is_named(registered, workspace):
    evidence, _, _ = registered
    (workspace / "mlflow.db").unlink()
    problems = _problems(evidence)
    assert any("registry" in where for where in problems)


def test_the_registry_keeps_a_second_checkpoint_that_catches_a_cut_even_without_the_witness(registered):
    evidence, uri, _ = registered
    size = int(registry.read_identity(uri)["unlearnops.audit.checkpoint"].split("\n")[1])
    records = _records(evidence.log.path)
    assert size == len(records)
    _write(evidence.log.path, records[:-1])  # the last record (the promotion's alias.moved) cut
    evidence.log.witness.file_for(evidence.log.storage.location).unlink()  # and the witness's file removed
    problems = _problems(evidence)
    registry_problem = next(reason for where, reason in problems.items() if where.startswith("checkpoint in registry"))
    assert f"record {size} missing" in registry_problem


# ---- the data trained on, and the request it answers ------------------------------------------------
@pytest.fixture
def bench_request(tiny_bench, workspace, tmp_path):
    """A workspace holding a copy of the tiny bench, and a request on it."""
    from helpers import write_bench_request

    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")
    return Workspace.resolve(workspace), write_bench_request(tmp_path / "request.json", "tamper-req-1")


def test_data_changed_after_validation_is_never_trained_on_and_a_changed_snapshot_is_named(bench_request):
    from unlearnops.pipeline.data import corpus_of
    from unlearnops.request import validate_request

    ws, request_path = bench_request
    report = validate_request(request_path, workspace=ws, min_privleak_texts=2)
    assert report.ok, report.failures
    data = corpus_of(report.data, ws)
    validated_retain = json.loads((data.corpus / "raw" / "retain.json").read_text())
    # Between validate and unlearn, the retain set is extended with the forget texts (the example).
    source_retain = ws.bench_dir("tiny") / "corpus" / "raw" / "retain.json"
    forget = json.loads((ws.bench_dir("tiny") / "corpus" / "raw" / "forget.json").read_text())
    source_retain.write_text(json.dumps(json.loads(source_retain.read_text()) + forget))
    assert json.loads((data.corpus / "raw" / "retain.json").read_text()) == validated_retain  # the stages read the snapshot
    assert data.corpus.is_relative_to(ws.root / "data") and data.corpus_sha256 in str(data.corpus)
    # Changing the snapshot itself (inside the workspace) is refused by the next stage, naming the file.
    snapshot_retain = data.snapshot.path / "corpus" / "raw" / "retain.json"
    snapshot_retain.write_text(json.dumps(validated_retain + forget))
    with pytest.raises(UnlearnopsError, match=r"raw/retain.json: changed after validation"):
        data.corpus
    snapshot_retain.write_text(json.dumps(validated_retain, indent=2, ensure_ascii=False) + "\n")
    assert data.corpus.is_dir()  # restored byte for byte: accepted again
    (data.snapshot.path / "corpus" / "raw" / "extra.json").write_text("[]")
    with pytest.raises(UnlearnopsError, match="extra.json: added after validation"):
        data.corpus


def test_a_reused_request_id_with_other_content_is_refused_or_recorded_as_superseding(bench_request, cli):
    from unlearnops.request import load_request

    ws, request_path = bench_request
    evidence = Evidence(ws)
    evidence.receive_request(load_request(request_path))
    evidence.receive_request(load_request(request_path))  # a retry of the same content is the same request
    changed = json.loads(request_path.read_text())
    changed["deadline"] = "2026-12-31T00:00:00Z"
    request_path.write_text(json.dumps(changed))
    before = evidence.log.records()
    with pytest.raises(UnlearnopsError, match="already received with different content .* --supersede"):
        evidence.receive_request(load_request(request_path))
    assert evidence.log.records() == before
    refused = cli("run", "--request", request_path, "--pipeline", Path(__file__).resolve().parents[1] / "pipelines" / "ci.yaml", "--json")
    assert refused.exit_code == 1 and "already received with different content" in refused.stderr
    assert json.loads(refused.stdout)["field"] == "request_id"  # what to fix, for a CI job reading --json
    assert evidence.log.records() == before and not (ws.root / "data").exists()
    evidence.receive_request(load_request(request_path), supersede=True)
    superseded = [r for r in evidence.log.records() if r["event"] == audit.REQUEST_SUPERSEDED]
    assert len(superseded) == 1 and superseded[0]["fields"]["request_id"] == "tamper-req-1"
    status = evidence.log.status()
    assert [(p["request_id"], p["attempts"], p["deadline"]) for p in status["pending"]] == [("tamper-req-1", 3, "2026-12-31T00:00:00+00:00")]
