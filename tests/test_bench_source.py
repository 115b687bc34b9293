"""A request whose data is a bench gets that bench's target, or is refused (bench/source.py).

The defect: `models:/unlearnops-bench@production` resolved to whichever bench target a workspace
registered first, so a request on another bench silently unlearned the wrong model. Here the
workspace's generic name holds another model (the tiny bench's retrain model, registered as a
baseline the way `unlearnops register --baseline` does it): a tiny-bench request naming it is
refused before anything is unlearned, with the fix in the message, and the bench's own name
(`unlearnops-bench-tiny`) gets the tiny target, checked by hash, through a real `unlearnops run`.
"""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import pytest

from helpers import write_bench_request
from unlearnops import registry
from unlearnops.audit import AuditLog
from unlearnops.bench import source as bench_source
from unlearnops.fileio import read_json
from unlearnops.request.schema import BenchSource
from unlearnops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "pipelines" / "ci.yaml"


def test_bench_names_are_the_request_schemas_and_only_they_are_bench_sources():
    assert set(typing.get_args(BenchSource.model_fields["bench"].annotation)) == set(bench_source.benches())
    assert bench_source.bench_of("unlearnops-bench") == ""
    assert bench_source.bench_of("unlearnops-bench-smollm2-135m") == "smollm2-135m"
    assert bench_source.bench_of("unlearnops-bench-tiny") == "tiny"
    # a model a user registered under a name that merely starts like one (the examples' output name)
    assert bench_source.bench_of("unlearnops-bench-unlearned") is None
    assert bench_source.is_bench_source("models:/unlearnops-bench-default@production")
    assert not bench_source.is_bench_source("models:/unlearnops-bench-default@candidate")
    assert not bench_source.is_bench_source("models:/unlearnops-bench-unlearned@production")


@pytest.fixture(scope="module")
def other_source(tiny_bench, tmp_path_factory):
    """A workspace with the tiny bench whose generic bench name already holds another model."""
    root = tmp_path_factory.mktemp("bench-source")
    workspace = root / "workspace"
    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNLEARNOPS_HOME", str(workspace))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        from unlearnops.evidence import Evidence

        ws = Workspace.resolve(workspace)
        Evidence(ws).register_source(tiny_bench / "retrain", name=registry.SOURCE_MODEL_NAME)
        yield {"root": root, "ws": ws, "uri": ws.tracking_uri}


def _stage_dirs(ws: Workspace, stage: str) -> list[Path]:
    return sorted((ws.stages_dir / stage).glob("*")) if (ws.stages_dir / stage).is_dir() else []


def test_the_generic_name_holding_another_model_is_refused_naming_the_bench_own_name(other_source, cli):
    env = other_source
    request = write_bench_request(env["root"] / "generic.json", "source-generic-0001")  # models:/unlearnops-bench@production
    result = cli("run", "--request", request, "--pipeline", CI, "--json")
    assert result.exit_code == 1, result.stdout
    error = json.loads(result.stdout)
    message = error["error"]
    assert error["field"] == "model"
    assert message.startswith("model: models:/unlearnops-bench@production is unlearnops-bench/1")
    assert "not from the target of the request's bench tiny" in message
    assert "models:/unlearnops-bench-tiny@production" in message and "nothing unlearned" in message
    assert "Traceback" not in result.stderr
    assert _stage_dirs(env["ws"], "unlearn") == []  # refused before unlearning
    assert [v.version for v in registry.list_versions(registry.SOURCE_MODEL_NAME, tracking_uri=env["uri"])] == ["1"]
    finished = [r["fields"] for r in AuditLog(env["ws"].audit_log).records() if r["event"] == "run.finished"]
    assert finished[-1]["request_id"] == "source-generic-0001" and finished[-1]["status"] == "failed"


def test_another_bench_own_name_is_refused_without_building_that_bench(other_source, cli):
    env = other_source
    request = write_bench_request(env["root"] / "other.json", "source-other-0001", model="models:/unlearnops-bench-default@production")
    result = cli("run", "--request", request, "--pipeline", CI)
    assert result.exit_code == 1
    assert "models:/unlearnops-bench-default is the default bench's target, but the request's data is the tiny bench" in result.stderr
    assert "models:/unlearnops-bench-tiny@production" in result.stderr
    assert not env["ws"].bench_dir("default").exists()  # nothing built for a name that was refused
    with pytest.raises(Exception):
        registry.resolve("unlearnops-bench-default@production", tracking_uri=env["uri"])


@pytest.mark.slow
def test_the_bench_own_name_unlearns_that_bench_target(other_source, tiny_bench):
    from unlearnops.pipeline import run_request

    env = other_source
    request = write_bench_request(env["root"] / "own.json", "source-own-0001", model="models:/unlearnops-bench-tiny@production")
    summary = run_request(request, CI, env["ws"], show_progress=False)
    assert summary.passed, summary.failures
    assert summary.version["source_version"] == "unlearnops-bench-tiny/1"
    source = registry.resolve("unlearnops-bench-tiny@production", tracking_uri=env["uri"])
    assert source.tags[registry.TAG_ROLE] == "source"
    target_sha = read_json(tiny_bench / "bench.json")["models"]["target"]["sha256"]
    assert source.tags[registry.TAG_MODEL_SHA] == target_sha
    (source_stage,) = _stage_dirs(env["ws"], "source")
    assert json.loads((source_stage / "stage.json").read_text())["model_sha256"] == target_sha
