"""`--json` on every command: a failure (exit 1 or 2, usage errors included) prints one JSON object
on stdout with the reason under "error", what to fix under "field" and the exit code under
"exit_code" (errors.error_document), so a CI job parsing stdout gets the reason, not a decode
error. A command whose report is its output (validate, gate, audit verify) adds the same keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unlearnops.audit import REQUEST_RECEIVED, AuditLog

from .test_hostile_input import COMMANDS, FUZZ, option_values

REPO = Path(__file__).resolve().parents[2]
INVALID = REPO / "tests" / "data" / "invalid_requests"


def error_object(result, code: int) -> dict:
    """The one JSON object a failed --json command printed, checked against the contract."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)  # exactly one JSON document: anything else fails here
    assert isinstance(document, dict), document
    assert isinstance(document["error"], str) and document["error"].strip()
    assert document["field"] is None or isinstance(document["field"], str)
    assert document["exit_code"] == code
    return document


@FUZZ
@given(command=st.sampled_from(COMMANDS), args=st.lists(option_values, max_size=6), at=st.integers(0, 6))
def test_any_failing_json_command_line_prints_the_error_object(cli, workspace, tmp_path, monkeypatch, command, args, at):
    deep = tmp_path.joinpath(*"abcdefghij")
    deep.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(deep)  # a relative --out or --workspace lands under the test's directory
    args = [*args[:at], "--json", *args[at:]]
    result = cli(*command, *args)
    if result.exit_code in (1, 2):
        error_object(result, result.exit_code)


# command line -> (exit code, field); {dir} is the test's directory
USAGE = [
    (["validate", "--json"], "--request"),
    (["run", "--json"], "--request"),
    (["evaluate", "--json"], "--model"),
    (["quantize", "--model", "m", "--json"], "--scheme"),
    (["unlearn", "--json"], "--model"),
    (["gate", "--json"], "--policy"),
    (["register", "--json"], "--model"),
    (["serve", "--json"], "--model"),
    (["audit", "export", "--json"], "--request"),
    (["models", "--workspace", "", "--json"], "--workspace"),
    (["validate", "--request", "x.json", "--no-such-option", "--json"], "--no-such-option"),
    (["serve", "--model", "a@b", "--port", "70000", "--json"], "--port"),
    (["no-such-command", "--json"], None),
]


@pytest.mark.parametrize("args,field", USAGE, ids=[" ".join(args[:2]) for args, _ in USAGE])
def test_usage_errors_print_the_error_object_naming_the_option(cli, workspace, args, field):
    assert error_object(cli(*args), 2)["field"] == field


def test_failures_print_the_error_object_naming_the_field(cli, workspace, tmp_path):
    # an invalid request: the report, plus the first failure under the contract's keys
    invalid = error_object(cli("validate", "--request", INVALID / "bad-request-id.json", "--json"), 1)
    assert invalid["field"] == "request_id" and invalid["ok"] is False and invalid["checks"]
    assert error_object(cli("run", "--request", INVALID / "bad-request-id.json", "--json"), 1)["field"] == "request_id"

    # a failed gate: the gate report, plus the failed checks
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"verbmem_f": 99.0, "knowmem_f": 99.0, "knowmem_r": 40.0, "privleak": 0.0}))
    gate = error_object(cli("gate", "--metrics", metrics, "--policy", REPO / "pipelines" / "ci.yaml", "--json"), 1)
    assert "verbmem_f" in gate["error"] and gate["decision"] == "failed"

    # a registry miss, an unknown version to serve, a missing model directory
    assert "no versions" in error_object(cli("models", "nobody", "--json"), 1)["error"]
    assert error_object(cli("serve", "--model", "nobody@production", "--dry-run", "--json"), 1)
    assert error_object(cli("evaluate", "--model", tmp_path / "absent", "--corpus", tmp_path, "--json"), 1)

    # an audit log that does not verify: its result, plus the reason
    log = AuditLog(Path(workspace) / "audit.jsonl")
    log.append(REQUEST_RECEIVED, request_id="json-0001", request_sha256="0" * 64, deadline="2026-12-02T09:30:00+00:00")
    log.append(REQUEST_RECEIVED, request_id="json-0002", request_sha256="0" * 64, deadline="2026-12-02T09:30:00+00:00")
    lines = log.path.read_text().splitlines()
    log.path.write_text(lines[1] + "\n")  # the first record deleted
    verify = error_object(cli("audit", "verify", "--no-registry", "--json"), 1)
    assert verify["ok"] is False and "does not verify" in verify["error"]
