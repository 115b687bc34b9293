"""The bench corpus cut from a real MUSE-layout corpus (../shared/muse-news): the writer only, no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import json_files
from unlearnops.bench import build_bench, muse
from unlearnops.bench.synthetic import SIZES as SYNTHETIC_SIZES
from unlearnops.bench.synthetic import qa_block
from unlearnops.corpus import Corpus
from unlearnops.errors import UnlearnopsError

SHARED_MUSE_NEWS = Path(__file__).resolve().parents[1].parent / "shared" / "muse-news"
needs_muse = pytest.mark.skipif(not SHARED_MUSE_NEWS.is_dir(), reason="../shared/muse-news is absent")
MUSE_FILES = {
    "raw/forget.json", "raw/retain.json", "raw/holdout.json", "verbmem/forget.json",
    "knowmem/forget_qa.json", "knowmem/forget_qa_icl.json", "knowmem/retain_qa.json", "knowmem/retain_qa_icl.json",
    "privleak/forget.json", "privleak/retain.json", "privleak/holdout.json",
}


def test_every_size_has_a_muse_subset():
    assert set(muse.SIZES) == set(SYNTHETIC_SIZES)


@needs_muse
def test_subset_is_deterministic_and_in_muse_layout(tmp_path):
    muse.write_corpus(SHARED_MUSE_NEWS, tmp_path / "a", seed=3, size="default")
    muse.write_corpus(SHARED_MUSE_NEWS, tmp_path / "b", seed=3, size="default")
    muse.write_corpus(SHARED_MUSE_NEWS, tmp_path / "c", seed=4, size="default")
    first, second, other = json_files(tmp_path / "a"), json_files(tmp_path / "b"), json_files(tmp_path / "c")
    assert set(first) == MUSE_FILES and first == second
    assert first["privleak/forget.json"] != other["privleak/forget.json"]
    corpus, shape = Corpus.load(tmp_path / "a"), muse.SIZES["default"]
    assert [len(corpus.privleak[split]) for split in ("forget", "retain", "holdout")] == [shape.forget, shape.retain, shape.holdout]
    assert len(corpus.knowmem["forget_qa"]) == shape.forget_qa and len(corpus.knowmem["retain_qa"]) == shape.retain_qa
    assert all(len(text.split()) <= shape.words for texts in corpus.privleak.values() for text in texts)


@needs_muse
def test_subset_comes_from_the_source_splits_and_no_forget_text_leaks():
    source, corpus = Corpus.load(SHARED_MUSE_NEWS), muse.subset(SHARED_MUSE_NEWS, seed=0, size="default")
    for split in ("forget", "retain", "holdout"):  # each text is the start of an article of the same split
        originals = [muse.cut(text, len(text.split())) for text in source.privleak[split]]
        assert all(any(original.startswith(text) for original in originals) for text in corpus.privleak[split])
    others = corpus.raw["retain"] + corpus.raw["holdout"]
    for text in corpus.privleak["forget"]:
        assert not any(text[:200] in other for other in others)
    assert [item.prompt + item.gt for item in corpus.verbmem_forget] == corpus.privleak["forget"]
    # Every forget question is a forget training document, in the evaluator's few-shot format; none is in retain.
    for pair in corpus.knowmem["forget_qa"]:
        document = qa_block(corpus.knowmem["forget_qa_icl"] + [pair])
        assert document in corpus.raw["forget"] and document not in corpus.raw["retain"]


def test_missing_source_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UnlearnopsError, match="not a directory"):
        build_bench(tmp_path / "bench", size="tiny", source=tmp_path / "nowhere", show_progress=False)
    assert not (tmp_path / "bench").exists()


def test_cli_reports_a_missing_source_in_one_line(cli, workspace, tmp_path):
    result = cli("bench", "build", "--size", "tiny", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"), "--json")
    assert result.exit_code == 1
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
    assert "nowhere" in json.loads(result.stdout)["error"] and not (tmp_path / "b").exists()  # --json: the error object
