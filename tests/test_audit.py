"""The hash-chained audit log: tamper detection, concurrency, queries and the CLI."""

from __future__ import annotations

import json
import multiprocessing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from unlearnops import audit
from unlearnops.audit import AuditLog, bundle_digest, record_hash
from unlearnops.errors import UnlearnopsError
from unlearnops.fileio import canonical_json


def _sample_log(path: Path) -> AuditLog:
    """Six records covering one request's life: received -> gate -> version -> deployment."""
    log = AuditLog(path)
    log.append(audit.REQUEST_RECEIVED, request_id="req-1", request_sha256="a" * 64, deadline="2026-12-01T00:00:00Z")
    log.append(audit.RUN_STARTED, run_id="run-1", request_id="req-1")
    log.append(audit.GATE_DECIDED, run_id="run-1", passed=True, gate_report_sha256="b" * 64)
    log.append(audit.VERSION_REGISTERED, run_id="run-1", name="news", version="1", request_ids=["req-1"])
    log.append(audit.DEPLOYMENT_STARTED, deployment_id="dep-1", name="news", version="1", request_ids=["req-1"])
    log.append(audit.REQUEST_RECEIVED, request_id="req-2", deadline="2020-01-01")
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines))


def test_records_chain_and_verify_ok(tmp_path):
    log = _sample_log(tmp_path / "audit.jsonl")
    records = log.records()
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == audit.GENESIS
    assert all(later["prev"] == earlier["hash"] for earlier, later in zip(records, records[1:]))
    assert all(record_hash(r) == r["hash"] for r in records)
    assert records[0]["timestamp"].endswith("Z")
    # Each line is exactly the record's canonical JSON.
    assert _lines(log.path)[0] == canonical_json(records[0]).decode() + "\n"
    result = log.verify()
    assert result.ok and result.checked == 6 and result.head_hash == log.head_hash() == records[-1]["hash"]


def test_empty_log_verifies(tmp_path):
    log = AuditLog(tmp_path / "none.jsonl")
    assert log.verify().ok and log.verify().checked == 0 and log.head_hash() == audit.GENESIS


def _edit_field(lines):
    record = json.loads(lines[2])
    record["fields"]["passed"] = False
    lines[2] = json.dumps(record) + "\n"
    return lines


def _edit_and_rehash(lines):
    record = json.loads(lines[2])
    record["fields"]["passed"] = False
    record["hash"] = record_hash(record)
    lines[2] = canonical_json(record).decode() + "\n"
    return lines


def _delete(lines):
    del lines[2]
    return lines


def _insert_copy(lines):
    lines.insert(2, lines[4])
    return lines


def _swap(lines):
    lines[2], lines[3] = lines[3], lines[2]
    return lines


def _truncate_last(lines):
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    return lines


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "words"),
    [
        (_edit_field, 3, "does not match its hash"),
        (_edit_and_rehash, 3, "changed and re-hashed"),
        (_delete, 3, "deleted, inserted or reordered"),
        (_insert_copy, 3, "deleted, inserted or reordered"),
        (_swap, 3, "deleted, inserted or reordered"),
        (_truncate_last, 6, "not valid JSON"),
    ],
    ids=["edit-field", "edit-and-rehash", "delete", "insert", "swap", "truncate-last"],
)
def test_tampering_is_caught_and_named(tmp_path, tamper, bad_seq, words):
    log = _sample_log(tmp_path / "audit.jsonl")
    _write(log.path, tamper(_lines(log.path)))
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert words in result.reason
    assert result.checked == bad_seq - 1 or tamper is _edit_and_rehash


def test_forged_insert_with_valid_hash_is_caught_at_the_next_record(tmp_path):
    """A forger who links and hashes an inserted record correctly still breaks the next seq."""
    log = _sample_log(tmp_path / "audit.jsonl")
    lines = _lines(log.path)
    before = json.loads(lines[1])
    forged = {"seq": 3, "timestamp": before["timestamp"], "event": audit.GATE_DECIDED,
              "fields": {"passed": True, "gate_report_sha256": "c" * 64}, "prev": before["hash"]}
    forged["hash"] = record_hash(forged)
    lines.insert(2, canonical_json(forged).decode() + "\n")
    _write(log.path, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_append_refuses_a_damaged_tail(tmp_path):
    log = _sample_log(tmp_path / "audit.jsonl")
    _write(log.path, _truncate_last(_lines(log.path)))
    with pytest.raises(UnlearnopsError, match="last record is damaged"):
        log.append(audit.REQUEST_RECEIVED, request_id="req-3")


@pytest.mark.parametrize(
    ("event", "fields", "message"),
    [
        ("request.recieved", {"request_id": "r"}, "did you mean 'request.received'"),
        (audit.GATE_DECIDED, {"passed": True}, "missing field(s) gate_report_sha256"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "note": "x" * 257}, "never texts"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "request_ids": ["y" * 300]}, "never texts"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "score": 0.5}, "float is not allowed"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "Bad-Name": "1"}, "lower_snake_case"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "deadline": "next week"}, "not an ISO 8601"),
    ],
)
def test_append_refuses_bad_input_and_writes_nothing(tmp_path, event, fields, message):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(UnlearnopsError) as caught:
        log.append(event, **fields)
    assert message in str(caught.value)
    assert not log.path.exists()


def test_a_256_character_value_is_accepted(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(audit.REQUEST_RECEIVED, request_id="r" * 256)
    assert log.verify().ok


def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(path)
    for index in range(count):
        log.append(audit.RUN_STARTED, run_id=f"w{worker}-{index}")


def test_concurrent_writers_never_fork_the_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), worker, 25)) for worker in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    log = AuditLog(path)
    result = log.verify()
    assert result.ok, result.reason
    records = log.records()
    assert len(records) == 100
    assert len({r["fields"]["run_id"] for r in records}) == 100
    assert len({r["prev"] for r in records}) == 100  # no two records claim the same parent


def test_lineage_follows_runs_versions_and_deployments(tmp_path):
    log = _sample_log(tmp_path / "audit.jsonl")
    log.append(audit.ALIAS_MOVED, name="news", alias="production", version="1")
    log.append(audit.DEPLOYMENT_STOPPED, deployment_id="dep-1", reason="signal SIGTERM")
    log.append(audit.RUN_STARTED, run_id="run-other", request_id="req-2")
    lineage = log.lineage("req-1")
    assert [r["event"] for r in lineage.records] == [
        audit.REQUEST_RECEIVED, audit.RUN_STARTED, audit.GATE_DECIDED, audit.VERSION_REGISTERED,
        audit.DEPLOYMENT_STARTED, audit.ALIAS_MOVED, audit.DEPLOYMENT_STOPPED,
    ]
    summary = lineage.summary()
    assert summary["gates"][0]["gate_report_sha256"] == "b" * 64
    assert summary["runs"] == [{"run_id": "run-1", "started": lineage.records[1]["timestamp"], "finished": None}]


def test_status_reports_live_satisfied_and_overdue_pending(tmp_path):
    log = _sample_log(tmp_path / "audit.jsonl")
    log.append(audit.REQUEST_RECEIVED, request_id="req-3")
    log.append(audit.REQUEST_REJECTED, request_id="req-3", reason_code="schema")
    now = datetime(2026, 11, 30, tzinfo=timezone.utc)
    status = log.status(now=now)
    assert [d["deployment_id"] for d in status["live"]] == ["dep-1"]
    assert status["satisfied"] == ["req-1"]
    assert [p["request_id"] for p in status["pending"]] == ["req-2"]
    assert status["pending"][0]["overdue"] is True and status["pending"][0]["hours_left"] < 0
    assert status["rejected"] == ["req-3"]
    log.append(audit.DEPLOYMENT_STOPPED, deployment_id="dep-1")
    after = log.status(now=now + timedelta(hours=1))
    assert after["live"] == [] and after["satisfied"] == []
    assert {p["request_id"] for p in after["pending"]} == {"req-1", "req-2"}


def test_registry_cross_check_catches_a_truncated_log(tmp_path):
    """Real MLflow on sqlite: a version stamped with a head hash that the log no longer holds."""
    from mlflow import MlflowClient

    log = _sample_log(tmp_path / "audit.jsonl")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("news")
    client.create_model_version("news", source=str(tmp_path), tags={audit.AUDIT_HEAD_TAG: log.head_hash()})
    client.create_model_version("news", source=str(tmp_path))  # untagged versions are not checked
    assert log.verify(uri).ok and log.verify(uri).versions_checked == 1
    _write(log.path, _lines(log.path)[:-1])  # a clean cut of the last record: the chain alone is fine
    assert log.verify().ok
    result = log.verify(uri)
    assert not result.ok and "model news version 1" in result.reason


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_verify_exit_codes_and_json(cli, workspace):
    log = _sample_log(workspace / "audit.jsonl")
    ok = cli("audit", "verify", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True and json.loads(ok.stdout)["checked"] == 6
    assert "ok" in cli("audit", "verify").stdout
    _write(log.path, _swap(_lines(log.path)))
    bad = cli("audit", "verify", "--json")
    assert bad.exit_code == 1
    document = json.loads(bad.stdout)
    assert document["ok"] is False and document["first_bad_seq"] == 3
    assert "FAILED at record 3" in cli("audit", "verify").stdout


def test_cli_show_status_and_unknown_request(cli, workspace):
    _sample_log(workspace / "audit.jsonl")
    shown = cli("audit", "show", "--request", "req-1", "--json")
    assert shown.exit_code == 0
    assert [v["version"] for v in json.loads(shown.stdout)["versions"]] == ["1"]
    assert "deployment.started" in cli("audit", "show", "--request", "req-1").stdout
    missing = cli("audit", "show", "--request", "nope")
    assert missing.exit_code == 1 and "no record" in missing.stderr and "Traceback" not in missing.stderr
    status = cli("audit", "status", "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout)["satisfied"] == ["req-1"]
    assert "OVERDUE" in cli("audit", "status").stdout  # req-2's deadline was 2020-01-01


def test_cli_export_writes_a_sealed_bundle(cli, workspace, tmp_path):
    _sample_log(workspace / "audit.jsonl")
    out = tmp_path / "evidence.json"
    result = cli("audit", "export", "--request", "req-1", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    bundle = json.loads(out.read_text())
    assert bundle["bundle_sha256"] == bundle_digest(bundle) == json.loads(result.stdout)["bundle_sha256"]
    assert bundle["verification"]["ok"] is True
    assert bundle["chain_head"] == {"seq": 6, "hash": AuditLog(workspace / "audit.jsonl").head_hash()}
    assert {r["fields"].get("request_id") for r in bundle["records"]} >= {"req-1"}
    assert all("req-2" not in json.dumps(r) for r in bundle["records"])
    bundle["records"][0]["fields"]["request_sha256"] = "0" * 64
    assert bundle_digest(bundle) != bundle["bundle_sha256"]


# ---- the storage seam -----------------------------------------------------------------------------
class _ListStorage(audit.storage.AuditStorage):
    """A second backend (lines in a list, a threading lock): the seam a database backend implements."""

    def __init__(self):
        import threading

        self.rows: list[bytes] = []
        self.location = "memory:test"
        self._lock = threading.Lock()

    def exists(self):
        return bool(self.rows)

    def lines(self):
        return iter(list(self.rows))

    def last_line(self):
        return self.rows[-1] if self.rows else None

    def appending(self):
        import contextlib

        storage = self

        class Session(audit.storage.AppendSession):
            def last_line(self):
                return storage.last_line()

            def lines(self):
                return storage.lines()

            def append_line(self, line):
                storage.rows.append(line)

        @contextlib.contextmanager
        def section():
            with storage._lock:
                yield Session()

        return section()


def test_the_log_runs_the_same_on_another_storage_backend():
    storage = _ListStorage()
    log = AuditLog(storage)
    log.append(audit.REQUEST_RECEIVED, request_id="req-1")
    log.append(audit.RUN_STARTED, run_id="run-1", request_id="req-1")
    assert log.verify().ok and log.verify().checked == 2 and log.path is None
    assert [json.loads(row)["seq"] for row in storage.rows] == [1, 2]
    storage.rows[0] = storage.rows[0].replace(b"req-1", b"req-9")
    assert log.verify().first_bad_seq == 1
