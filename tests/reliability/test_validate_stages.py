"""`validate` checks what every stage will need, the way the stages read it: a request that
validates does not fail on its data or its model minutes into `run`.

- the model reference is resolved in the registry `run` will use;
- the corpus the stages read is the one validation read (pipeline.data.corpus_of writes the
  validated lists when a corpus was read through a second-choice file, e.g. raw/forget.json for
  PrivLeak's members), and the real evaluate stage runs on it;
- KnowMem's few-shot examples are taken from the retain side when the forget side has none, and
  a QA list left without any is refused, naming the field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import write_bench_request
from unlearnops.corpus import Corpus
from unlearnops.errors import UnlearnopsError
from unlearnops.evaluate import evaluate_model
from unlearnops.evaluate.evaluator import plan
from unlearnops.metrics import METRICS
from unlearnops.pipeline.data import corpus_of
from unlearnops.request import validate_request
from unlearnops.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "invalid_requests"
TINY_MIN = 5  # the tiny bench has 6 forget and 6 holdout texts (pipelines/ci.yaml's floor)


def failing(report) -> dict[tuple[str, str], str]:
    return {(check.name, check.field): check.message for check in report.failures}


def corpus_request(root: Path, corpus: Path) -> Path:
    """A request whose three sources are the MUSE corpus at root/corpus (a copy of `corpus`)."""
    shutil.copytree(corpus, root / "corpus")
    return write_bench_request(root / "request.json", "stages-0001", data={"corpus": "corpus"})


# ---- the model -----------------------------------------------------------------------------------


def test_a_model_missing_from_the_registry_fails_validation(cli, workspace, tmp_path):
    request = write_bench_request(tmp_path / "request.json", "stages-0002", model="models:/nobody@production",
                                  data={"texts": "absent.json"})
    no_registry = failing(validate_request(request, workspace=workspace))
    assert "has no model registry yet" in no_registry[("model", "model")]
    assert not (workspace / "mlflow.db").exists()  # validating created no registry

    assert cli("models", "--json").exit_code == 0  # now the workspace has an (empty) registry
    in_registry = failing(validate_request(request, workspace=workspace))
    assert "not found in the registry" in in_registry[("model", "model")]
    result = cli("validate", "--request", request, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr

    bench = write_bench_request(tmp_path / "bench.json", "stages-0003", data={"texts": "absent.json"})
    assert ("model", "model") not in failing(validate_request(bench, workspace=workspace))  # registered on first use


# ---- the corpus the stages read -----------------------------------------------------------------


@pytest.mark.slow
def test_a_corpus_without_privleak_forget_is_read_by_the_stages_as_it_was_validated(tiny_bench, workspace, tmp_path):
    request = corpus_request(tmp_path, tiny_bench / "corpus")
    (tmp_path / "corpus" / "privleak" / "forget.json").unlink()  # the documented fallback: raw/forget.json
    report = validate_request(request, workspace=workspace, min_privleak_texts=TINY_MIN)
    assert report.ok, [check.to_json() for check in report.failures]
    assert report.data.corpus_dir is None  # a second-choice file was read: the stages must not read the corpus in place
    with pytest.raises(UnlearnopsError, match="privleak/forget.json"):
        plan(Corpus.load(tmp_path / "corpus"), list(METRICS))  # what evaluate would have said after the unlearn stage

    stage = corpus_of(report.data, Workspace.resolve(workspace))
    assert Corpus.load(stage.corpus).privleak["forget"] == report.data.privleak_forget == report.data.forget_texts
    result = evaluate_model(tiny_bench / "target", stage.corpus, retrain_auc=0.5, limit=2, show_progress=False)
    assert result["privleak"] is not None and result["auc"] is not None


@pytest.mark.slow
def test_forget_qa_without_few_shot_examples_borrows_the_retain_sides(tiny_bench, workspace, tmp_path):
    request = corpus_request(tmp_path, tiny_bench / "corpus")
    (tmp_path / "corpus" / "knowmem" / "forget_qa_icl.json").unlink()
    report = validate_request(request, workspace=workspace, min_privleak_texts=TINY_MIN)
    assert report.ok, [check.to_json() for check in report.failures]
    assert report.data.corpus_dir is None
    knowmem = report.data.stage_corpus().knowmem
    assert knowmem["forget_qa_icl"] == knowmem["retain_qa_icl"] == report.data.retain_qa_icl

    stage = corpus_of(report.data, Workspace.resolve(workspace))
    result = evaluate_model(tiny_bench / "target", stage.corpus, limit=2, metrics=("knowmem_f",), show_progress=False)
    assert result["knowmem_f"] is not None


def test_retain_qa_without_examples_lends_its_first_three(tmp_path):
    root = tmp_path / "request"
    shutil.copytree(DATA / "data", root / "data")
    shutil.copy(DATA / "valid-baseline.json", root / "request.json")  # retain QA: 4 items, no qa_icl
    report = validate_request(root / "request.json")
    assert report.ok, [check.to_json() for check in report.failures]
    questions = [qa.question for qa in report.data.retain_qa]
    knowmem = report.data.knowmem()
    assert [qa.question for qa in knowmem["retain_qa_icl"]] == questions[:3]
    assert [qa.question for qa in knowmem["retain_qa"]] == questions[3:]  # an example is never scored
    assert knowmem["forget_qa_icl"] == knowmem["retain_qa_icl"]


def test_a_qa_list_left_without_examples_is_refused_naming_the_field(tmp_path):
    root = tmp_path / "request"
    shutil.copytree(DATA / "data", root / "data")
    document = json.loads((DATA / "valid-baseline.json").read_text())
    (root / "data" / "retain_qa_two.json").write_text(json.dumps(json.loads((DATA / "data" / "retain_qa.json").read_text())[:2]))
    document["retain"]["qa"] = "data/retain_qa_two.json"
    (root / "request.json").write_text(json.dumps(document))
    problems = failing(validate_request(root / "request.json"))
    assert "add retain.qa_icl" in problems[("few_shot", "retain.qa")]
    assert "add forget.qa_icl" in problems[("few_shot", "forget.qa")]

    document["retain"] = {"texts": "data/retain.json"}  # no retain QA at all
    (root / "request.json").write_text(json.dumps(document))
    problems = failing(validate_request(root / "request.json"))
    assert list(problems) == [("few_shot", "forget.qa")]

    document["forget"]["qa_icl"] = "data/forget_qa.json"  # the requester's own examples
    (root / "request.json").write_text(json.dumps(document))
    report = validate_request(root / "request.json")
    assert report.ok, [check.to_json() for check in report.failures]
    assert report.data.knowmem()["forget_qa_icl"] == report.data.forget_qa
