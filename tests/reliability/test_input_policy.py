"""Input the tool reads from a user, under one policy each, answered with a message (never a traceback):

- numbers: an integer of thousands of digits in a request, a data file, a corpus file, a policy
  or a pipeline YAML (Python refuses to convert over 4,300 digits with a bare ValueError);
- duplicate keys (JSON and YAML): "last wins" would let a reader and the tool see different values;
- schema_version must be the integer 1 (not true, not 1.0);
- the near-duplicate normaliser does what docs/requests.md says, across and within lists, and a
  retain set equal to the forget set (exactly or after normalising) is refused, not a KeyError;
- paths and workspaces: a 1,024-character path, `--workspace ""`, `--workspace /proc`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from unlearnops.request import validate_request
from unlearnops.request.checks import normalise

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "invalid_requests"
HUGE_INT = "9" * 5000


@pytest.fixture
def request_dir(tmp_path) -> Path:
    """A copy of the valid baseline request and its data files (the request is request.json)."""
    root = tmp_path / "request"
    shutil.copytree(DATA / "data", root / "data")
    shutil.copy(DATA / "valid-baseline.json", root / "request.json")
    return root


def rewrite(path: Path, edit) -> Path:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    return path


def failures(report) -> dict[str, str]:
    return {check.field: check.message for check in report.failures}


def assert_message(result, *words: str, code: int = 1) -> dict:
    """Exit `code`, the --json error object on stdout, the words in its message, no traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    document = json.loads(result.stdout)
    text = document["error"] + " " + " ".join(check["message"] for check in document.get("checks", []))
    for word in words:
        assert word in text, text
    return document


# ---- one number policy, one duplicate-key policy --------------------------------------------------


def test_a_huge_integer_is_refused_with_a_message_wherever_it_is_read(cli, workspace, request_dir, tmp_path):
    request = request_dir / "request.json"
    # the request itself
    request.write_text(request.read_text().replace('"max_verbmem_f": 25', f'"max_verbmem_f": {HUGE_INT}'))
    assert_message(cli("validate", "--request", request, "--json"), "an integer of 5000 digits")
    assert_message(cli("run", "--request", request, "--json"), "an integer of 5000 digits")
    shutil.copy(DATA / "valid-baseline.json", request)
    # a data file and a corpus file
    (request_dir / "data" / "holdout.json").write_text(f'["a text", {HUGE_INT}]')
    document = assert_message(cli("validate", "--request", request, "--json"), "an integer of 5000 digits")
    assert document["field"] == "holdout.texts"
    corpus = request_dir / "corpus"
    (corpus / "raw").mkdir(parents=True)
    (corpus / "raw" / "forget.json").write_text(f"[{HUGE_INT}]")
    rewrite(request, lambda doc: doc.update(forget={"corpus": "corpus"}))
    assert_message(cli("validate", "--request", request, "--json"), "an integer of 5000 digits")
    # a policy YAML and a pipeline YAML
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"max_verbmem_f: {HUGE_INT}\n")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"verbmem_f": 1.0, "knowmem_f": 1.0, "knowmem_r": 1.0, "privleak": 0.0}))
    assert_message(cli("gate", "--metrics", metrics, "--policy", policy, "--json"), "an integer of 5000 digits")
    assert_message(cli("validate", "--request", DATA / "valid-baseline.json", "--policy", policy, "--json"), "5000 digits")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text((REPO / "pipelines" / "ci.yaml").read_text().replace("epochs: 6", f"epochs: {HUGE_INT}"))
    assert_message(cli("run", "--request", DATA / "valid-baseline.json", "--pipeline", pipeline, "--json"), "5000 digits")
    # an audit-style metrics file read by gate
    metrics.write_text(f'{{"verbmem_f": {HUGE_INT}}}')
    assert_message(cli("gate", "--metrics", metrics, "--policy", REPO / "pipelines" / "ci.yaml", "--json"), "5000 digits")


def test_a_repeated_key_is_refused_in_json_and_yaml(cli, workspace, request_dir, tmp_path):
    request = request_dir / "request.json"
    text = request.read_text()
    request.write_text(text.replace('"request_id": "dsr-2026-0001",', '"request_id": "dsr-2026-0001", "request_id": "dsr-2026-9999",'))
    document = assert_message(cli("validate", "--request", request, "--json"), "duplicate key 'request_id'")
    assert document["request_id"] is None  # neither id was taken
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text((REPO / "pipelines" / "ci.yaml").read_text() + "\nname: shadow\n")
    assert_message(cli("run", "--request", request, "--pipeline", pipeline, "--json"), "duplicate key 'name'")


@pytest.mark.parametrize("value", [True, 1.0, "1"])
def test_schema_version_must_be_the_integer_1(request_dir, value):
    request = rewrite(request_dir / "request.json", lambda doc: doc.update(schema_version=value))
    message = failures(validate_request(request))["schema_version"]
    assert "must be the JSON integer 1" in message


# ---- near-duplicates --------------------------------------------------------------------------------


def test_the_normaliser_does_what_the_docs_say():
    assert normalise("Jean-Luc's") == normalise("JeanLucs") == "jeanlucs"  # removed, not replaced by a space
    assert normalise("Mar\u200bgaret Thatch\u00ader") == normalise("Margaret Thatcher")  # zero-width space, soft hyphen
    assert normalise("\ufeffA\u200d-B\u2060") == "ab"
    assert normalise("Ｆｕｌｌｗｉｄｔｈ   text") == "fullwidth text"  # NFKC, whitespace collapsed
    assert normalise("Straße") == normalise("STRASSE")  # casefold
    assert normalise("\u200b\u200c\u200d") == ""


def test_near_duplicates_are_found_across_and_within_lists(request_dir):
    data = request_dir / "data"
    forget = json.loads((data / "forget.json").read_text())
    retain = json.loads((data / "retain.json").read_text())
    retain[4] = forget[2].upper().replace(" ", "  ").replace(".", "\u00ad.")  # a forget text up to case/spacing/soft hyphens
    retain[7] = retain[5].replace(" ", " \u200b")  # a near-copy within the list
    (data / "retain.json").write_text(json.dumps(retain))
    report = validate_request(request_dir / "request.json")
    by_rule = {(check.name, check.field): check for check in report.failures}
    assert by_rule[("no_forget_near_duplicates", "retain.texts")].offending_indices == [4]
    assert by_rule[("no_near_duplicates", "retain.texts")].offending_indices == [5, 7]


def test_a_text_of_invisible_characters_only_is_empty(request_dir):
    data = request_dir / "data"
    forget = json.loads((data / "forget.json").read_text())
    forget[3] = "\u200b\u200c\u2060\ufeff \u00ad"
    (data / "forget.json").write_text(json.dumps(forget))
    check = next(c for c in validate_request(request_dir / "request.json").failures if c.name == "non_empty")
    assert check.field == "forget.texts" and check.offending_indices == [3]


@pytest.mark.parametrize("retain", ["exactly", "after normalising"])
def test_a_retain_set_equal_to_the_forget_set_is_refused_not_a_traceback(cli, workspace, request_dir, retain):
    data = request_dir / "data"
    forget = json.loads((data / "forget.json").read_text())
    copy = forget if retain == "exactly" else [text.upper().replace(",", "") for text in forget]
    (data / "retain.json").write_text(json.dumps(copy))
    request = request_dir / "request.json"
    for command in ("validate", "run"):
        result = cli(command, "--request", request, "--json")
        document = assert_message(result, "retain.texts")
        assert document["field"] == "retain.texts"
    report = validate_request(request)
    assert {check.name for check in report.failures if check.field == "retain.texts"} >= {"no_forget_near_duplicates"}
    assert any(check.name == "no_retain_near_duplicates" for check in report.checks)  # ran, not lost


# ---- paths and workspaces ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["texts", "corpus"])
def test_a_path_too_long_is_named_as_such_not_a_full_disk(cli, workspace, request_dir, source):
    long_path = "x" * 1000 + "/forget.json"  # 1,012 characters: within the schema's 1,024, not the file system's 255 per name
    request = rewrite(request_dir / "request.json", lambda doc: doc.update(forget={source: long_path}))
    result = cli("validate", "--request", request, "--json")
    document = assert_message(result, "File name too long")
    assert document["field"] == f"forget.{source}"
    assert "disk space" not in result.stdout + result.stderr


def test_a_request_path_too_long_is_named_as_such_not_a_full_disk(cli, workspace, request_dir):
    result = cli("run", "--request", request_dir / ("y" * 1030 + ".json"), "--json")
    document = assert_message(result, "too long")
    assert "disk space" not in document["error"]


def test_an_empty_workspace_option_is_a_usage_error(cli, workspace):
    for command in (["models"], ["audit", "status"], ["validate", "--request", DATA / "valid-baseline.json"]):
        result = cli(*command, "--workspace", "", "--json")
        assert assert_message(result, code=2)["field"] == "--workspace"


def test_a_workspace_that_takes_no_file_fails_at_once(cli, workspace):
    started = time.monotonic()
    result = cli("run", "--request", DATA / "valid-baseline.json", "--workspace", "/proc", "--json")
    document = assert_message(result, "/proc", "writable")
    assert document["field"] == "--workspace"
    assert time.monotonic() - started < 120  # before: a bench built for two minutes, then the failure
    assert not Path("/proc/bench").exists()
