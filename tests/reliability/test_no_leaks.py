"""No leaks of erased data: after a full `unlearnops run` (the killed-and-resumed chain of
conftest.py, five processes in all), no forget text appears anywhere the tool writes for others
to read: the MLflow store, its artifacts (model weights excepted: they are what was unlearned),
the audit log, everything the processes printed, and the registered model's metadata.

A forget text "appears" when any 40-character window of it does, raw or JSON-escaped. The
texts are every raw forget article, every VerbMem continuation (gt) and every forget QA answer
longer than 40 characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from .conftest import SOURCE_NAME

pytestmark = pytest.mark.slow

WINDOW = 40


def forget_texts(corpus: Path) -> list[str]:
    texts = list(json.loads((corpus / "raw" / "forget.json").read_text()))
    texts += [item["gt"] for item in json.loads((corpus / "verbmem" / "forget.json").read_text())]
    texts += [qa["answer"] for qa in json.loads((corpus / "knowmem" / "forget_qa.json").read_text()) if len(qa["answer"]) > WINDOW]
    return texts


def windows(texts: Iterable[str]) -> set[bytes]:
    """Every 40-character window of each text, as UTF-8 and as it looks inside JSON strings."""
    found: set[bytes] = set()
    for text in texts:
        for form in {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}:
            found.update(form[i:i + WINDOW].encode() for i in range(max(1, len(form) - WINDOW + 1)))
    return found


class Scanner:
    def __init__(self, texts: list[str]):
        self.windows = windows(texts)
        self.width = {len(window) for window in self.windows}

    def leaks(self, data: bytes) -> list[bytes]:
        return sorted({data[i:i + w] for w in self.width for i in range(len(data) - w + 1) if data[i:i + w] in self.windows})

    def scan(self, files: Iterable[Path]) -> dict[str, bytes]:
        """file -> the first leaked window, for every file that leaks."""
        return {str(path): found[0] for path in files if (found := self.leaks(path.read_bytes()))}


@pytest.fixture(scope="module")
def scanner(killed_chain) -> Scanner:
    texts = forget_texts(killed_chain.workspace / "bench" / "tiny" / "corpus")
    assert len(texts) >= 10 and all(len(text) > WINDOW for text in texts)
    return Scanner(texts)


def test_the_scanner_finds_forget_text_where_it_is(scanner, killed_chain):
    # The control: the corpus itself, and one window written through JSON, must be reported.
    corpus = killed_chain.workspace / "bench" / "tiny" / "corpus"
    assert scanner.scan([corpus / "raw" / "forget.json", corpus / "verbmem" / "forget.json"]).keys() == {
        str(corpus / "raw" / "forget.json"), str(corpus / "verbmem" / "forget.json")}
    text = json.loads((corpus / "raw" / "forget.json").read_text())[0]
    assert scanner.leaks(json.dumps({"note": "x" + text[3:3 + WINDOW] + "y"}).encode())


def test_no_forget_text_in_the_mlflow_store_artifacts_audit_log_or_printed_output(scanner, killed_chain):
    workspace = killed_chain.workspace
    artifacts = [p for p in (workspace / "mlartifacts").rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    assert any(p.name == "gate.json" for p in artifacts) and any(p.parent.name == "requests" for p in artifacts)
    files = [workspace / "mlflow.db", workspace / "audit.jsonl", *artifacts, *sorted(killed_chain.logs.iterdir())]
    assert scanner.scan(files) == {}


def test_no_forget_text_in_the_served_model_metadata(scanner, killed_chain, tmp_path):
    from unlearnops import registry

    version = registry.resolve(f"{SOURCE_NAME}@candidate", tracking_uri=f"sqlite:///{killed_chain.workspace / 'mlflow.db'}")
    model = version.download(tmp_path / "served")
    metadata = [p for p in model.rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    assert {"config.json", "tokenizer.json"} <= {p.name for p in metadata}
    assert scanner.scan(metadata) == {}
    tags = json.dumps(version.to_dict()).encode()  # what `models` and `serve` show about it
    assert scanner.leaks(tags) == []
