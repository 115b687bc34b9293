"""The invalid-request corpus: each case differs from valid-baseline.json (which passes, see
test_request_validate.py) in one thing, and validation must fail naming the exact field with a
message that says what is wrong.

Cases that git cannot hold (symlinks, a file over the size cap) are built in tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unlearnops.request import validate_request

CORPUS = Path(__file__).parent / "data" / "invalid_requests"
BASELINE = CORPUS / "valid-baseline.json"

# case file -> (field the failing check names, fragment of its message)
EXPECTED: dict[str, tuple[str, str]] = {
    "bad-json.json": ("request", "invalid JSON at line 2"),
    "not-an-object.json": ("request", "valid dictionary"),
    "empty-object.json": ("request_id", "Field required"),
    "deep-json.json": ("request", "nested deeper than 8 levels"),
    "missing-request-id.json": ("request_id", "Field required; add it"),
    "missing-holdout.json": ("holdout", "Field required; add it"),
    "missing-requester-name.json": ("requester.name", "Field required"),
    "bad-request-id.json": ("request_id", "use 3-64 letters, digits"),
    "request-id-not-string.json": ("request_id", "valid string"),
    "unknown-field.json": ("forget_texts", "unknown field; did you mean 'forget'?"),
    "typo-in-source-field.json": ("forget.txts", "unknown field; did you mean 'texts'?"),
    "source-not-object.json": ("forget", 'expected an object: {"bench": "default"}'),
    "unknown-bench-size.json": ("retain.bench", "'default', 'tiny'"),
    "naive-datetime.json": ("received_at", "timezone"),
    "unparseable-datetime.json": ("deadline", "valid datetime"),
    "deadline-before-received.json": ("deadline", "is not after received_at"),
    "bad-legal-basis.json": ("legal_basis.basis", "did you mean 'gdpr-art17'?"),
    "other-basis-without-reference.json": ("legal_basis.reference", "required when basis is 'other'"),
    "bad-model-reference.json": ("model", "models:/NAME@ALIAS or models:/NAME/VERSION"),
    "model-dir-without-config.json": ("model", "no config.json"),
    "model-dir-outside.json": ("model", "resolves outside the base directory"),
    "bad-registered-model-name.json": ("registered_model_name", "starting with a letter or digit"),
    "schema-version-unsupported.json": ("schema_version", "Input should be 1"),
    "path-traversal.json": ("forget.texts", "resolves outside the base directory"),
    "path-with-nul-byte.json": ("forget.texts", "remove the control characters"),
    "absolute-path-outside.json": ("retain.texts", "resolves outside the base directory"),
    "missing-data-file.json": ("holdout.texts", "file not found"),
    "non-utf8-file.json": ("forget.texts", "not valid UTF-8"),
    "binary-file.json": ("retain.texts", "binary content"),
    "texts-not-a-list.json": ("holdout.texts", "expected a JSON list of strings"),
    "texts-wrong-item-type.json": ("forget.texts", "item 1 is int"),
    "empty-list.json": ("retain.texts", "empty list"),
    "qa-wrong-shape.json": ("forget.qa", "must be an object with string fields"),
    "empty-texts.json": ("forget.texts", "2 of 12 texts are empty"),
    "duplicate-texts.json": ("forget.texts", "2 of 12 texts are duplicates"),
    "forget-retain-overlap.json": ("retain.texts", "also forget texts (identical)"),
    "forget-retain-near-duplicate.json": ("retain.texts", "equal a forget text up to case, punctuation and spacing"),
    "forget-holdout-overlap.json": ("holdout.texts", "also forget texts (identical)"),
    "holdout-retain-overlap.json": ("holdout.texts", "holdout texts are (up to case, punctuation and spacing) retain texts"),
    "too-few-holdout-texts.json": ("holdout.texts", "PrivLeak needs at least 10"),
    "too-few-forget-texts.json": ("forget.texts", "PrivLeak needs at least 10"),
    "qa-empty-answer.json": ("forget.qa", "empty answer"),
    "verbmem-empty-prompt.json": ("forget.verbmem", "empty prompt"),
    "corpus-without-muse-files.json": ("forget.corpus", "no MUSE-layout files found"),
    "corpus-without-holdout.json": ("holdout.corpus", "has no privleak/holdout.json or raw/holdout.json"),
    "policy-override-loosens.json": ("policy_overrides.max_verbmem_f", "loosens the configured threshold 30.0"),
    "policy-override-loosens-min.json": ("policy_overrides.min_utility_ratio", "loosens the configured threshold 0.8"),
    "policy-override-unknown.json": ("policy_overrides.max_verbmem", "unknown threshold"),
    "policy-override-out-of-range.json": ("policy_overrides.min_utility_ratio", "out of range"),
    "policy-override-not-number.json": ("policy_overrides.max_verbmem_f", "valid number"),
    "nan-override.json": ("policy_overrides.max_verbmem_f", "finite number"),
}
# Where the offending items are known, the report must name them by index.
EXPECTED_INDICES = {
    "empty-texts.json": [3, 7],
    "duplicate-texts.json": [2, 5],
    "forget-retain-overlap.json": [4],
    "forget-retain-near-duplicate.json": [6],
    "forget-holdout-overlap.json": [9],
    "qa-empty-answer.json": [0],
    "holdout-retain-overlap.json": [2],
}


def _failure(report, field: str, fragment: str):
    matches = [check for check in report.failures if check.field == field and fragment in check.message]
    assert matches, f"no failing check on {field!r} with {fragment!r}; failures: {[c.to_json() for c in report.failures]}"
    return matches[0]


def test_every_case_file_has_an_expectation():
    cases = {path.name for path in CORPUS.glob("*.json")} - {BASELINE.name}
    assert len(cases) >= 30
    assert cases == set(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_invalid_request_names_field_and_fix(case):
    field, fragment = EXPECTED[case]
    report = validate_request(CORPUS / case)
    assert not report.ok
    check = _failure(report, field, fragment)
    if case in EXPECTED_INDICES:
        assert check.offending_indices == EXPECTED_INDICES[case]


def _copy_baseline(tmp_path: Path) -> Path:
    root = tmp_path / "request"
    shutil.copytree(CORPUS / "data", root / "data")
    shutil.copy(BASELINE, root / "request.json")
    return root / "request.json"


def _set(request: Path, section: str, value) -> None:
    """Rewrite one top-level field of the request file."""
    document = json.loads(request.read_text())
    document[section] = value
    request.write_text(json.dumps(document))


def test_symlinked_data_file_escaping_the_request_dir_is_refused(tmp_path):
    request = _copy_baseline(tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(["a text outside the request directory"] * 12))
    link = request.parent / "data" / "linked.json"
    link.symlink_to(outside)
    _set(request, "forget", {**json.loads(request.read_text())["forget"], "texts": "data/linked.json"})
    _failure(validate_request(request), "forget.texts", "resolves outside the base directory")


def test_symlinked_corpus_escaping_the_request_dir_is_refused(tmp_path):
    request = _copy_baseline(tmp_path)
    (request.parent / "data" / "corpus").symlink_to(CORPUS / "data" / "corpus-forget-only")
    _set(request, "forget", {"corpus": "data/corpus"})
    _failure(validate_request(request), "forget.corpus", "resolves outside the base directory")


def test_symlink_loop_is_refused(tmp_path):
    request = _copy_baseline(tmp_path)
    loop = request.parent / "data" / "loop.json"
    loop.symlink_to(loop)
    _set(request, "holdout", {**json.loads(request.read_text())["holdout"], "texts": "data/loop.json"})
    _failure(validate_request(request), "holdout.texts", "cannot be resolved")


def test_oversized_request_file_is_refused(tmp_path):
    request = _copy_baseline(tmp_path)
    _set(request, "description", "x" * (1024 * 1024))
    _failure(validate_request(request), "request", "exceeds the cap of 1048576 bytes")
