"""Credentials in a tracking URI (http://user:password@host) never reach output, logs, params
or the audit log, and an unreachable server is a clear one-line error (exit 1).

MLflow's own exceptions quote the URL they called, password included; the CLI masks them
(registry.redact / registry.error_summary). Every command that talks to the tracking server is run
against a URI with a password and a closed port.
"""

from __future__ import annotations

import shutil

import pytest

from .conftest import CI_PIPELINE, write_request

SECRET = "s3cret"
URI = f"http://alice:{SECRET}@127.0.0.1:9"


@pytest.fixture
def secret_server(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", URI)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a closed port answers at once; no retry backoff
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


COMMANDS = {
    "run": ["run", "--request", "request.json", "--pipeline", str(CI_PIPELINE)],
    "models": ["models"],
    "models --tracking-uri": ["models", "--tracking-uri", URI],
    "promote": ["promote", "unlearnops-bench", "1"],
    "audit verify": ["audit", "verify"],
    "serve --dry-run": ["serve", "--model", "unlearnops-bench@production", "--dry-run"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_password_in_the_tracking_uri_never_appears_in_output_or_files(cli, workspace, tiny_bench, tmp_path, secret_server, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")  # so a run cannot start building a bench
    write_request(tmp_path / "request.json")
    result = cli(*COMMANDS[command])
    assert result.exit_code == 1, result
    assert "Traceback" not in result.stderr and "error:" in result.stderr
    assert "127.0.0.1:9" in result.stderr, result.stderr  # says which server failed
    assert SECRET not in result.stdout + result.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size < 2**26]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
