"""The bench's two models trained at the same time give the same bytes as one after the other."""

from __future__ import annotations

import pytest

from unlearnops.bench.synthetic import write_corpus
from unlearnops.bench.tokenizer import train_tokenizer
from unlearnops.bench.train import ModelShape, TrainJob, TrainRecipe, train_models
from unlearnops.fileio import sha256_tree

SHAPE = ModelShape(hidden=128, layers=2, heads=4, intermediate=256, vocab=768, max_positions=512)  # the tiny bench's
RECIPE = TrainRecipe(epochs=2)  # bytes depend on every step, not on how many: two epochs are enough to tell


def _jobs(corpus, out):
    return [TrainJob("target", corpus.raw["forget"] + corpus.raw["retain"], out / "target"),
            TrainJob("retrain", corpus.raw["retain"], out / "retrain")]


def test_parallel_training_is_byte_identical_to_sequential(tmp_path):
    import torch

    corpus = write_corpus(tmp_path / "corpus", 0, "tiny")
    tokenizer = train_tokenizer([text for texts in corpus.raw.values() for text in texts], SHAPE.vocab)
    threads = torch.get_num_threads()
    sequential = train_models(_jobs(corpus, tmp_path / "sequential"), tokenizer, SHAPE, RECIPE, 0, show_progress=False, parallel=False)
    parallel = train_models(_jobs(corpus, tmp_path / "parallel"), tokenizer, SHAPE, RECIPE, 0, show_progress=False, parallel=True)
    assert torch.get_num_threads() == threads  # the caller's thread setting is given back
    for name in ("target", "retrain"):
        assert sha256_tree(tmp_path / "parallel" / name) == sha256_tree(tmp_path / "sequential" / name)
        assert (tmp_path / "parallel" / name / "model.safetensors").is_file()
        timing = {key: parallel[name].pop(key) for key in ("wall_s", "cpu_s")}
        assert all(seconds > 0 for seconds in timing.values())
        for key in ("wall_s", "cpu_s"):
            sequential[name].pop(key)
        assert parallel[name] == sequential[name]  # documents, tokens, parameters, losses
    assert list(parallel) == ["target", "retrain"]  # in the caller's order, whichever ran where


def test_a_failure_in_the_other_process_names_the_model(tmp_path):
    """The retrain process cannot save (its output lies under a file): a one-line error naming it."""
    from unlearnops.errors import UnlearnopsError

    corpus = write_corpus(tmp_path / "corpus", 0, "tiny")
    tokenizer = train_tokenizer([text for texts in corpus.raw.values() for text in texts], SHAPE.vocab)
    (tmp_path / "a-file").write_text("")
    jobs = [TrainJob("target", corpus.raw["forget"] + corpus.raw["retain"], tmp_path / "target"),
            TrainJob("retrain", corpus.raw["retain"], tmp_path / "a-file" / "retrain")]
    with pytest.raises(UnlearnopsError, match=r"^bench: the process training the retrain model failed \(exit code 1\): \w+Error"):
        train_models(jobs, tokenizer, SHAPE, TrainRecipe(epochs=1), 0, show_progress=False, parallel=True)


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """The other model's process never re-runs the caller's script (multiprocessing's spawn would)."""
    import subprocess
    import sys

    script = tmp_path / "build.py"
    script.write_text(
        "from pathlib import Path\n"
        "from unlearnops.bench.synthetic import write_corpus\n"
        "from unlearnops.bench.tokenizer import train_tokenizer\n"
        "from unlearnops.bench.train import ModelShape, TrainJob, TrainRecipe, train_models\n"
        "here = Path(__file__).parent\n"
        "with open(here / 'runs.txt', 'a') as runs: runs.write('ran\\n')\n"
        "corpus = write_corpus(here / 'corpus', 0, 'tiny')\n"
        "tokenizer = train_tokenizer([t for texts in corpus.raw.values() for t in texts], 768)\n"
        "shape = ModelShape(hidden=128, layers=2, heads=4, intermediate=256, vocab=768, max_positions=512)\n"
        "jobs = [TrainJob('target', corpus.raw['forget'], here / 'target'), TrainJob('retrain', corpus.raw['retain'], here / 'retrain')]\n"
        "train_models(jobs, tokenizer, shape, TrainRecipe(epochs=1), 0, show_progress=False, parallel=True)\n"
    )
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert (tmp_path / "runs.txt").read_text() == "ran\n"
    assert (tmp_path / "target" / "model.safetensors").is_file() and (tmp_path / "retrain" / "model.safetensors").is_file()
