"""The shared audit log in PostgreSQL: append-only by the database's rules, one chain under
concurrent writers on separate machines, and the same records and commands as the file log."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from unlearnops.audit import REQUEST_RECEIVED, REQUEST_VALIDATED, RUN_FINISHED, RUN_STARTED, AuditLog
from unlearnops.audit.postgres import PostgresStorage


@pytest.fixture
def log_url(team, unique) -> str:
    return team.audit_url(f"test-{unique}")


def _fill(log: AuditLog, request_id: str = "req-1") -> None:
    log.append(REQUEST_RECEIVED, request_id=request_id, request_sha256="ab" * 32, deadline="2026-12-31T00:00:00Z")
    log.append(REQUEST_VALIDATED, request_id=request_id, report_sha256="cd" * 32)
    log.append(RUN_STARTED, run_id="run-1", request_id=request_id)
    log.append(RUN_FINISHED, run_id="run-1", request_id=request_id, status="gate-failed")


@pytest.fixture
def filled(team, log_url) -> tuple[PostgresStorage, list[tuple]]:
    """A log of four records, and its rows as the database holds them."""
    storage = PostgresStorage(log_url)
    _fill(AuditLog(storage))
    return storage, _rows(team, storage.log)


def _rows(team, log_name: str) -> list[tuple]:
    with team.connect() as connection:
        return connection.execute("SELECT seq, prev, hash, line FROM audit.records WHERE log = %s ORDER BY seq", (log_name,)).fetchall()


# ---- append-only, enforced by the database ------------------------------------------------------
@pytest.mark.parametrize("statement", [
    "UPDATE audit.records SET line = line WHERE log = %(log)s",
    "UPDATE audit.records SET seq = seq + 100 WHERE log = %(log)s",
    "DELETE FROM audit.records WHERE log = %(log)s AND seq = 4",
    "TRUNCATE audit.records",
    "ALTER TABLE audit.records DISABLE TRIGGER records_append_only",
    "DROP TABLE audit.records",
    "CREATE TABLE audit.shadow (line text)",
])
def test_the_application_role_cannot_change_or_remove_a_record(team, filled, statement):
    import psycopg

    storage, before = filled
    with team.connect() as connection, pytest.raises(psycopg.errors.InsufficientPrivilege):
        connection.execute(statement, {"log": storage.log})
    assert _rows(team, storage.log) == before
    assert AuditLog(storage).verify().ok


@pytest.mark.parametrize("statement", [
    "UPDATE audit.records SET line = line WHERE log = %(log)s",
    "DELETE FROM audit.records WHERE log = %(log)s AND seq = 4",
    "TRUNCATE audit.records",
])
def test_even_the_tables_owner_cannot_change_or_remove_a_record(team, filled, statement):
    """The triggers hold for every role but a superuser (who can drop them: see the next test)."""
    import psycopg

    storage, before = filled
    with team.connect(as_role="postgres") as connection:
        connection.execute("SET ROLE unlearnops_audit_owner")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            connection.execute(statement, {"log": storage.log})
    assert _rows(team, storage.log) == before


def test_a_superuser_who_drops_the_guard_and_edits_a_record_is_caught_by_verify(team, filled):
    """The honest limit of a database guard: a superuser can rewrite rows; the hash chain shows it."""
    storage, _ = filled
    with team.connect(as_role="postgres") as connection, connection.transaction():
        connection.execute("ALTER TABLE audit.records DISABLE TRIGGER records_append_only")
        edited = connection.execute(
            "UPDATE audit.records SET line = replace(line, '\"gate-failed\"', '\"registered\"') "
            "WHERE log = %s AND line LIKE '%%gate-failed%%' RETURNING seq",
            (storage.log,),
        ).fetchone()[0]
        connection.execute("ALTER TABLE audit.records ENABLE TRIGGER records_append_only")
    result = AuditLog(storage).verify()
    assert not result.ok and result.first_bad_seq == edited and "hash" in result.reason


def test_the_database_refuses_a_record_that_does_not_extend_the_head(team, filled):
    """Even a writer that skips the client's lock and checks cannot fork or gap the chain."""
    import psycopg

    storage, rows = filled
    log = AuditLog(storage)
    second = json.loads(rows[1][3])
    fork = {**second, "seq": 3, "prev": second["prev"], "hash": "ee" * 32}  # a sibling of record 2
    stale = {**second, "seq": 5, "prev": rows[2][2], "hash": "ff" * 32}  # extends record 3, not the head (4)
    gap = {**second, "seq": 7, "prev": rows[3][2], "hash": "aa" * 32}
    with team.connect() as connection:
        for bad in (fork, stale, gap):
            with pytest.raises(psycopg.errors.SerializationFailure, match="does not extend the head"):
                connection.execute("INSERT INTO audit.records (log, line) VALUES (%s, %s)", (storage.log, json.dumps(bad)))
        for not_a_record in ("not json", "[1, 2]", json.dumps({"seq": 5})):
            with pytest.raises(psycopg.errors.CheckViolation):
                connection.execute("INSERT INTO audit.records (log, line) VALUES (%s, %s)", (storage.log, not_a_record))
    assert _rows(team, storage.log) == rows
    assert log.verify().ok


# ---- concurrent writers ----------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from unlearnops.audit import AuditLog, RUN_STARTED
    from unlearnops.audit.backends import storage_for
    from unlearnops.workspace import Workspace

    name, count, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    log = AuditLog(storage_for(Workspace.resolve()))
    while not go.exists():   # every writer starts appending at the same moment
        time.sleep(0.01)
    for number in range(count):
        log.append(RUN_STARTED, run_id=f"{name}-{number}", request_id=name)
""")


def test_concurrent_appends_from_separate_workspaces_leave_one_verifying_chain(team, log_url, tmp_path, cli, monkeypatch):
    writers, per_writer = 4, 25
    go = tmp_path / "go"
    env_base = {key: value for key, value in __import__("os").environ.items()}
    processes = []
    for number in range(writers):
        workspace = tmp_path / f"machine-{number}"
        workspace.mkdir()
        env = {**env_base, "UNLEARNOPS_HOME": str(workspace), "UNLEARNOPS_AUDIT_URL": log_url}
        processes.append(subprocess.Popen([sys.executable, "-c", WRITER, f"writer{number}", str(per_writer), str(go)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    time.sleep(1.0)
    go.touch()
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err.decode()[-2000:]

    storage = PostgresStorage(log_url)
    log = AuditLog(storage)
    result = log.verify()
    assert result.ok, result
    records = log.records()
    appended = [r for r in records if r["event"] == RUN_STARTED]  # the log's own first record aside
    assert len(appended) == writers * per_writer
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["prev"] for r in records}) == len(records)  # no record shares a parent: no fork
    for number in range(writers):  # every writer's records are there, in its own order
        mine = [r["fields"]["run_id"] for r in appended if r["fields"]["request_id"] == f"writer{number}"]
        assert mine == [f"writer{number}-{i}" for i in range(per_writer)]
    # The rows interleave: the writers really did append at the same time.
    owners = [r["fields"]["request_id"] for r in appended]
    assert sum(1 for a, b in zip(owners, owners[1:]) if a != b) >= writers

    monkeypatch.setenv("UNLEARNOPS_AUDIT_URL", log_url)
    verified = cli("audit", "verify", "--no-registry", "--json")
    assert verified.exit_code == 0, verified
    assert json.loads(verified.stdout)["checked"] == len(records)


def test_a_machine_that_joins_the_team_verifies_and_writes_the_shared_log(team, filled, tmp_path, cli, workspace, monkeypatch):
    """docs/team.md gives every machine a witness of its own: a new engineer's witness has never seen the
    shared log. Its first verify checks every record's signature and says so (it is not a witness that
    lost the log's checkpoint), its commands work, and its first append pins a checkpoint it then keeps."""
    storage, _ = filled
    fresh = tmp_path / "new-machine-witness"
    result = AuditLog(storage, witness=fresh).verify()
    assert result.ok, result.problems
    assert any("no checkpoint of this shared log yet" in notice for notice in result.notices)
    monkeypatch.setenv("UNLEARNOPS_AUDIT_URL", storage_url := f"{team.postgres['audit_dsn']}?log={storage.log}")
    monkeypatch.setenv("UNLEARNOPS_AUDIT_WITNESS", str(fresh))
    for command in (("audit", "verify", "--no-registry"), ("audit", "status", "--no-registry"), ("audit", "show", "--request", "req-1", "--no-registry")):
        answered = cli(*command)
        assert answered.exit_code == 0, (command, answered.stdout, answered.stderr)
    joined = AuditLog(PostgresStorage(storage_url), witness=fresh)
    joined.append(RUN_STARTED, run_id="run-new-machine", request_id="req-1")
    assert joined.checkpoint_note() is not None and AuditLog(storage, witness=fresh).verify().notices == []
    # A file log keeps the strict rule: a witness without its checkpoint is a removed or wrong witness.
    single = AuditLog(tmp_path / "one-user" / "audit.jsonl", witness=tmp_path / "witness-a")
    single.append(RUN_STARTED, run_id="run-1")
    lost = AuditLog(single.path, witness=tmp_path / "witness-b").verify()
    assert not lost.ok and "the witness was removed" in lost.reason


# ---- the same records and commands as the file log -------------------------------------------------
def test_the_records_are_the_file_logs_records_byte_for_byte(team, log_url, tmp_path):
    storage = PostgresStorage(log_url)
    log = AuditLog(storage)
    _fill(log)
    exported = tmp_path / "audit.jsonl"
    exported.write_bytes(b"".join(line + b"\n" for line in storage.lines()))
    as_file = AuditLog(exported)
    assert as_file.verify().ok
    assert as_file.records() == log.records()
    assert as_file.head_hash() == log.head_hash()


def test_verify_status_show_and_export_work_the_same_on_either_backend(team, log_url, tmp_path, cli, workspace, monkeypatch):
    file_log = AuditLog(tmp_path / "file-audit.jsonl")
    _fill(file_log)
    _fill(AuditLog(PostgresStorage(log_url)))

    def outputs(url: str | None, home: Path) -> dict:
        monkeypatch.setenv("UNLEARNOPS_HOME", str(home))
        if url:
            monkeypatch.setenv("UNLEARNOPS_AUDIT_URL", url)
        else:
            monkeypatch.delenv("UNLEARNOPS_AUDIT_URL", raising=False)
        results = {
            "verify": cli("audit", "verify", "--no-registry", "--json"),
            "status": cli("audit", "status", "--json"),
            "show": cli("audit", "show", "--request", "req-1", "--json"),
            "export": cli("audit", "export", "--request", "req-1", "--no-registry", "--out", str(home / "bundle.json"), "--json"),
        }
        for name, result in results.items():
            assert result.exit_code == 0, (name, result)
        return {name: json.loads(result.stdout) for name, result in results.items()} | {"bundle": json.loads((home / "bundle.json").read_text())}

    file_home = tmp_path / "file-workspace"
    file_home.mkdir()
    (file_home / "audit.jsonl").write_bytes((tmp_path / "file-audit.jsonl").read_bytes())
    on_file, on_postgres = outputs(None, file_home), outputs(log_url, workspace)

    assert on_postgres["verify"]["ok"] and on_postgres["verify"]["checked"] == on_file["verify"]["checked"] == len(file_log.records())
    assert on_postgres["verify"]["log"].startswith("postgresql://") and "unlearnops@" not in on_postgres["verify"]["log"]
    for key in ("satisfied", "rejected", "records"):
        assert on_postgres["status"][key] == on_file["status"][key]
    assert [p["request_id"] for p in on_postgres["status"]["pending"]] == [p["request_id"] for p in on_file["status"]["pending"]] == ["req-1"]
    events = lambda shown: [record["event"] for record in shown["records"]]  # noqa: E731
    assert events(on_postgres["show"]) == events(on_file["show"]) == [REQUEST_RECEIVED, REQUEST_VALIDATED, RUN_STARTED, RUN_FINISHED]
    assert on_postgres["export"]["verified"] and on_file["export"]["verified"]
    assert on_postgres["bundle"]["verification"]["ok"] and len(on_postgres["bundle"]["records"]) == 4


# ---- configuration and credentials ----------------------------------------------------------------
def test_a_password_in_the_audit_url_is_used_but_never_printed(team, unique, tmp_path, cli, workspace, monkeypatch):
    password = Path(team.postgres["audit_pgpass"]).read_text().strip().rsplit(":", 1)[1]
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass either: the URL is the only source
    host_part = team.postgres["audit_dsn"].removeprefix("postgresql://unlearnops@")
    monkeypatch.setenv("UNLEARNOPS_AUDIT_URL", f"postgresql://unlearnops:{password}@{host_part}?log=pw-{unique}")
    _fill(AuditLog(PostgresStorage(f"postgresql://unlearnops:{password}@{host_part}?log=pw-{unique}")))
    for args in (("audit", "verify", "--no-registry"), ("audit", "status", "--json"), ("audit", "show", "--request", "req-1"),
                 ("audit", "show", "--request", "nope")):
        result = cli(*args)
        assert password not in result.stdout + result.stderr, args
    assert not [p for p in workspace.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]


def test_an_unreachable_database_or_a_missing_table_is_a_one_line_error(team, cli, workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARNOPS_AUDIT_URL", "postgresql://unlearnops:s3cret@127.0.0.1:9/unlearnops?log=x")
    refused = cli("audit", "verify", "--no-registry")
    assert refused.exit_code == 1 and "Traceback" not in refused.stderr
    assert "cannot connect" in refused.stderr and "127.0.0.1:9" in refused.stderr and "s3cret" not in refused.stderr

    monkeypatch.setenv("PGPASSFILE", team.postgres["mlflow_pgpass"])
    monkeypatch.setenv("UNLEARNOPS_AUDIT_URL", team.postgres["mlflow_dsn"].rsplit("/", 1)[0] + "/mlflow_auth?log=x")
    missing = cli("audit", "status")
    assert missing.exit_code == 1 and "Traceback" not in missing.stderr
    assert "no audit.records table" in missing.stderr and "20-audit.sql" in missing.stderr

    monkeypatch.setenv("UNLEARNOPS_AUDIT_URL", team.audit_url("bad name!"))
    named = cli("audit", "status")
    assert named.exit_code == 1 and "log name" in named.stderr

    monkeypatch.setenv("UNLEARNOPS_AUDIT_URL", "mysql://db/unlearnops")
    scheme = cli("audit", "status")
    assert scheme.exit_code == 1 and "UNLEARNOPS_AUDIT_URL" in scheme.stderr and "postgresql://" in scheme.stderr
