"""Acceptance: forget request -> pipeline -> promote -> `unlearnops serve` (real vLLM) -> verify-endpoint -> report -> audit.

Everything goes through the CLI, `serve` as its own process (as an operator or systemd runs
it) and stopped with SIGTERM. Two vLLM starts, side by side (~45-250 s each on 2 shared CPU
cores): `serve`'s, and a second server started by hand on the source model under the same served
name (and the same `root`), which `verify-endpoint` must catch as a mismatch.

The AVX2 route is forced (`--isa avx2`), so the test serves the same way on an AVX2-only CPU and
on an AVX-512 one: with a CPU vLLM, the W4A16 model is served as its dense copy, derived from the
registered files and recorded in deployment.started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import write_bench_request
from unlearnops import audit, registry, serve
from unlearnops.fileio import canonical_json, sha256_bytes, sha256_tree
from unlearnops.report import find_chromium
from unlearnops.workspace import Workspace

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get(serve.VLLM_PYTHON_ENV),
        reason=f"needs the vLLM serving venv: run `bash deploy/setup-vllm.sh` and set {serve.VLLM_PYTHON_ENV}=.venv-vllm/bin/python",
    ),
]

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "pipelines" / "ci.yaml"
REQUEST_ID = "tiny-serve-0001"
API_KEY = "chain-key-0123456789"
START_TIMEOUT_S = 600  # derive + vLLM start; 250 s measured at load average 15 on 2 cores


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=120) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {}


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _wait_live(process: subprocess.Popen, log: audit.AuditLog, stderr_path: Path) -> dict:
    """The deployment.started record (written once /health is 200), or fail with serve's stderr."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`unlearnops serve` exited {process.returncode} before serving:\n{stderr_path.read_text()[-3000:]}")
        live = log.status()["live"] if log.path.exists() else []
        if live:
            return live[0]
        time.sleep(1.0)
    pytest.fail(f"no live deployment after {START_TIMEOUT_S} s:\n{stderr_path.read_text()[-3000:]}")


@pytest.fixture
def chain_workspace(tiny_bench, tmp_path, monkeypatch):
    workspace = tmp_path / "workspace"
    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")  # the request's bench, prebuilt
    monkeypatch.setenv("UNLEARNOPS_HOME", str(workspace))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return workspace


class RogueServer(threading.Thread):
    """vLLM started by hand (no `unlearnops serve`, no audit record) on another model, in the background."""

    def __init__(self, model_dir: Path, served: str, port: int, log: Path):
        super().__init__(daemon=True)
        self.command = serve.build_vllm_command(model_dir, served, "127.0.0.1", port, API_KEY, 512,
                                                vllm_python=os.environ[serve.VLLM_PYTHON_ENV], dtype="float32")
        self.log, self.server, self.error = log, None, None

    def run(self) -> None:
        try:
            self.server = serve.start_vllm(self.command, self.log, health_timeout_s=START_TIMEOUT_S)
        except BaseException as err:  # reported by the test when it needs the server
            self.error = err

    def stop(self) -> None:
        self.join(timeout=START_TIMEOUT_S)
        if self.server is not None:
            self.server.stop()


def test_request_to_served_version_to_verified_audit_log(cli, chain_workspace, tmp_path):
    workspace = chain_workspace
    log = audit.AuditLog(workspace / "audit.jsonl")

    # 1. one pipeline run registers a gate-passed candidate; promote it
    summary = _json(cli("run", "--request", write_bench_request(tmp_path / "request.json", REQUEST_ID), "--pipeline", CI, "--json"))
    assert summary["passed"], summary["failures"]
    name, version = summary["version"]["name"], str(summary["version"]["version"])
    promoted = _json(cli("promote", "--model", f"{name}/{version}", "--json"))
    assert "production" in promoted["aliases"]

    # 2. the route and the command, decided before anything starts: on a CPU vLLM with AVX2 forced,
    #    the W4A16 artifact is served as a dense float32 copy (no W4A16 kernel in the AVX2 build)
    plan = _json(cli("serve", "--model", f"{name}@production", "--api-key", API_KEY, "--isa", "avx2", "--dry-run", "--json"))
    argv = plan["command"]["argv"]
    cpu = serve.inspect_vllm(os.environ[serve.VLLM_PYTHON_ENV]).flavor == "cpu"
    assert plan["route"]["name"] == ("dense" if cpu else "native"), plan["route"]
    assert (argv[argv.index("--dtype") + 1] if "--dtype" in argv else None) == ("float32" if cpu else None)
    registered_sha = registry.resolve(f"{name}@production", tracking_uri=Workspace.resolve(workspace).tracking_uri).tags[registry.TAG_MODEL_SHA]
    assert plan["artifact_sha256"] == registered_sha

    # 3. the real CLI serves it in its own process; beside it, by hand, the source model under the
    #    same served name, from a directory named like the served one (so /v1/models cannot tell them apart)
    port, stderr_path = _free_port(), tmp_path / "serve.stderr"
    impostor_dir = tmp_path / "impostor" / Path(plan["served_dir"]).name
    shutil.copytree(workspace / "bench" / "tiny" / "target", impostor_dir)
    rogue = RogueServer(impostor_dir, f"{name}/{version}", _free_port(), tmp_path / "rogue-vllm.log")
    rogue.start()
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "unlearnops.cli", "serve", "--model", f"{name}@production", "--api-key", API_KEY, "--isa", "avx2",
             "--port", str(port), "--max-model-len", "512", "--health-timeout", str(START_TIMEOUT_S), "--json"],
            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
        )
    try:
        started = _wait_live(process, log, stderr_path)
        base, served = f"http://127.0.0.1:{port}", f"{name}/{version}"
        status, models = _http("GET", base + "/v1/models", key=API_KEY)
        assert status == 200 and [m["id"] for m in models["data"]] == [served]
        # `root` names the served directory, never a path of this machine
        assert models["data"][0]["root"] == Path(plan["served_dir"]).name and str(tmp_path) not in json.dumps(models)
        prompt = {"model": served, "prompt": "The", "max_tokens": 4, "temperature": 0}
        status, completion = _http("POST", base + "/v1/completions", prompt, key=API_KEY)
        assert status == 200 and isinstance(completion["choices"][0]["text"], str)
        assert _http("POST", base + "/v1/completions", prompt)[0] == 401
        # the bench tokenizer has no chat template: the plain one makes chat a completion of the text
        chat = {"model": served, "messages": [{"role": "user", "content": "The"}], "max_tokens": 4, "temperature": 0}
        status, answer = _http("POST", base + "/v1/chat/completions", chat, key=API_KEY)
        assert status == 200 and answer["choices"][0]["message"]["content"] == completion["choices"][0]["text"]

        live = _json(cli("audit", "status", "--json"))
        assert [d["deployment_id"] for d in live["live"]] == [started["deployment_id"]]
        assert (live["live"][0]["name"], live["live"][0]["version"]) == (name, version)
        assert REQUEST_ID in live["live"][0]["request_ids"] and REQUEST_ID in live["satisfied"]
        assert REQUEST_ID not in {p["request_id"] for p in live["pending"]}

        # 3b. the live endpoint measured through its API agrees with the registered evaluation, and is recorded
        verified = _json(cli("verify-endpoint", "--url", base, "--request", REQUEST_ID, "--api-key", API_KEY, "--json"))
        assert verified["passed"] and verified["deployment"]["deployment_id"] == started["deployment_id"]
        measured = {c["name"]: c for c in verified["checks"]}
        assert {"served_model", "verbmem_f", "knowmem_f", "knowmem_r", "auc"} <= set(measured)
        assert verified["measured"]["requests"] == sum(verified["measured"]["counts"].values()) and verified["measured"]["concurrency"] > 1
        # the same files, greedy: the same outputs (docs/report.md: measured equal to the last digit on this route)
        for metric in ("verbmem_f", "knowmem_f", "knowmem_r"):
            assert abs(measured[metric]["difference"]) <= 1e-9, measured[metric]

        # 3c. the source model under the same served name, at another address: found by its served name, caught
        rogue.join(timeout=START_TIMEOUT_S)
        assert rogue.server is not None, f"the second vLLM did not start: {rogue.error}"
        impostor = cli("verify-endpoint", "--url", rogue.server.base_url, "--api-key", API_KEY, "--json")
        assert impostor.exit_code == 1, impostor.stderr
        caught = json.loads(impostor.stdout)
        assert caught["event"] == audit.ENDPOINT_MISMATCH and caught["deployment"]["deployment_id"] == started["deployment_id"]
        assert caught["server"]["root"] == models["data"][0]["root"]  # indistinguishable by name and root
        assert {"verbmem_f", "knowmem_f"} <= {c["name"] for c in caught["checks"] if c["status"] == "failed"}
    finally:
        rogue.stop()
        process.send_signal(signal.SIGTERM)  # what systemd / kubectl send
        out, _ = process.communicate(timeout=90)
    assert process.returncode == 0, stderr_path.read_text()[-3000:]
    assert json.loads(out)["served_model_name"] == served  # the ready document

    # 4. stopped: nothing live, the chain and the registry anchors verify
    after = _json(cli("audit", "status", "--json"))
    assert after["live"] == [] and REQUEST_ID in {p["request_id"] for p in after["pending"]}
    records = {r["event"]: r["fields"] for r in log.records() if r["event"].startswith("deployment.")}
    assert records[audit.DEPLOYMENT_STOPPED]["reason"] == "signal SIGTERM"
    recorded = records[audit.DEPLOYMENT_STARTED]
    assert (recorded["host"], recorded["port"], recorded["api_key_required"]) == ("127.0.0.1", port, True)
    assert recorded["artifact_sha256"] == registered_sha and recorded["request_ids"] == [REQUEST_ID]
    # the files vLLM was handed, by hash, and how they derive from the registered ones
    assert recorded["served_sha256"] == sha256_tree(plan["served_dir"])
    if cpu:
        assert (recorded["route"], recorded["dtype"], recorded["vllm_extension"]) == ("dense", "float32", "_C_AVX2")
        assert recorded["derived_from_sha256"] == registered_sha and recorded["derivation_method"] == "dequantize-compressed-tensors"
        record_path = Path(plan["served_dir"] + ".json")  # the full derivation record, pinned by its hash
        derivation = json.loads(record_path.read_text())
        assert recorded["derivation_record_sha256"] == sha256_bytes(canonical_json(derivation))
        assert (derivation["source_sha256"], derivation["served_sha256"]) == (registered_sha, recorded["served_sha256"])
    else:
        assert recorded["route"] == "native" and recorded["served_sha256"] == registered_sha
    with socket.socket() as probe:
        # vLLM is gone with serve: nothing listens on its port (SO_REUSEADDR ignores TIME_WAIT).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    verified_log = _json(cli("audit", "verify", "--json"))
    assert verified_log["ok"] and verified_log["versions_checked"] >= 2
    assert API_KEY not in log.path.read_text()
    endpoint_records = [r for r in log.records() if r["event"] in (audit.ENDPOINT_VERIFIED, audit.ENDPOINT_MISMATCH)]
    assert [r["event"] for r in endpoint_records] == [audit.ENDPOINT_VERIFIED, audit.ENDPOINT_MISMATCH]
    assert endpoint_records[0]["fields"]["endpoint"] == base and endpoint_records[1]["fields"]["endpoint"] == rogue.server.base_url

    # 4b. the request's report shows the verification and the mismatch; a person's browser sees the same
    html = tmp_path / "report.html"
    shown = _json(cli("report", "--request", REQUEST_ID, "--out", html, "--json"))
    assert shown["gate_passed"] and shown["audit_ok"]
    assert {(e["endpoint"], e["passed"]) for e in shown["endpoint"]} == {(base, True), (rogue.server.base_url, False)}
    page_text = html.read_text()
    assert "MISMATCH" in page_text and "verified" in page_text and REQUEST_ID in page_text
    if find_chromium() is not None:
        from browser import Browser

        with Browser() as browser:
            page = browser.open(html, screenshot=tmp_path / "report.png")
            visible = page.evaluate("document.body.innerText")
        assert f"MISMATCH at {rogue.server.base_url}" in visible and page.network_requests == [] and page.console_errors == []

    # 5. a copy of the log with one field edited fails verify, naming that record
    tampered_ws = tmp_path / "tampered"
    tampered_ws.mkdir()
    lines = log.path.read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if json.loads(line)["event"] == audit.DEPLOYMENT_STARTED)
    record = json.loads(lines[target])
    record["fields"]["port"] = port + 1  # the hash is left as it was
    lines[target] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    (tampered_ws / "audit.jsonl").write_text("\n".join(lines) + "\n")
    failed = cli("audit", "verify", "--workspace", tampered_ws, "--json")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["first_bad_seq"] == record["seq"]
    human = cli("audit", "verify", "--workspace", tampered_ws)
    assert human.exit_code == 1 and f"record {record['seq']}" in human.stdout
