"""Valid requests: what the report, the resolved data, the digest and the CLI give back."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from unlearnops.corpus import Corpus
from unlearnops.errors import UnlearnopsError
from unlearnops.fileio import sha256_file
from unlearnops.request import ForgetRequest, load_request, request_digest, validate_request

CORPUS = Path(__file__).parent / "data" / "invalid_requests"
BASELINE = CORPUS / "valid-baseline.json"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _texts(name: str) -> list[str]:
    return json.loads((CORPUS / "data" / name).read_text())


@pytest.fixture(scope="module")
def baseline_report():
    return validate_request(BASELINE)


@pytest.fixture
def bench_workspace(workspace, baseline_report):
    """A workspace whose default bench corpus is the small test corpus (no model training)."""
    baseline_report.data.to_corpus().write(workspace / "bench" / "default" / "corpus")
    return workspace


def test_resolved_data_holds_the_files_contents(baseline_report, tmp_path):
    data = baseline_report.data
    assert data.forget_texts == _texts("forget.json")
    assert data.privleak_forget == data.forget_texts  # explicit files: the forget texts are PrivLeak's members
    assert data.holdout_texts == _texts("holdout.json")
    assert [item.question for item in data.retain_qa] == [item["question"] for item in json.loads((CORPUS / "data" / "retain_qa.json").read_text())]
    assert data.corpus_dir is None  # files, not one corpus: the pipeline lays them out with to_corpus()
    data.to_corpus().write(tmp_path / "corpus")
    reloaded = Corpus.load(tmp_path / "corpus")
    assert reloaded.privleak["holdout"] == data.holdout_texts
    assert reloaded.verbmem_forget == data.forget_verbmem
    assert baseline_report.policy.max_verbmem_f == 25  # the override, applied


def test_baseline_is_valid_and_every_check_kind_ran(baseline_report):
    assert baseline_report.ok, [check.to_json() for check in baseline_report.failures]
    names = {check.name for check in baseline_report.checks}
    assert {"schema", "model", "policy_override", "readable", "non_empty", "max_length", "no_duplicates",
            "no_forget_overlap", "no_forget_near_duplicates", "privleak_size", "question_non_empty",
            "answer_non_empty", "prompt_non_empty", "continuation_non_empty", "no_retain_near_duplicates"} <= names


def test_single_corpus_source_is_used_as_is(baseline_report, tmp_path):
    root = tmp_path / "request"
    baseline_report.data.to_corpus().write(root / "muse")
    document = json.loads(BASELINE.read_text())
    for role in ("forget", "retain", "holdout"):
        document[role] = {"corpus": "muse"}
    (root / "request.json").write_text(json.dumps(document))
    report = validate_request(root / "request.json")
    assert report.ok, [check.to_json() for check in report.failures]
    assert report.data.corpus_dir == (root / "muse").resolve()
    assert report.data.holdout_texts == baseline_report.data.holdout_texts
    assert {check.field for check in report.checks} >= {"forget.corpus:raw/forget.json", "holdout.corpus:privleak/holdout.json"}


def test_examples_validate_against_the_workspace_bench(cli, bench_workspace):
    for example in ("bench-request.json", "files-request.json"):
        result = cli("validate", "--request", EXAMPLES / example, "--json")
        document = json.loads(result.stdout)
        assert result.exit_code == 0, [check for check in document["checks"] if not check["passed"]]
        assert document["ok"] is True


def test_report_logs_and_digest_never_contain_forget_texts(cli, caplog, monkeypatch, baseline_report):
    from unlearnops.cli.output import out_console

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(out_console, "width", 100_000)  # no wrapping: a text would appear whole
    forget_texts = set(_texts("forget.json"))
    # Each test forget text starts with a first name used in no other test text.
    forget_names = {text.split()[0] for text in forget_texts}
    outputs = []
    runs = [(BASELINE, "--all"), (CORPUS / "forget-retain-overlap.json", "--json"), (CORPUS / "forget-retain-near-duplicate.json", "--all")]
    for case, flag in runs:
        result = cli("validate", "--request", case, flag)
        assert result.exit_code == (0 if case == BASELINE else 1)
        outputs += [result.stdout, result.stderr]
        if flag == "--json":  # the overlapping retain text is named by its index only
            failing = [check for check in json.loads(result.stdout)["checks"] if not check["passed"]]
            assert {(check["field"], check["name"]) for check in failing} == {
                ("retain.texts", "no_forget_overlap"), ("retain.texts", "no_forget_near_duplicates")}
            assert all(check["offending_indices"] == [4] for check in failing)
    outputs.append(json.dumps(request_digest(baseline_report)))
    outputs.append(caplog.text)
    leaked = [text for text in forget_texts for output in outputs if text in output]
    assert not leaked
    words = {word for output in outputs for word in output.split()}
    assert not forget_names & words


def test_digest_has_ids_and_file_hashes(baseline_report):
    digest = request_digest(baseline_report)
    assert digest["request_id"] == "dsr-2026-0001"
    assert digest["request_sha256"] == sha256_file(BASELINE)
    assert digest["sources"] == {"forget": "files", "retain": "files", "holdout": "files"}
    assert digest["files"]["forget.texts"] == {"sha256": sha256_file(CORPUS / "data" / "forget.json"), "items": 12}
    assert set(digest["files"]) == {"forget.texts", "forget.verbmem", "forget.qa", "retain.texts", "retain.qa", "holdout.texts"}
    assert "requester" not in digest


def test_load_request_checks_schema_only():
    request = load_request(BASELINE)
    assert isinstance(request, ForgetRequest) and request.is_registry_model
    with pytest.raises(UnlearnopsError, match=r"forget\.txts: unknown field; did you mean 'texts'\?"):
        load_request(CORPUS / "typo-in-source-field.json")


def test_base_policy_from_yaml_bounds_the_overrides(cli, tmp_path):
    policy = tmp_path / "pipeline.yaml"
    policy.write_text("gate:\n  max_verbmem_f: 20\n")
    result = cli("validate", "--request", BASELINE, "--policy", policy, "--json")
    assert result.exit_code == 1
    failing = [check for check in json.loads(result.stdout)["checks"] if not check["passed"]]
    assert [check["field"] for check in failing] == ["policy_overrides.max_verbmem_f"]
    assert failing[0]["message"].startswith("25.0 loosens the configured threshold 20.0")


def test_privleak_minimum_is_a_parameter():
    assert validate_request(CORPUS / "too-few-holdout-texts.json", min_privleak_texts=5).ok


def test_cli_usage_errors_exit_2(cli, tmp_path):
    assert cli("validate").exit_code == 2
    assert cli("validate", "--request", tmp_path / "absent.json").exit_code == 2
    assert cli("validate", "--request", tmp_path).exit_code == 2


def test_cli_human_output_lists_failing_field(cli):
    result = cli("validate", "--request", CORPUS / "typo-in-source-field.json")
    assert result.exit_code == 1
    assert "forget.txts" in result.stdout and "'texts'?" in result.stdout  # the table may wrap the message


def test_schema_command_prints_the_json_schema(cli):
    result = cli("request", "schema", "--json")
    schema = json.loads(result.stdout)
    assert result.exit_code == 0
    assert {"request_id", "received_at", "deadline", "model", "forget", "retain", "holdout"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
    assert schema["properties"]["request_id"]["pattern"].startswith("^[A-Za-z0-9]")
