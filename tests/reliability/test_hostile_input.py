"""Hostile input: corpus files and command lines an attacker (or a bad day) might hand us.

Property tests (hypothesis) feed random corpus files and random command lines to the CLI
in-process (tests/conftest.py `cli`): an uncaught exception would surface as a test error, so
"no traceback, ever" is what they check, with every failure a message and exit 1 or 2. Hostile
files (huge, deeply nested, non-UTF-8, binary, FIFOs, symlinks out of the base directory) are
refused before they are read whole, by fileio's readers and by corpus.Corpus.load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unlearnops.corpus import PRIVLEAK_SPLITS, QA_FILES, RAW_SPLITS, Corpus
from unlearnops.errors import UnlearnopsError
from unlearnops.fileio import confined, read_json, read_text

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HUGE = 64 * 2**30  # a sparse 64 GiB file: reading it whole would exhaust memory, so refusing it must not

CORPUS_FILES = [f"raw/{s}.json" for s in RAW_SPLITS] + ["verbmem/forget.json"] + [f"knowmem/{n}.json" for n in QA_FILES] + [
    f"privleak/{s}.json" for s in PRIVLEAK_SPLITS
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["prompt", "gt", "question", "answer", "x"]) | st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
file_contents = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=256),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
)


def answered(result) -> bool:
    """A failure is a message with exit 1 (invalid input) or 2 (usage), never silence or a traceback."""
    text = result.stdout + result.stderr
    return "Traceback" not in text and (result.exit_code == 0 or (result.exit_code in (1, 2) and text.strip() != ""))


def corpus_request(root: Path) -> Path:
    """A request whose forget and retain data is the MUSE corpus at root/corpus; the holdout file is
    absent, so validation stops before the (seconds-long) data suite: every example stays fast."""
    request = root / "request.json"
    request.write_text(json.dumps({
        "request_id": "hostile-0001", "received_at": "2026-11-02T09:30:00Z", "deadline": "2026-12-02T09:30:00Z",
        "requester": {"name": "x"}, "legal_basis": {"basis": "gdpr-art17"}, "model": "models:/unlearnops-bench@production",
        "forget": {"corpus": "corpus"}, "retain": {"corpus": "corpus"}, "holdout": {"texts": "absent.json"},
    }))
    return request


# ---- property tests ----------------------------------------------------------------------------


@FUZZ
@given(name=st.sampled_from(CORPUS_FILES), content=file_contents)
def test_a_random_corpus_file_is_refused_with_a_message_or_loaded(tmp_path_factory, name, content):
    root = tmp_path_factory.mktemp("corpus")
    (root / name).parent.mkdir(parents=True)
    (root / name).write_bytes(content)
    try:
        corpus = Corpus.load(root)
    except UnlearnopsError as err:
        assert str(err).strip()
        return
    assert corpus.root == root  # loaded: the content had the file's MUSE shape


@FUZZ
@given(name=st.sampled_from(CORPUS_FILES), content=file_contents)
def test_validate_answers_any_corpus_file_without_a_traceback(cli, workspace, tmp_path_factory, name, content):
    root = tmp_path_factory.mktemp("request")
    (root / "corpus" / name).parent.mkdir(parents=True)
    (root / "corpus" / name).write_bytes(content)
    result = cli("validate", "--request", corpus_request(root))
    assert answered(result), result
    assert result.exit_code != 0  # the holdout file is absent: never valid


# Every command and option the CLI has (no `bench build`: a valid draw would spend minutes
# building a bench); values are random text, paths, numbers and the option names themselves.
COMMANDS = [
    ["validate"], ["run"], ["gate"], ["evaluate"], ["quantize"], ["quantize-report"], ["unlearn"], ["register"],
    ["promote"], ["models"], ["serve"], ["audit", "verify"], ["audit", "show"], ["audit", "status"], ["audit", "export"],
    ["request", "schema"], ["bench"], ["audit"], ["audit", "close"], ["audit", "key"], ["audit", "bind-registry"],
    ["report"], ["verify-endpoint"], [],
]
OPTIONS = [
    "--request", "--pipeline", "--wait", "--workspace", "--json", "--model", "--corpus", "--out", "--policy", "--metrics",
    "--scheme", "--group-size", "--limit", "--seed", "--host", "--port", "--api-key", "--alias", "--baseline", "--name",
    "--trust-remote-code", "--allow-pickle", "--method", "--regularizer", "--epochs", "--lr", "--config", "--lineage",
    "--retrain-auc", "--details", "--schemes", "--calibration", "--registry", "--no-registry", "--dry-run", "--version",
]
# Paths stay relative (a command may write where --out or --workspace points, and the tests run
# as root): the test runs ten directories deep, deeper than 20 characters of "../" can climb.
option_values = st.one_of(
    st.sampled_from(OPTIONS), st.text(max_size=20).map(lambda text: text.lstrip("/")), st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["nan", "inf", "-1", "0", "", ".", "..", "../..", "/dev/null", "models:/x@y", "tiny", "a" * 5000]),
)


@FUZZ
@given(command=st.sampled_from(COMMANDS), args=st.lists(option_values, max_size=8))
def test_any_command_line_is_answered_without_a_traceback(cli, workspace, tmp_path, monkeypatch, command, args):
    deep = tmp_path.joinpath(*"abcdefghij")
    deep.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(deep)  # a relative --out or --workspace lands under the test's directory
    result = cli(*command, *args)
    assert answered(result), result


# ---- hostile files ------------------------------------------------------------------------------


def sparse(path: Path, size: int = HUGE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def hostile_files(root: Path, outside: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the refusal must contain)."""
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.json").write_text(json.dumps(["a secret outside the corpus"]))
    files = {
        "huge": (sparse(root / "huge.json"), "exceeds the cap"),
        "deeply nested": (root / "nested.json", "nested deeper"),
        "non-UTF-8": (root / "latin1.json", "not valid UTF-8"),
        "binary": (root / "binary.json", "binary content"),
        "fifo": (root / "fifo.json", "not a regular file"),
    }
    files["deeply nested"][0].write_text("[" * 200_000 + "]" * 200_000)
    files["non-UTF-8"][0].write_bytes('["caf\u00e9"]'.encode("latin-1"))
    files["binary"][0].write_bytes(b'["\x00\x01\x02"]')
    os.mkfifo(files["fifo"][0])  # reading a FIFO would block forever
    return files


@pytest.mark.parametrize("case", ["huge", "deeply nested", "non-UTF-8", "binary", "fifo"])
def test_fileio_refuses_hostile_files_before_reading_them_whole(tmp_path, case):
    path, words = hostile_files(tmp_path / "base", tmp_path / "outside")[case]
    for read in (read_json, read_text):
        if read is read_text and case == "deeply nested":
            continue  # nesting is a JSON property; as text the file is fine
        with pytest.raises(UnlearnopsError, match=words):
            read(path)


def test_a_symlink_out_of_the_base_directory_is_refused(tmp_path):
    base, outside = tmp_path / "base", tmp_path / "outside"
    hostile_files(base, outside)
    (base / "link.json").symlink_to(outside / "secret.json")
    (base / "sub").symlink_to(outside, target_is_directory=True)
    for relative in ("link.json", "sub/secret.json", "../outside/secret.json", str(outside / "secret.json")):
        with pytest.raises(UnlearnopsError, match="outside the base directory"):
            confined(relative, base)
    assert confined("huge.json", base) == (base / "huge.json").resolve()


@pytest.mark.parametrize("case", ["huge", "deeply nested", "non-UTF-8", "binary", "fifo", "symlink out", "directory symlink out"])
def test_corpus_load_and_validate_refuse_a_hostile_corpus_file(cli, workspace, tmp_path, case):
    root = tmp_path / "request"
    corpus, outside = root / "corpus", tmp_path / "outside"
    files = hostile_files(tmp_path / "hostile", outside)
    (corpus / "raw").mkdir(parents=True)
    if case == "symlink out":
        (corpus / "raw" / "forget.json").symlink_to(outside / "secret.json")
        words = "outside the base directory"
    elif case == "directory symlink out":
        (corpus / "raw").rmdir()
        (corpus / "raw").symlink_to(outside, target_is_directory=True)
        (outside / "forget.json").write_text(json.dumps(["a secret outside the corpus"]))
        words = "outside the base directory"
    else:
        source, words = files[case]
        os.replace(source, corpus / "raw" / "forget.json")  # a rename keeps the huge file sparse and the FIFO a FIFO
    with pytest.raises(UnlearnopsError, match=words):
        Corpus.load(corpus)
    result = cli("validate", "--request", corpus_request(root), "--json")
    assert result.exit_code == 1 and answered(result)
    messages = " ".join(check["message"] or "" for check in json.loads(result.stdout)["checks"])
    assert words in messages, messages
    assert "a secret outside the corpus" not in result.stdout + result.stderr


def test_a_huge_or_deeply_nested_request_file_is_refused(cli, workspace, tmp_path):
    huge = sparse(tmp_path / "huge-request.json")
    nested = tmp_path / "nested-request.json"
    nested.write_text('{"request_id": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for request in (huge, nested):
        result = cli("validate", "--request", request)
        assert result.exit_code == 1 and answered(result), result

