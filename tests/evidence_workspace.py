"""A workspace with real evidence in it, built once per test session and shared by the report and endpoint tests.

Two forget requests on the tiny bench through `pipelines/ci.yaml` (the real pipeline: validation,
unlearning, quantization, evaluation, gate, registration in MLflow on sqlite, the audit log):
`dsr-test-0001` makes version 2 of the bench model, which is promoted; `dsr-test-0002` is made
from version 2 and so also satisfies `dsr-test-0001` (version 3, a later version that re-checked it);
`dsr-test-0003` asks for a VerbMem limit of 1, which the gate refuses: nothing is registered for it.
Tests copy nothing they change back: the ones that tamper work on copies or restore what they touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from helpers import write_bench_request

REPO = Path(__file__).resolve().parents[1]
FIRST, SECOND, REFUSED = "dsr-test-0001", "dsr-test-0002", "dsr-test-0003"


@dataclass(frozen=True)
class EvidenceWorkspace:
    root: Path
    request_file: Path  # dsr-test-0001's request, as received
    name: str
    version: str  # made for dsr-test-0001, @production
    later_version: str  # made for dsr-test-0002
    bench: Path
    registered_dir: Path  # the registered files of `version` (the model a faithful server serves)

    def env(self) -> dict[str, str]:
        return {"UNLEARNOPS_HOME": str(self.root)}


@pytest.fixture(scope="module")
def evidence(tmp_path_factory, tiny_bench) -> EvidenceWorkspace:
    return evidence_workspace(tmp_path_factory, tiny_bench)


@pytest.fixture
def env(evidence, monkeypatch) -> EvidenceWorkspace:
    """The evidence workspace as the CLI's workspace, with no registry or API key from the caller's shell."""
    monkeypatch.setenv("UNLEARNOPS_HOME", str(evidence.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("UNLEARNOPS_API_KEY", raising=False)
    return evidence


def record_deployment(evidence: EvidenceWorkspace, port: int, *, key: str | None = None) -> dict:
    """A deployment.started of `evidence.version` at 127.0.0.1:port, with the fields `unlearnops serve` records."""
    from unlearnops import audit, serve

    served = serve.served_model_name(evidence.name, evidence.version)  # what serve names it, whatever the server says
    command = serve.build_vllm_command(evidence.registered_dir, served, "127.0.0.1", port, key, None, vllm_python=sys.executable)
    fields = serve.Deployment(evidence.name, evidence.version, [FIRST]).started_fields(command, served)
    return audit.AuditLog(evidence.root / "audit.jsonl").append(audit.DEPLOYMENT_STARTED, **fields)["fields"]


@contextlib.contextmanager
def deployed(evidence: EvidenceWorkspace, port: int, *, key: str | None = None):
    """record_deployment, then its deployment.stopped when the block ends."""
    from unlearnops import audit

    started = record_deployment(evidence, port, key=key)
    try:
        yield started
    finally:
        audit.AuditLog(evidence.root / "audit.jsonl").append(audit.DEPLOYMENT_STOPPED, deployment_id=started["deployment_id"],
                                                              reason="test finished")


def evidence_workspace(tmp_path_factory, tiny_bench: Path) -> EvidenceWorkspace:
    base = tmp_path_factory.getbasetemp()
    home = base / "evidence-workspace"
    with FileLock(str(base / "evidence-workspace.lock")):
        done = home / "built.json"
        if not done.is_file():
            shutil.rmtree(home, ignore_errors=True)
            _build(home, tiny_bench)
        facts = json.loads(done.read_text())
    return EvidenceWorkspace(home / "workspace", Path(facts["request_file"]), facts["name"], facts["version"], facts["later_version"],
                             home / "workspace" / "bench" / "tiny", Path(facts["registered_dir"]))


def _build(home: Path, tiny_bench: Path) -> None:
    from unlearnops import registry
    from unlearnops.evidence import Evidence
    from unlearnops.pipeline import run_request
    from unlearnops.workspace import Workspace

    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        root = home / "workspace"
        shutil.copytree(tiny_bench, root / "bench" / "tiny")
        workspace = Workspace.resolve(root)
        first = write_bench_request(home / "requests" / "first.json", FIRST)
        request = json.loads(first.read_text())
        request["requester"] = {"name": "Data Protection Office", "contact": "dpo@example.org"}
        request["legal_basis"] = {"basis": "gdpr-art17", "reference": "DSR ticket 0001"}
        first.write_text(json.dumps(request))
        made = run_request(first, REPO / "pipelines" / "ci.yaml", workspace, show_progress=False)
        assert made.passed, made.failures
        name, version = made.version["name"], str(made.version["version"])
        Evidence(workspace).promote(f"{name}/{version}")
        second = write_bench_request(home / "requests" / "second.json", SECOND, model=f"models:/{name}/{version}")
        later = run_request(second, REPO / "pipelines" / "ci.yaml", workspace, show_progress=False)
        assert later.passed, later.failures
        # a request whose own (tighter) limit the model cannot meet: the gate fails, nothing is registered
        refused = write_bench_request(home / "requests" / "refused.json", REFUSED)
        document = json.loads(refused.read_text())
        document["policy_overrides"] = {"max_verbmem_f": 1.0}
        refused.write_text(json.dumps(document))
        assert not run_request(refused, REPO / "pipelines" / "ci.yaml", workspace, show_progress=False).passed
        registered = registry.resolve(f"{name}/{version}", tracking_uri=workspace.tracking_uri).download(home / "registered")
        (home / "built.json").write_text(json.dumps({
            "request_file": str(first), "name": name, "version": version, "later_version": str(later.version["version"]),
            "registered_dir": str(registered)}))
    finally:
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
