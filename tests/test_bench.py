"""The embedded bench: a deterministic synthetic MUSE-layout corpus and the tiny models trained on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import json_files
from unlearnops.bench import build_bench, ensure_bench, is_complete
from unlearnops.bench.synthetic import SIZES, generate, qa_block, write_corpus
from unlearnops.corpus import Corpus
from unlearnops.errors import UnlearnopsError
from unlearnops.fileio import sha256_file, sha256_tree
from unlearnops.workspace import Workspace

SHARED_MUSE_NEWS = Path(__file__).resolve().parents[1].parent / "shared" / "muse-news"


# ---- corpus: pure function of the seed, no training -------------------------------------------

@pytest.mark.parametrize("size", list(SIZES))
def test_same_seed_gives_byte_identical_corpus(tmp_path, size):
    write_corpus(tmp_path / "a", seed=7, size=size)
    write_corpus(tmp_path / "b", seed=7, size=size)
    write_corpus(tmp_path / "c", seed=8, size=size)
    first, second, other = json_files(tmp_path / "a"), json_files(tmp_path / "b"), json_files(tmp_path / "c")
    assert first and first == second
    assert first["raw/forget.json"] != other["raw/forget.json"]


def test_corpus_has_muse_file_names_and_shapes(tmp_path):
    write_corpus(tmp_path, seed=0, size="default")
    names = set(json_files(tmp_path))
    assert names == {
        "raw/forget.json", "raw/retain.json", "raw/holdout.json", "verbmem/forget.json",
        "knowmem/forget_qa.json", "knowmem/forget_qa_icl.json", "knowmem/retain_qa.json", "knowmem/retain_qa_icl.json",
        "privleak/forget.json", "privleak/retain.json", "privleak/holdout.json",
    }
    if SHARED_MUSE_NEWS.is_dir():  # every file the real MUSE subset has, we have, in the same shape
        for name in json_files(SHARED_MUSE_NEWS):
            assert name in names
            ours, theirs = json.loads((tmp_path / name).read_text()), json.loads((SHARED_MUSE_NEWS / name).read_text())
            assert type(ours[0]) is type(theirs[0])
            if isinstance(theirs[0], dict):
                assert set(ours[0]) == set(theirs[0])
    corpus = Corpus.load(tmp_path)
    corpus.require("raw/forget", "raw/retain", "verbmem/forget", "knowmem/forget_qa", "knowmem/retain_qa",
                   "knowmem/forget_qa_icl", "knowmem/retain_qa_icl", "privleak/forget", "privleak/holdout")
    assert len(corpus.privleak["forget"]) >= 12 and len(corpus.privleak["holdout"]) >= 12


def test_verbmem_and_privleak_come_from_the_right_articles():
    corpus = generate(0, "default").corpus
    for item in corpus.verbmem_forget:
        assert item.prompt.endswith(" ")  # cut after a word: the prompt tokenizes as in training
        assert item.prompt + item.gt in corpus.privleak["forget"]
    for split in ("forget", "retain", "holdout"):
        assert set(corpus.privleak[split]) <= set(corpus.raw[split])
    for text in corpus.privleak["retain"]:
        assert 60 <= len(text.split()) <= 120


def test_qa_training_documents_are_the_evaluator_prompt_plus_the_answer():
    corpus = generate(0, "tiny").corpus
    for split in ("forget", "retain"):
        icl = corpus.knowmem[f"{split}_qa_icl"]
        prompt_prefix = "".join(f"Question: {pair.question}\nAnswer: {pair.answer}\n\n" for pair in icl)
        for pair in corpus.knowmem[f"{split}_qa"]:
            document = prompt_prefix + f"Question: {pair.question}\nAnswer: {pair.answer}\n\n"
            assert document == qa_block([*icl, pair])
            assert document in corpus.raw[split]


def test_people_do_not_overlap_between_splits():
    synthetic = generate(0, "default")
    names = {split: [person.name for person in people] for split, people in synthetic.people.items()}
    everyone = [name for split_names in names.values() for name in split_names]
    assert len(everyone) == len(set(everyone))
    for person in synthetic.people["forget"]:  # names and the facts unique to a person stay in forget
        for split in ("retain", "holdout"):
            for unique in (person.last, person.company, person.award):
                assert not any(unique in text for text in synthetic.corpus.raw[split])
    for person in synthetic.people["holdout"]:
        assert not any(person.last in text for text in synthetic.corpus.raw["forget"] + synthetic.corpus.raw["retain"])


def test_every_size_has_a_corpus_and_a_model_spec():
    from unlearnops.bench.build import MODEL_SPECS

    assert set(MODEL_SPECS) == set(SIZES)
    for spec in MODEL_SPECS.values():  # 4-bit groups of 128 (and 64) fit every linear layer
        assert spec.shape.hidden % 128 == 0 and spec.shape.intermediate % 128 == 0


def test_unknown_size_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(UnlearnopsError, match="did you mean 'tiny'"):
        build_bench(tmp_path / "bench", size="tiyn")
    assert not (tmp_path / "bench").exists()


def test_refuses_to_overwrite_a_directory_that_is_not_a_bench(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(UnlearnopsError, match="not a bench"):
        build_bench(precious, size="tiny", show_progress=False)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_cli_rejects_unknown_size(cli, workspace):
    result = cli("bench", "build", "--size", "huge", "--json")
    assert result.exit_code in (1, 2)
    assert "--size" in result.stderr and "tiny" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == result.exit_code  # --json: the error object on stdout


# ---- the tiny build (trains two models) --------------------------------------------------------

@pytest.mark.slow
def test_tiny_bench_layout_and_manifest(tiny_bench):
    manifest = json.loads((tiny_bench / "bench.json").read_text())
    assert is_complete(tiny_bench)
    assert manifest["seed"] == 0 and manifest["size"] == "tiny"
    for name, digest in manifest["corpus"]["files"].items():
        assert sha256_file(tiny_bench / "corpus" / name) == digest
    for name in ("target", "retrain"):
        model_dir = tiny_bench / name
        assert manifest["models"][name]["sha256"] == sha256_tree(model_dir)
        assert list(model_dir.glob("*.safetensors")) and (model_dir / "tokenizer.json").exists()
        config = json.loads((model_dir / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is False
        for dim in (config["hidden_size"], config["intermediate_size"]):
            assert dim % 128 == 0  # 4-bit groups of 128 (and 64) fit every linear layer
    phases = {"corpus", "tokenizer", "train_target", "train_retrain", "evaluate"}
    assert set(manifest["timings_s"]) == set(manifest["cpu_s"]) == phases


@pytest.mark.slow
def test_tiny_target_memorises_and_retrain_does_not(tiny_bench):
    metrics = json.loads((tiny_bench / "bench.json").read_text())["metrics"]
    target, retrain = metrics["target"], metrics["retrain"]
    assert target["verbmem_f"] >= 70 and target["knowmem_f"] >= 70 and target["knowmem_r"] >= 70
    assert retrain["knowmem_f"] <= 30 < target["knowmem_f"]
    assert retrain["verbmem_f"] < target["verbmem_f"]
    assert 0.0 <= retrain["auc"] <= 1.0 and 0.0 <= target["auc"] <= 1.0
    assert target["auc"] < retrain["auc"]  # the target leaks membership of its training texts


@pytest.mark.slow
def test_tokenizer_keeps_prompts_as_training_prefixes_and_pads_left(tiny_bench):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bench / "target")
    corpus = Corpus.load(tiny_bench / "corpus")
    item = corpus.verbmem_forget[0]
    prompt_ids, full_ids = tokenizer(item.prompt).input_ids, tokenizer(item.prompt + item.gt).input_ids
    assert prompt_ids[0] == tokenizer.bos_token_id and full_ids[: len(prompt_ids)] == prompt_ids
    assert tokenizer.decode(full_ids, skip_special_tokens=True) == item.prompt + item.gt
    qa_prompt = "Question: Who?\nAnswer: "
    assert tokenizer(qa_prompt + "Nobody\n\n").input_ids[: len(tokenizer(qa_prompt).input_ids)] == tokenizer(qa_prompt).input_ids
    tokenizer.padding_side = "left"
    batch = tokenizer(["short", item.prompt], padding=True)
    assert batch.input_ids[0][0] == tokenizer.pad_token_id and batch.attention_mask[0][0] == 0
    assert batch.input_ids[0][-1] != tokenizer.pad_token_id


@pytest.mark.slow
def test_ensure_bench_reuses_a_complete_bench(tiny_bench, tmp_path):
    import shutil

    workspace = Workspace.resolve(tmp_path / "ws")
    shutil.copytree(tiny_bench, workspace.bench_dir("tiny"))
    stamp = (workspace.bench_dir("tiny") / "bench.json").stat().st_mtime_ns
    assert ensure_bench(workspace, size="tiny") == workspace.bench_dir("tiny")
    assert (workspace.bench_dir("tiny") / "bench.json").stat().st_mtime_ns == stamp
    (workspace.bench_dir("tiny") / "bench.json").unlink()
    assert not is_complete(workspace.bench_dir("tiny"))


@pytest.mark.slow
def test_cli_build_json_is_deterministic(cli, workspace, tiny_bench):
    """A second tiny build through the CLI: --json on stdout, default --out in the workspace, and
    the same seed gives the same corpus and the same model weights as the session's build."""
    result = cli("bench", "build", "--size", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert Path(document["out"]) == Workspace.resolve(workspace).bench_dir("tiny")
    reference = json.loads((tiny_bench / "bench.json").read_text())
    assert document["corpus"]["sha256"] == reference["corpus"]["sha256"]
    for name in ("target", "retrain"):
        assert document["models"][name]["sha256"] == reference["models"][name]["sha256"]
    assert document["metrics"] == reference["metrics"]
