"""The signed audit log: records, keys, witness, concurrency, hostile bytes, queries, the CLI and the storage seam.

Every tamper class of issue 13 is in tests/test_audit_tamper.py; this file covers the log's own behaviour.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from unlearnops import audit
from unlearnops.audit import AuditLog, bundle_digest, record_hash
from unlearnops.audit.signing import PublicKey, SigningKey, open_checkpoint
from unlearnops.audit.witness import WitnessDir
from unlearnops.errors import UnlearnopsError
from unlearnops.fileio import canonical_json


def _sample_log(path: Path) -> AuditLog:
    """Record 1 is log.created, then one request's life: received -> gate -> version -> deployment."""
    log = AuditLog(path)
    log.append(audit.REQUEST_RECEIVED, request_id="req-1", request_sha256="a" * 64, received_at="2026-11-01T08:00:00Z", deadline="2026-12-01T00:00:00Z")
    log.append(audit.RUN_STARTED, run_id="run-1", request_id="req-1")
    log.append(audit.GATE_DECIDED, run_id="run-1", passed=True, gate_report_sha256="b" * 64)
    log.append(audit.VERSION_REGISTERED, run_id="run-1", name="news", version=1, request_ids=["req-1"], model_sha256="c" * 64,
               gate_passed=True, role="unlearned")
    log.append(audit.DEPLOYMENT_STARTED, deployment_id="dep-1", name="news", version="1", request_ids=["req-1"])
    log.append(audit.REQUEST_RECEIVED, request_id="req-2", deadline="2020-01-01")
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_records_are_chained_signed_and_checkpointed(tmp_path):
    log = _sample_log(tmp_path / "audit.jsonl")
    records = log.records()
    assert [r["seq"] for r in records] == list(range(1, 8))
    created = records[0]
    assert created["event"] == audit.LOG_CREATED and created["prev"] == audit.GENESIS
    key = log.signing_key().public
    assert created["fields"]["public_key"] == key.vkey and created["fields"]["key_fingerprint"] == key.fingerprint
    assert all(later["prev"] == earlier["hash"] for earlier, later in zip(records, records[1:]))
    assert all(record_hash(r) == r["hash"] for r in records)
    # Each line is exactly the record's canonical JSON: any JCS library can re-check the hashes.
    assert _lines(log.path)[1] == canonical_json(records[1]).decode() + "\n"
    checkpoint = open_checkpoint(log.checkpoint_note(), key)
    assert (checkpoint.log_id, checkpoint.size, checkpoint.head_hash) == (created["fields"]["log_id"], 7, records[-1]["hash"])
    result = log.verify()
    assert result.ok, result.reason
    assert (result.checked, result.head_hash, result.checkpoint["size"]) == (7, records[-1]["hash"], 7)


def test_the_checkpoint_is_a_c2sp_signed_note(tmp_path):
    """Origin, size, base64 head, a blank line, '— name base64(keyid || signature)' (c2sp.org/tlog-checkpoint)."""
    import base64

    log = _sample_log(tmp_path / "audit.jsonl")
    body, _, signature_line = log.checkpoint_note().rpartition("\n\n")
    origin, size, head = body.split("\n")
    assert origin == "unlearnops.audit/" + log.records()[0]["fields"]["log_id"] and size == "7"
    assert base64.b64decode(head).hex() == log.head_hash()
    assert signature_line.startswith("\u2014 unlearnops.audit ")
    raw = base64.b64decode(signature_line.split(" ")[2])
    key = log.signing_key().public
    assert raw[:4] == key.key_id and key.verifies(raw[4:], (body + "\n").encode())
    assert PublicKey.from_vkey(key.vkey) == key


def test_empty_log_verifies(tmp_path):
    log = AuditLog(tmp_path / "none.jsonl")
    assert log.verify().ok and log.verify().checked == 0 and log.head_hash() == audit.GENESIS


def test_the_key_is_created_on_first_use_with_0600_outside_the_workspace(tmp_path, monkeypatch):
    key_path = tmp_path / "secrets" / "audit.pem"
    monkeypatch.setenv(audit.KEY_ENV, str(key_path))
    log = AuditLog(tmp_path / "ws" / "audit.jsonl")
    log.append(audit.RUN_STARTED, run_id="r")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600 and stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    os.chmod(key_path, 0o644)
    with pytest.raises(UnlearnopsError, match="chmod 600"):
        AuditLog(tmp_path / "ws" / "audit.jsonl").append(audit.RUN_STARTED, run_id="r2")


def test_a_key_or_witness_inside_the_workspace_is_refused(tmp_path, monkeypatch):
    workspace = tmp_path / "ws"
    monkeypatch.setenv(audit.KEY_ENV, str(workspace / "key.pem"))
    with pytest.raises(UnlearnopsError, match="inside .* which holds the audit log"):
        AuditLog(workspace / "audit.jsonl").append(audit.RUN_STARTED, run_id="r")
    monkeypatch.setenv(audit.KEY_ENV, str(tmp_path / "key.pem"))
    monkeypatch.setenv(audit.WITNESS_ENV, str(workspace / "witness"))
    with pytest.raises(UnlearnopsError, match="UNLEARNOPS_AUDIT_WITNESS"):
        AuditLog(workspace / "audit.jsonl").append(audit.RUN_STARTED, run_id="r")
    assert not (workspace / "audit.jsonl").exists()


def test_an_auditor_verifies_with_the_public_key_alone_and_never_with_none(tmp_path, monkeypatch):
    log = _sample_log(tmp_path / "audit.jsonl")
    vkey = log.signing_key().public.vkey
    monkeypatch.setenv(audit.KEY_ENV, str(tmp_path / "absent.pem"))
    no_key = AuditLog(log.path).verify()
    assert not no_key.ok and "no key to verify" in no_key.reason
    assert not (tmp_path / "absent.pem").exists()  # verification never creates a key
    monkeypatch.setenv(audit.PUBLIC_KEY_ENV, vkey)
    assert AuditLog(log.path).verify().ok
    monkeypatch.setenv(audit.PUBLIC_KEY_ENV, SigningKey.generate().public.vkey)
    other = AuditLog(log.path).verify()
    assert (other.ok, other.first_bad_seq) == (False, 1) and "not the configured key" in other.reason


@pytest.mark.parametrize(
    ("event", "fields", "message"),
    [
        ("request.recieved", {"request_id": "r"}, "did you mean 'request.received'"),
        (audit.GATE_DECIDED, {"passed": True}, "missing field(s) gate_report_sha256"),
        (audit.GATE_DECIDED, {"passed": "yes", "gate_report_sha256": "b" * 64}, "must be true or false"),
        (audit.GATE_DECIDED, {"passed": True, "gate_report_sha256": "not-a-hash"}, "64 lowercase hex"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "note": "x" * 257}, "never texts"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "request_ids": ["y" * 300]}, "never texts"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "score": 0.5}, "float is not allowed"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "count": 2**60}, "2^53"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "Bad-Name": "1"}, "lower_snake_case"),
        (audit.REQUEST_RECEIVED, {"request_id": "r", "deadline": "next week"}, "not an ISO 8601"),
        (audit.LOG_CREATED, {"log_id": "x", "public_key": "k", "key_fingerprint": "f"}, "written by the log itself"),
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


def test_time_never_runs_backwards_in_the_log(tmp_path, monkeypatch):
    log = _sample_log(tmp_path / "audit.jsonl")
    monkeypatch.setattr(audit.records, "utc_now", lambda: "2001-01-01T00:00:00.000000Z")  # a clock stepped back
    record = log.append(audit.RUN_STARTED, run_id="after-the-step")
    assert record["timestamp"] == log.records()[-2]["timestamp"]
    assert log.verify().ok


def test_append_refuses_a_damaged_tail(tmp_path):
    log = _sample_log(tmp_path / "audit.jsonl")
    lines = _lines(log.path)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    log.path.write_text("".join(lines))
    with pytest.raises(UnlearnopsError, match="last record is damaged"):
        log.append(audit.REQUEST_RECEIVED, request_id="req-3")


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda line: line[:20] + b"\xff\xfe" + line[20:], "not valid UTF-8"),
        (lambda line: line.replace(b'"run_id":"run-1"', b'"run_id":' + b"9" * 5000), "integer too long"),
        (lambda line: b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    ],
    ids=["non-utf8-byte", "5000-digit-integer", "deep-nesting"],
)
def test_hostile_bytes_in_the_log_are_named_never_a_traceback(tmp_path, cli, workspace, damage, words):
    log = _sample_log(workspace / "audit.jsonl")
    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[2] = damage(lines[2].rstrip(b"\n")) + b"\n"
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3) and words in result.reason
    with pytest.raises(UnlearnopsError, match="record 3"):
        log.records()
    for command in (("audit", "verify"), ("audit", "status"), ("audit", "show", "--request", "req-1")):
        answered = cli(*command)
        assert answered.exit_code == 1 and "record 3" in answered.stdout + answered.stderr
        assert "Traceback" not in answered.stdout + answered.stderr


HUGE_LINE_CHECK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # 3 GiB of address space: a whole 8 GiB line cannot fit
from unlearnops.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("position", ["end", "middle"])
def test_a_huge_line_in_the_log_is_named_without_reading_it_whole(tmp_path, position):
    """Someone with write access to the workspace appends (or inserts) an 8 GiB line without a newline (a
    sparse file: no disk used): verify and status name the damaged record after reading a bounded part
    of it, and append refuses to extend a log whose last record is damaged."""
    import subprocess
    import sys

    log = _sample_log(tmp_path / "workspace" / "audit.jsonl")
    lines = log.path.read_bytes().splitlines(keepends=True)
    with open(log.path, "wb") as handle:
        handle.write(b"".join(lines if position == "end" else lines[:3]))
        handle.truncate(handle.tell() + (8 << 30))  # 8 GiB of zero bytes, no newline
        if position == "middle":
            handle.seek(0, 2)
            handle.write(b"\n" + b"".join(lines[3:]))
    damaged = len(lines) + 1 if position == "end" else 4
    for command in (["audit", "verify", "--no-registry", "--json"], ["audit", "status", "--no-registry"]):
        answered = subprocess.run([sys.executable, "-c", HUGE_LINE_CHECK, *command, "--workspace", str(log.path.parent)],
                                  capture_output=True, text=True, timeout=300)
        shown = answered.stdout + answered.stderr
        assert answered.returncode == 1 and "Traceback" not in shown and "MemoryError" not in shown, shown[-2000:]
        assert f"record {damaged}" in shown and "more than a record can be" in shown, shown[-2000:]
    if position == "end":
        with pytest.raises(UnlearnopsError, match="last record is damaged"):
            log.append(audit.RUN_STARTED, run_id="after-the-huge-line")


def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(path)
    for index in range(count):
        log.append(audit.RUN_STARTED, run_id=f"w{worker}-{index}")


def test_concurrent_writers_never_fork_the_chain_and_the_witness_keeps_up(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).signing_key()  # create the key once, before the writers race for it
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
    assert len(records) == 101 and [r["event"] for r in records].count(audit.LOG_CREATED) == 1
    assert len({r["fields"].get("run_id") for r in records[1:]}) == 100
    assert len({r["prev"] for r in records}) == 101  # no two records claim the same parent
    assert result.checkpoint["size"] == 101  # checkpoints are written inside the lock: the witness never regresses


def test_lineage_follows_runs_versions_and_deployments(tmp_path):
    log = _sample_log(tmp_path / "audit.jsonl")
    log.append(audit.ALIAS_MOVED, name="news", alias="production", version=1)
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


def test_status_reports_live_satisfied_pending_once_and_closed(tmp_path):
    log = _sample_log(tmp_path / "audit.jsonl")
    log.append(audit.REQUEST_RECEIVED, request_id="req-3")
    log.append(audit.REQUEST_REJECTED, request_id="req-3", reason_code="schema")
    log.append(audit.REQUEST_RECEIVED, request_id="req-2", deadline="2020-01-01")  # a retry: the same request again
    now = datetime(2026, 11, 30, tzinfo=timezone.utc)
    status = log.status(now=now)
    assert [d["deployment_id"] for d in status["live"]] == ["dep-1"]
    assert status["satisfied"] == ["req-1"]
    assert [(p["request_id"], p["attempts"]) for p in status["pending"]] == [("req-2", 2)]
    assert status["pending"][0]["overdue"] is True and status["pending"][0]["hours_left"] < 0
    assert status["rejected"] == ["req-3"]
    log.append(audit.DEPLOYMENT_STOPPED, deployment_id="dep-1")
    after = log.status(now=now + timedelta(hours=1))
    assert after["live"] == [] and after["satisfied"] == []
    pending = {p["request_id"]: p for p in after["pending"]}
    # "received" is the request's own received_at, not when unlearnops first saw it.
    assert pending["req-1"]["received"] == "2026-11-01T08:00:00Z" and pending["req-1"]["first_seen"] != "2026-11-01T08:00:00Z"
    log.append(audit.REQUEST_CLOSED, request_id="req-2", reason="runs failed: model withdrawn")
    closed = log.status(now=now)
    assert "req-2" not in {p["request_id"] for p in closed["pending"]}
    assert closed["closed"] == [{"request_id": "req-2", "reason": "runs failed: model withdrawn", "closed": closed["closed"][0]["closed"]}]


def test_a_superseded_request_is_not_satisfied_by_a_version_measured_on_its_old_content(tmp_path):
    """`run --supersede` replaces a request's content (say, a forget set extended): the live version,
    registered and measured on the old content's data, no longer satisfies it, and neither does a
    later version that only inherited the old content's claim; a version registered on data
    validated for the new content does."""
    old, new = "1" * 64, "2" * 64
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(audit.REQUEST_RECEIVED, request_id="req-1", request_content_sha256=old, deadline="2026-12-01T00:00:00Z")
    log.append(audit.REQUEST_VALIDATED, request_id="req-1", request_content_sha256=old, data_sha256="d" * 64)
    log.append(audit.VERSION_REGISTERED, name="news", version=1, request_ids=["req-1"], request_data=["req-1=" + "d" * 64],
               model_sha256="c" * 64, gate_passed=True, role="unlearned")
    log.append(audit.DEPLOYMENT_STARTED, deployment_id="dep-1", name="news", version="1", request_ids=["req-1"])
    assert log.status()["satisfied"] == ["req-1"]
    log.append(audit.REQUEST_SUPERSEDED, request_id="req-1", previous_content_sha256=old, request_content_sha256=new)
    log.append(audit.REQUEST_RECEIVED, request_id="req-1", request_content_sha256=new, deadline="2026-12-01T00:00:00Z")
    status = log.status()
    assert status["satisfied"] == [] and [p["request_id"] for p in status["pending"]] == ["req-1"]
    log.append(audit.REQUEST_VALIDATED, request_id="req-1", request_content_sha256=new, data_sha256="e" * 64)
    log.append(audit.REQUEST_RECEIVED, request_id="req-2", request_content_sha256="3" * 64)
    log.append(audit.REQUEST_VALIDATED, request_id="req-2", request_content_sha256="3" * 64, data_sha256="f" * 64)
    # news/2 unlearned req-2 from news/1: it inherits news/1's claim on req-1's OLD data
    log.append(audit.VERSION_REGISTERED, name="news", version=2, request_ids=["req-1", "req-2"],
               request_data=["req-1=" + "d" * 64, "req-2=" + "f" * 64], model_sha256="a" * 64, gate_passed=True, role="unlearned")
    log.append(audit.DEPLOYMENT_STOPPED, deployment_id="dep-1")
    log.append(audit.DEPLOYMENT_STARTED, deployment_id="dep-2", name="news", version="2", request_ids=["req-1", "req-2"])
    assert log.status()["satisfied"] == ["req-2"]
    log.append(audit.VERSION_REGISTERED, name="news", version=3, request_ids=["req-1", "req-2"],
               request_data=["req-1=" + "e" * 64, "req-2=" + "f" * 64], model_sha256="b" * 64, gate_passed=True, role="unlearned")
    log.append(audit.DEPLOYMENT_STOPPED, deployment_id="dep-2")
    log.append(audit.DEPLOYMENT_STARTED, deployment_id="dep-3", name="news", version="3", request_ids=["req-1", "req-2"])
    status = log.status()
    assert status["satisfied"] == ["req-1", "req-2"] and status["pending"] == []


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_verify_exit_codes_and_json(cli, workspace):
    log = _sample_log(workspace / "audit.jsonl")
    ok = cli("audit", "verify", "--json")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    document = json.loads(ok.stdout)
    assert document["ok"] is True and document["checked"] == 7 and document["key_fingerprint"] == log.signing_key().public.fingerprint
    assert "ok" in cli("audit", "verify").stdout
    lines = _lines(log.path)
    lines[3], lines[4] = lines[4], lines[3]
    log.path.write_text("".join(lines))
    bad = cli("audit", "verify", "--json")
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["ok"] is False and json.loads(bad.stdout)["first_bad_seq"] == 4
    assert "FAILED" in cli("audit", "verify").stdout


def test_cli_show_status_close_and_unknown_request(cli, workspace):
    _sample_log(workspace / "audit.jsonl")
    shown = cli("audit", "show", "--request", "req-1", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert [v["version"] for v in json.loads(shown.stdout)["versions"]] == [1]
    assert "deployment.started" in cli("audit", "show", "--request", "req-1").stdout
    missing = cli("audit", "show", "--request", "nope")
    assert missing.exit_code == 1 and "no record" in missing.stderr and "Traceback" not in missing.stderr
    status = cli("audit", "status", "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout)["satisfied"] == ["req-1"]
    human = cli("audit", "status").stdout
    assert "OVERDUE" in human and "overdue" in human  # the flag column has a header
    closed = cli("audit", "close", "--request", "req-2", "--reason", "withdrawn by the requester", "--json")
    assert closed.exit_code == 0 and json.loads(closed.stdout)["event"] == audit.REQUEST_CLOSED
    again = cli("audit", "close", "--request", "req-2", "--reason", "again")
    assert again.exit_code == 1 and "already closed" in again.stderr
    assert cli("audit", "close", "--request", "nobody", "--reason", "x").exit_code == 1
    assert json.loads(cli("audit", "status", "--json").stdout)["pending"] == []


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["audit", "close", "--request", "nobody", "--reason", "withdrawn"], "--request"),
        (["audit", "close", "--request", "req-2", "--reason", " "], "--reason"),
        (["audit", "show", "--request", "nobody", "--no-registry"], "--request"),
        (["audit", "export", "--request", "nobody", "--out", "bundle.json", "--no-registry"], "--request"),
        (["audit", "bind-registry", "--reason", "two\nlines"], "--reason"),
        (["audit", "key"], "$UNLEARNOPS_AUDIT_KEY"),
    ],
    ids=["close-unknown", "close-reason", "show", "export", "bind-registry", "key"],
)
def test_evidence_commands_name_what_to_fix_in_their_json_errors(cli, workspace, tmp_path, monkeypatch, args, field):
    _sample_log(workspace / "audit.jsonl")
    monkeypatch.chdir(tmp_path)
    if field == "$UNLEARNOPS_AUDIT_KEY":  # a key other users can read
        loose = tmp_path / "loose.pem"
        loose.write_bytes(Path(os.environ["UNLEARNOPS_AUDIT_KEY"]).read_bytes())
        loose.chmod(0o644)
        monkeypatch.setenv("UNLEARNOPS_AUDIT_KEY", str(loose))
    result = cli(*args, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr, result.stderr
    document = json.loads(result.stdout)
    assert document["exit_code"] == 1 and document["field"] == field, document
    assert not (tmp_path / "bundle.json").exists()


def test_cli_status_and_show_refuse_loudly_when_the_log_does_not_verify(cli, workspace):
    log = _sample_log(workspace / "audit.jsonl")
    log.path.write_text("".join(_lines(log.path)[:-1]))  # the last record cut
    for command in (("audit", "status"), ("audit", "show", "--request", "req-1")):
        answered = cli(*command)
        assert answered.exit_code == 1
        assert "does not verify" in answered.stderr and "record 7 missing" in answered.stderr


def test_cli_export_writes_a_sealed_bundle_with_the_signed_checkpoint(cli, workspace, tmp_path):
    log = _sample_log(workspace / "audit.jsonl")
    out = tmp_path / "evidence.json"
    result = cli("audit", "export", "--request", "req-1", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    bundle = json.loads(out.read_text())
    assert bundle["bundle_sha256"] == bundle_digest(bundle) == json.loads(result.stdout)["bundle_sha256"]
    assert bundle["verification"]["ok"] is True
    assert bundle["chain_head"] == {"seq": 7, "hash": log.head_hash()}
    assert open_checkpoint(bundle["checkpoint"], PublicKey.from_vkey(bundle["public_key"])).head_hash == log.head_hash()
    assert {r["fields"].get("request_id") for r in bundle["records"]} >= {"req-1"}
    assert all("req-2" not in json.dumps(r) for r in bundle["records"])
    bundle["records"][0]["fields"]["request_sha256"] = "0" * 64
    assert bundle_digest(bundle) != bundle["bundle_sha256"]


def test_cli_key_shows_the_public_key(cli, workspace):
    shown = cli("audit", "key", "--json")
    assert shown.exit_code == 0
    document = json.loads(shown.stdout)
    assert PublicKey.from_vkey(document["public_key"]).fingerprint == document["fingerprint"]
    assert document["key_path"] == os.environ[audit.KEY_ENV]


# ---- the storage seam -----------------------------------------------------------------------------
class _ListStorage(audit.storage.AuditStorage):
    """A second backend (lines in a list, a threading lock): the seam a database backend implements."""

    def __init__(self):
        import threading

        self.rows: list[bytes] = []
        self.location = "memory:test-" + os.urandom(4).hex()
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


def test_the_log_signs_and_checkpoints_the_same_on_another_storage_backend():
    storage = _ListStorage()
    log = AuditLog(storage)
    log.append(audit.REQUEST_RECEIVED, request_id="req-1")
    log.append(audit.RUN_STARTED, run_id="run-1", request_id="req-1")
    result = log.verify()
    assert result.ok and result.checked == 3 and log.path is None and result.checkpoint["size"] == 3
    assert [json.loads(row)["seq"] for row in storage.rows] == [1, 2, 3]
    storage.rows.pop()  # the backend's last row removed
    assert log.verify().first_bad_seq == 3
    assert WitnessDir().read(storage.location) is not None
