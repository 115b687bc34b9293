"""`report` and `verify-endpoint` answer any command line with a message and exit 0, 1 or 2, never a traceback.

The same property tests/reliability/test_hostile_input.py holds for the other commands: random
options and values (text, numbers, paths, URLs that point nowhere reachable) on an empty
workspace. Nothing here reaches a network: every URL drawn is a closed local port or not a URL.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability.test_hostile_input import answered  # one rule for "answered": a message and exit 0, 1 or 2

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
COMMANDS = [["report"], ["verify-endpoint"]]
OPTIONS = [
    "--request", "--out", "--pdf", "--request-file", "--workspace", "--json", "--url", "--deployment", "--api-key", "--concurrency",
    "--skip", "--tolerance", "--tokenizer",
]
values = st.one_of(
    st.sampled_from(OPTIONS), st.text(max_size=20).map(lambda text: text.lstrip("/")), st.integers(-(2**70), 2**70).map(str),
    st.sampled_from([
        "http://127.0.0.1:9", "http://[::1", "http://127.0.0.1:99999", "https://user:secret@127.0.0.1:9", "ftp://127.0.0.1:9",
        "verbmem_f=abc", "auc=-1", "privleak", "nan", "", ".", "..", "/dev/null", "tiny", "a" * 5000,
    ]),
)


@FUZZ
@given(command=st.sampled_from(COMMANDS), args=st.lists(values, max_size=8))
def test_any_report_or_verify_endpoint_command_line_is_answered(cli, workspace, tmp_path, monkeypatch, command, args):
    deep = tmp_path.joinpath(*"abcdefghij")
    deep.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(deep)  # a relative --out or --workspace lands under the test's directory
    result = cli(*command, *args)
    assert answered(result), result
    assert "secret" not in result.stdout + result.stderr
