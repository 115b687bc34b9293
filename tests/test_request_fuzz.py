"""Property tests: no request file, however malformed, makes `validate` raise a traceback.

Random JSON values, random bytes, and the valid baseline with one field replaced by a random
JSON value: the CLI answers with exit 0, 1 or 2 and a message, never an exception.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "data" / "invalid_requests"
BASELINE = json.loads((CORPUS / "valid-baseline.json").read_text())
# The holdout file is missing, so the data suite (seconds per run) never starts: the fuzzing
# covers the schema, paths, model and policy checks, the parts that see the random values.
MUTABLE = {**BASELINE, "holdout": {"texts": "data/absent.json"}}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _answered(result) -> bool:
    """An invalid request is listed on stdout; a usage error is explained on stderr."""
    return (result.exit_code == 1 and "invalid" in (result.stdout + result.stderr)) or (
        result.exit_code == 2 and result.stderr.strip() != ""
    )


@FUZZ
@given(value=json_values)
def test_random_json_is_rejected_cleanly(cli, tmp_path, value):
    request = tmp_path / "request.json"
    request.write_text(json.dumps(value))
    result = cli("validate", "--request", request)
    assert _answered(result), result


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_are_rejected_cleanly(cli, tmp_path, data):
    request = tmp_path / "request.json"
    request.write_bytes(data)
    result = cli("validate", "--request", request, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["ok"] is False
    assert all(check["message"] for check in report["checks"] if not check["passed"])


@FUZZ
@given(field=st.sampled_from(sorted(MUTABLE)), value=json_values)
def test_one_field_replaced_never_raises(cli, tmp_path, field, value):
    if not (tmp_path / "data").exists():
        shutil.copytree(CORPUS / "data", tmp_path / "data")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({**MUTABLE, field: value}))
    result = cli("validate", "--request", request, "--json")
    assert result.exit_code in (0, 1), result
    assert json.loads(result.stdout)["ok"] is (result.exit_code == 0)


@FUZZ
@given(model=st.text(min_size=1, max_size=80), texts=st.text(min_size=1, max_size=80))
def test_random_paths_never_raise(cli, tmp_path, model, texts):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({**MUTABLE, "model": model, "forget": {"texts": texts}}))
    result = cli("validate", "--request", request, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["ok"] is False
