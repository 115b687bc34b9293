"""`unlearnops run` end to end on the tiny bench with pipelines/ci.yaml and a real sqlite MLflow.

One workspace for the module: the first run's stages are cached, so the fail path, the
MLflow-project run and the resume test reuse them and only redo what they change.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import package_with_metric, write_bench_request
from unlearnops import registry
from unlearnops.audit import AuditLog
from unlearnops.evidence import Evidence
from unlearnops.fileio import sha256_file
from unlearnops.pipeline import run_lock, run_request
from unlearnops.workspace import Workspace

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "pipelines" / "ci.yaml"
FIRST, SECOND = "tiny-req-0001", "tiny-req-0002"


def pipeline_variant(path: Path, **sections) -> Path:
    """ci.yaml with some sections replaced (YAML is a superset of JSON)."""
    import yaml

    document = yaml.safe_load(CI.read_text())
    for name, values in sections.items():
        document[name] = {**document[name], **values}
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def env(tiny_bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    workspace = root / "workspace"
    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNLEARNOPS_HOME", str(workspace))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        ws = Workspace.resolve(workspace)
        first = write_bench_request(root / "requests" / "first.json", FIRST)
        summary = run_request(first, CI, ws, show_progress=False)
        yield {"root": root, "ws": ws, "uri": ws.tracking_uri, "first": first, "summary": summary}


def versions(env, request_id=None):
    found = registry.list_versions("unlearnops-bench", tracking_uri=env["uri"])
    return [v for v in found if request_id is None or request_id in v.request_ids]


def test_pass_path_registers_one_candidate_with_its_evidence(env):
    summary = env["summary"]
    assert summary.passed, summary.failures
    source, unlearned = sorted(versions(env), key=lambda v: int(v.version))
    assert source.aliases == ["production"] and source.tags[registry.TAG_ROLE] == "source"
    assert unlearned.aliases == ["candidate"] and unlearned.gate_passed
    assert unlearned.request_ids == [FIRST]
    tags = unlearned.tags
    assert tags[registry.TAG_SOURCE_VERSION] == "unlearnops-bench/1"
    assert tags[registry.TAG_QUANT_SCHEME] == "rtn-w4a16"
    assert tags[registry.TAG_METHOD] == "ga+gdr/lora"
    assert float(tags["unlearnops.metric.q.verbmem_f"]) == pytest.approx(summary.metrics["q.verbmem_f"], abs=1e-3)
    # The request's data: the content hash of its validated snapshot and where a workspace keeps it (no local path).
    snapshot = unlearned.request_records()[FIRST]
    assert snapshot["location"] == f"data/{snapshot['corpus_sha256']}" and (env["ws"].root / snapshot["location"] / "corpus").is_dir()
    # The policy the request was accepted with is kept with its record; no check passed unmeasured.
    assert unlearned.request_records()[FIRST]["policy"] == summary.gate["policy"]
    assert json.loads(tags[registry.TAG_GATE_SKIPPED]) == summary.gate["skipped"] == []
    assert summary.gate["privleak_reference"]["n_forget"] == 6
    # The registered artifact is the quantized model, byte for byte what was gated.
    downloaded = unlearned.download(env["root"] / "download")
    assert json.loads((downloaded / "config.json").read_text())["quantization_config"]
    assert registry.sha256_tree(downloaded) == tags[registry.TAG_MODEL_SHA]
    # The signed registration record vouches for the version, and registry and log agree both ways.
    audit = AuditLog(env["ws"].audit_log)
    registered = [r for r in audit.records() if r["event"] == "version.registered" and r["fields"]["version"] == 2]
    assert tags[registry.TAG_AUDIT_HEAD] == registered[0]["hash"]
    assert registered[0]["fields"]["model_sha256"] == tags[registry.TAG_MODEL_SHA]
    assert registered[0]["fields"]["gate_report_sha256"] == sha256_file(Path(summary.reports_dir) / "gate.json")
    assert Evidence(env["ws"]).verify().ok
    # Registered but not deployed: the request is pending, aged against its deadline.
    pending = {entry["request_id"]: entry for entry in audit.status()["pending"]}
    assert pending[FIRST]["deadline"].startswith("2026-12-02T09:30:00")


def test_mlflow_holds_a_parent_run_with_a_child_per_stage(env):
    client = registry.client(env["uri"])
    parent = client.get_run(env["summary"].run_id)
    assert {"fp.verbmem_f", "q.verbmem_f", "q.knowmem_r", "source.knowmem_r"} <= set(parent.data.metrics)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {run.info.run_name for run in children} >= {"source", "unlearn", "quantize", "gate"}
    artifacts = {item.path for folder in ("gate", "requests") for item in client.list_artifacts(parent.info.run_id, folder)}
    assert {"gate/gate.json", "gate/gate.md", "gate/gate.junit.xml", "gate/gate.png", f"requests/{FIRST}.json"} <= artifacts
    digest = Path(client.download_artifacts(parent.info.run_id, f"requests/{FIRST}.json", str(env["root"] / "digest"))).read_text()
    forget_text = json.loads((env["ws"].bench_dir("tiny") / "corpus" / "raw" / "forget.json").read_text())[0]
    assert forget_text[:40] not in digest and '"request_sha256"' in digest


def test_fail_path_registers_nothing_and_exits_1(env, cli, tmp_path):
    impossible = pipeline_variant(tmp_path / "impossible.yaml", gate={"max_verbmem_f": 0.0})
    before = len(versions(env))
    result = cli("run", "--request", env["first"], "--pipeline", impossible, "--json")
    assert result.exit_code == 1
    assert "gate failed" in result.stderr and "nothing registered" in result.stderr
    document = json.loads(result.stdout)
    assert document["passed"] is False and document["version"] is None
    assert any(name.startswith("verbmem_f") for name in document["failures"])
    # Only the gate changed: every earlier stage resumed from the workspace.
    cached = {stage["stage"]: stage["cached"] for stage in document["stages"]}
    assert cached["unlearn"] and cached["quantize"] and cached["evaluate:quantized"] and not cached["gate"]
    assert len(versions(env)) == before


def test_a_second_concurrent_run_is_refused(env, cli):
    with run_lock(env["ws"]):
        result = cli("run", "--request", env["first"], "--pipeline", CI)
    assert result.exit_code == 1 and "another `unlearnops run`" in result.stderr


def test_second_request_inherits_the_first_and_rechecks_its_forget_set(env, cli, tmp_path):
    # Request 2 forgets from the candidate of request 1, on a corpus that differs from the bench's
    # (one retain article fewer), so the first request's forget set is evaluated separately.
    data = env["root"] / "second"
    shutil.copytree(env["ws"].bench_dir("tiny") / "corpus", data / "corpus")
    shutil.copy(env["ws"].bench_dir("tiny") / "bench.json", data / "bench.json")
    retain = data / "corpus" / "raw" / "retain.json"
    retain.write_text(json.dumps(json.loads(retain.read_text())[:-1]))
    request = write_bench_request(data / "second.json", SECOND, model="models:/unlearnops-bench@candidate", data={"corpus": "corpus"})
    summary = run_request(request, CI, env["ws"], show_progress=False)
    assert summary.passed, summary.failures
    assert summary.version["request_ids"] == [FIRST, SECOND]
    assert summary.version["source_version"] == "unlearnops-bench/2"
    inherited = {c["name"]: c for c in summary.gate["checks"] if c["name"].startswith(f"inherited.{FIRST}.")}
    assert set(inherited) == {f"inherited.{FIRST}.verbmem_f", f"inherited.{FIRST}.knowmem_f"}
    assert all(check["measured"] is not None and check["status"] == "passed" for check in inherited.values())
    assert all("the policy the request was accepted with" in check["detail"] for check in inherited.values())
    assert any(stage.stage == f"evaluate:inherited {FIRST}" and not stage.cached for stage in summary.stages)

    # The standalone gate re-checks the same lineage from the registry (--lineage).
    ref = f"unlearnops-bench/{summary.version['version']}"
    model = registry.resolve(ref, tracking_uri=env["uri"]).download(tmp_path / "v")
    result = cli("gate", "--model", model, "--corpus", data / "corpus", "--policy", CI, "--lineage", ref, "--limit", "8", "--json")
    assert result.exit_code == 0, result.stderr
    names = {check["name"] for check in json.loads(result.stdout)["checks"]}
    assert {f"inherited.{FIRST}.verbmem_f", f"inherited.{SECOND}.knowmem_f"} <= names

    # An insider loosens the policy FIRST was accepted with, in the registry alone: the signed record
    # holds the policy's hash, so the lineage check fails that request instead of applying a looser bound.
    tag = registry.request_tag(FIRST)
    record = json.loads(registry.resolve(ref, tracking_uri=env["uri"]).tags[tag])
    record["policy"]["max_verbmem_f"] = 100.0
    registry.set_version_tag(summary.version["name"], summary.version["version"], tag, json.dumps(record), tracking_uri=env["uri"])
    result = cli("gate", "--model", model, "--corpus", data / "corpus", "--policy", CI, "--lineage", ref, "--limit", "8", "--json")
    assert result.exit_code == 1
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert checks[f"inherited.{FIRST}.verbmem_f"]["status"] == "failed"
    assert "policy it was accepted with is changed" in checks[f"inherited.{FIRST}.verbmem_f"]["detail"]


def test_resume_after_sigkill_during_quantize_registers_once(env, tmp_path):
    # A different quantization (groups of 64): unlearning is cached, quantize runs and is killed.
    pipeline = pipeline_variant(tmp_path / "g64.yaml", quantize={"group_size": 64})
    quantize_dir = env["ws"].stages_dir / "quantize"
    before = len(versions(env))
    command = [sys.executable, "-c", "from unlearnops.cli import run; run()", "run", "--request", str(env["first"]), "--pipeline", str(pipeline)]
    process = subprocess.Popen(command, env={**os.environ, "UNLEARNOPS_HOME": str(env["ws"].root)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 150
    while not list(quantize_dir.glob(".*.partial")):
        assert process.poll() is None, "the run ended before quantize started"
        assert time.monotonic() < deadline, "quantize did not start in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(versions(env)) == before  # killed before register: nothing half-registered

    summary = run_request(env["first"], pipeline, env["ws"], show_progress=False)
    stages = {stage.stage: stage.cached for stage in summary.stages}
    assert stages["unlearn"] is True and stages["quantize"] is False
    assert not list(quantize_dir.glob(".*.partial"))
    assert len(versions(env)) == before + 1
    again = run_request(env["first"], pipeline, env["ws"], show_progress=False)
    assert again.version["version"] == summary.version["version"] and len(versions(env)) == before + 1


def test_mlflow_run_entry_point(env):
    mlflow = Path(sys.executable).with_name("mlflow")
    environment = {
        **os.environ,
        "UNLEARNOPS_HOME": str(env["ws"].root),
        "MLFLOW_TRACKING_URI": env["uri"],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [str(mlflow), "run", str(REPO), "-e", "run", "-P", f"request={env['first']}", "-P", f"pipeline={CI}",
               "--env-manager", "local", "--experiment-name", "unlearnops"]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    client = registry.client(env["uri"])
    experiment = client.get_experiment_by_name("unlearnops")
    runs = client.search_runs([experiment.experiment_id], "tags.`mlflow.project.entryPoint` = 'run'")
    assert runs and runs[0].data.tags["unlearnops.request_id"] == FIRST
    assert "q.verbmem_f" in runs[0].data.metrics


def test_an_invalid_request_is_rejected_before_any_stage(env, cli, tmp_path):
    request = write_bench_request(tmp_path / "bad.json", "tiny-req-bad")
    document = json.loads(request.read_text())
    document["legal_basis"] = {"basis": "because"}
    request.write_text(json.dumps(document))
    stages_before = sorted(p.name for p in env["ws"].stages_dir.glob("*/*"))
    result = cli("run", "--request", request, "--pipeline", CI)
    assert result.exit_code == 1
    assert "legal_basis.basis" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in env["ws"].stages_dir.glob("*/*")) == stages_before


def test_stage_store_rebuilds_an_output_without_its_completion_marker(tmp_path):
    from unlearnops.pipeline.stages import MARKER, StageStore

    store = StageStore(tmp_path)
    builds = []

    def build(out):
        builds.append(out)
        (out / "weights").write_text("complete")
        return {"size": 8}

    first = store.run("quantize", {"scheme": "rtn"}, {"model": "abc"}, build)
    assert not first.cached and (first.path / MARKER).is_file()
    assert store.run("quantize", {"scheme": "rtn"}, {"model": "abc"}, build).cached
    (first.path / MARKER).unlink()  # as if the copy into place had been interrupted
    (first.path / "weights").write_text("half")
    (tmp_path / "quantize" / f".{first.key}.x.partial").mkdir()  # a killed run's temporary dir
    again = store.run("quantize", {"scheme": "rtn"}, {"model": "abc"}, build)
    assert not again.cached and len(builds) == 2
    assert (again.path / "weights").read_text() == "complete" and again.record["size"] == 8
    assert not list((tmp_path / "quantize").glob(".*.partial"))
    assert store.run("quantize", {"scheme": "gptq"}, {"model": "abc"}, build).key != first.key


RUN_WITH_THE_EXAMPLE_METRIC = """
import json, sys
from unlearnops.pipeline import run_request
from unlearnops.workspace import Workspace

summary = run_request(sys.argv[1], sys.argv[2], Workspace.resolve(sys.argv[3]), show_progress=False)
print(json.dumps(summary.to_dict(), default=str))
"""


def test_every_registered_metric_reaches_the_gate_mlflow_and_the_registry(env, tmp_path):
    # The worked example of docs/architecture.md, dropped into a copy of the package as one module.
    package = package_with_metric(tmp_path / "package", REPO / "tests" / "data" / "metrics" / "knowmem_f_em.py")
    pipeline = pipeline_variant(tmp_path / "em.yaml", gate={"max_knowmem_f_em": 100.0, "max_quant_gap": 100.0})
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", RUN_WITH_THE_EXAMPLE_METRIC, str(env["first"]), str(pipeline), str(env["ws"].root)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    stages = {stage["stage"]: stage["cached"] for stage in summary["stages"]}
    assert stages["unlearn"] and stages["quantize"] and not stages["evaluate:quantized"]  # only what measures it is redone
    checks = {check["name"]: check for check in summary["gate"]["checks"]}
    assert checks["knowmem_f_em"]["measured"] is not None and "quantization_gap.knowmem_f_em" in checks
    assert summary["passed"], summary["failures"]
    assert {"source.knowmem_f_em", "fp.knowmem_f_em", "q.knowmem_f_em"} <= set(summary["metrics"])
    client = registry.client(env["uri"])
    assert "q.knowmem_f_em" in client.get_run(summary["run_id"]).data.metrics
    children = client.search_runs([client.get_run(summary["run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['run_id']}' and attributes.run_name = 'evaluate:quantized'")
    assert "metrics.knowmem_f_em" in children[0].data.metrics
    tags = registry.resolve(f"unlearnops-bench/{summary['version']['version']}", tracking_uri=env["uri"]).tags
    assert float(tags["unlearnops.metric.q.knowmem_f_em"]) == pytest.approx(summary["metrics"]["q.knowmem_f_em"], abs=1e-3)


def test_run_ends_with_the_workspace_and_the_exact_commands_to_serve(env, cli):
    # Last in this module: it moves @production of the shared workspace's model.
    document = json.loads(cli("run", "--request", env["first"], "--pipeline", CI, "--json").stdout)
    result = cli("run", "--request", env["first"], "--pipeline", CI, "--workspace", env["ws"].root)
    assert result.exit_code == 0, result.stderr
    assert f"workspace: {env['ws'].root}" in result.stdout and document["workspace"] == str(env["ws"].root)
    commands = [line.strip() for line in result.stdout.splitlines() if line.startswith("  unlearnops ")]
    version = env["summary"].version
    assert commands == document["next_commands"] == [
        f"unlearnops promote {version['name']} {version['version']} --workspace {env['ws'].root}",
        f"unlearnops serve --model {version['name']}@production --workspace {env['ws'].root}",
    ]
    # The printed commands work as printed: promote, then the model `serve` names is that version.
    promoted = cli(*shlex.split(commands[0])[1:])
    assert promoted.exit_code == 0, promoted.stderr
    serve_args = shlex.split(commands[1])
    promoted_version = registry.resolve(serve_args[serve_args.index("--model") + 1], tracking_uri=env["uri"])
    assert promoted_version.version == version["version"]
    # A version already @production needs no promote; a failed gate has nothing to serve.
    from unlearnops.cli.pipeline import next_commands

    live = dataclasses.replace(env["summary"], version=promoted_version.to_dict())
    assert next_commands(live) == [commands[1]]
    assert next_commands(dataclasses.replace(env["summary"], passed=False, version=None)) == []
