"""Serve a registered, gate-passed model with vLLM's OpenAI-compatible server, with audit records.

Three layers, each usable on its own:

- `build_vllm_command(...)` -> the exact argv + environment (pure; `--dry-run` prints it).
- `start_vllm(command, log_path)` -> a `VllmServer` handle once `GET /health` answers 200;
  `running_server(...)` wraps it in a context manager that records `deployment.started` /
  `deployment.stopped` in the audit log (what tests and the pipeline use on a model directory).
- `serve(ref, ...)` resolves `NAME@alias` in the registry, refuses a version whose gate did not
  pass, downloads it into the workspace and serves it until the server exits or a signal arrives.

vLLM runs from its own interpreter ($UNLEARNOPS_VLLM_PYTHON / --vllm-python): vLLM and
llm-compressor pin clashing torch and compressed-tensors versions, so they cannot share a venv.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import audit
from .audit.backends import storage_for
from .errors import UnlearnopsError
from .fileio import atomic_dir, read_json, sha256_tree, write_json
from .registry import TAG_GATE, TAG_MODEL_SHA, RegisteredVersion, client, error_summary, resolve, tracking_uri_for
from .workspace import Workspace

VLLM_PYTHON_ENV = "UNLEARNOPS_VLLM_PYTHON"
API_KEY_ENV = "UNLEARNOPS_API_KEY"
REPO_VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
# vLLM reads its API key from this variable as well as from --api-key; the variable keeps the
# key out of the process list (/proc/PID/cmdline is readable by every local user).
VLLM_API_KEY_ENV = "VLLM_API_KEY"
# What the CPU build needs to start here (STACK.md); the caller's environment overrides each.
VLLM_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
}
# vllm-cpu's WNA16 kernel (the only one for compressed-tensors W4A16 on CPU) computes in float16:
# float32 fails with "cpu_gemm_wna16 not implemented for 'Float'", and the default bfloat16
# killed the worker with SIGILL on these machines (measured with vllm-cpu 0.32.0 for AWQ, GPTQ
# and RTN W4A16; docs/serving.md). GPU builds pick a dtype themselves.
CPU_QUANTIZED_DTYPE = "float16"
# The CPU WNA16 kernel takes uint4 / uint4b8 weights only: w8a16 needs a GPU (Marlin).
CPU_WEIGHT_BITS = {4}
HEALTH_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30
DOWNLOAD_MARKER = ".unlearnops-download.json"


# ---- the command ----------------------------------------------------------------------------
@dataclass(frozen=True)
class VllmCommand:
    """The argv and the environment variables set on top of the caller's environment."""

    argv: list[str]
    env: dict[str, str]
    host: str
    port: int

    def full_env(self) -> dict[str, str]:
        """The caller's environment overrides the CPU defaults; the API key is only the one chosen here."""
        env = dict(os.environ)
        env.pop(VLLM_API_KEY_ENV, None)  # the server's key is exactly the one chosen here, or none
        for key, value in self.env.items():
            if key == VLLM_API_KEY_ENV or key not in env:
                env[key] = value
        return env

    def shown_env(self) -> dict[str, str]:
        """The variables this launch sets, with the values they will have, the API key masked."""
        effective = self.full_env()
        return {key: ("****" if key == VLLM_API_KEY_ENV else effective[key]) for key in sorted(self.env)}

    def display(self) -> str:
        """A copy-pasteable shell line with the API key masked."""
        # The mask stays unquoted so it reads as a placeholder (an assignment never globs).
        assignments = [
            f"{key}={value if key == VLLM_API_KEY_ENV else shlex.quote(value)}" for key, value in self.shown_env().items()
        ]
        return " ".join(assignments + [shlex.quote(part) for part in self.argv])

    def to_dict(self) -> dict[str, Any]:
        return {"argv": self.argv, "env": self.shown_env(), "host": self.host, "port": self.port, "shell": self.display()}


def build_vllm_command(
    model_dir: Path | str,
    served_name: str,
    host: str,
    port: int,
    api_key: str | None,
    max_model_len: int | None,
    *,
    vllm_python: Path | str,
    dtype: str | None = None,
    model_config: dict | None = None,
    extra_args: list[str] | None = None,
) -> VllmCommand:
    """The vLLM OpenAI-server launch for one model directory (nothing is started).

    `model_config` is the model's config.json (read from `model_dir` when omitted and present);
    it decides `--dtype` unless `dtype` overrides it, and refuses what the vLLM build cannot serve.
    """
    check_bind(host, api_key)
    if model_config is None:
        config_path = Path(model_dir) / "config.json"
        model_config = read_json(config_path) if config_path.is_file() else {}
    cpu = is_cpu_vllm(vllm_python)
    check_servable(model_config, cpu=cpu, where=str(model_dir))
    dtype = dtype or serving_dtype(model_config, cpu=cpu)
    argv = [
        str(vllm_python), "-m", VLLM_MODULE,
        "--model", str(Path(model_dir).resolve()),
        "--served-model-name", served_name,
        "--host", host,
        "--port", str(port),
    ]
    if max_model_len:
        argv += ["--max-model-len", str(max_model_len)]
    if dtype:
        argv += ["--dtype", dtype]
    argv += list(extra_args or [])
    env = dict(VLLM_ENV_DEFAULTS)
    if api_key:
        env[VLLM_API_KEY_ENV] = api_key
    return VllmCommand(argv, env, host, port)


def is_cpu_vllm(vllm_python: Path | str) -> bool:
    """Whether the serving venv holds the CPU build (vllm-cpu, deploy/setup-vllm.sh's default flavor)."""
    venv = Path(vllm_python).parent.parent  # <venv>/bin/python, not resolved: it links to the base python
    return any(venv.glob("lib/python*/site-packages/vllm_cpu-*.dist-info"))


def _compressed_tensors_weight_bits(config: dict) -> set[int]:
    quant = config.get("quantization_config") or {}
    if quant.get("quant_method") != "compressed-tensors":
        return set()
    groups = (quant.get("config_groups") or {}).values()
    return {int(bits) for group in groups if (bits := (group.get("weights") or {}).get("num_bits"))}


def serving_dtype(config: dict, *, cpu: bool) -> str | None:
    """The one place the vLLM --dtype is chosen (None: vLLM's own choice, from the config)."""
    if cpu and _compressed_tensors_weight_bits(config):
        return CPU_QUANTIZED_DTYPE
    return None


def check_servable(config: dict, *, cpu: bool, where: str) -> None:
    """Refuse, before anything starts, a checkpoint the vLLM build has no kernel for."""
    unsupported = _compressed_tensors_weight_bits(config) - CPU_WEIGHT_BITS if cpu else set()
    if unsupported:
        raise UnlearnopsError(
            f"{where}: a w{max(unsupported)}a16 compressed-tensors model cannot be served by the CPU build of vLLM "
            "(vllm-cpu has 4-bit WNA16 kernels only); quantize with a W4A16 scheme (gptq-w4a16, awq-w4a16, "
            "rtn-w4a16) or serve it from a GPU vLLM venv (UNLEARNOPS_VLLM_FLAVOR=gpu bash deploy/setup-vllm.sh)"
        )


def served_model_name(name: str, version: str | int) -> str:
    """What /v1/models shows: the registry name and version, so clients can see what is live."""
    return f"{name}/{version}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_bind(host: str, api_key: str | None) -> None:
    if not api_key and not is_loopback(host):
        raise UnlearnopsError(
            f"--host {host}: binding beyond loopback needs an API key; pass --api-key or set ${API_KEY_ENV} "
            "(or bind 127.0.0.1). vLLM's key protects /v1/*; /health and /metrics stay open"
        )


def resolve_vllm_python(option: Path | str | None = None) -> Path:
    """--vllm-python > $UNLEARNOPS_VLLM_PYTHON > the repo's .venv-vllm (deploy/setup-vllm.sh)."""
    chosen = option or os.environ.get(VLLM_PYTHON_ENV) or (REPO_VLLM_PYTHON if REPO_VLLM_PYTHON.exists() else None)
    if not chosen:
        raise UnlearnopsError(
            f"vLLM interpreter: none configured; set ${VLLM_PYTHON_ENV} or --vllm-python to the python of a venv "
            "with vLLM (create one with `bash deploy/setup-vllm.sh`)"
        )
    path = Path(chosen).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise UnlearnopsError(
            f"vLLM interpreter {path}: not an executable file; point ${VLLM_PYTHON_ENV} or --vllm-python at "
            "<venv>/bin/python (create one with `bash deploy/setup-vllm.sh`)"
        )
    return path


# ---- the process ----------------------------------------------------------------------------
@dataclass
class VllmServer:
    """A running vLLM server: its process (own process group), URL and log."""

    process: subprocess.Popen
    command: VllmCommand
    log_path: Path
    served_name: str
    startup_s: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://{_client_host(self.command.host)}:{self.command.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the whole process group (vLLM forks engine workers), SIGKILL if it lingers."""
        if self.alive():
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()
        # Workers left in the group after the leader exited would hold the port and memory.
        _signal_group(self.process, signal.SIGKILL)
        return self.process.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _client_host(host: str) -> str:
    """Where a local client reaches a server bound to `host` (wildcards mean this machine)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        return "\n".join(handle.read().decode("utf-8", errors="replace").splitlines()[-lines:])


def check_port_free(host: str, port: int) -> None:
    """Fail in a second, not after vLLM's ~40 s start, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as err:
            raise UnlearnopsError(f"--port {port}: cannot bind {host}:{port} ({err.strerror}); choose a free --port") from None


def start_vllm(
    command: VllmCommand,
    log_path: Path | str,
    *,
    served_name: str | None = None,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
) -> VllmServer:
    """Launch vLLM in its own process group and return once GET /health answers 200.

    If vLLM exits or the timeout passes first, the process group is stopped and the error
    carries the tail of vLLM's log.
    """
    check_port_free(command.host, command.port)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command.argv, env=command.full_env(), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    name = served_name or command.argv[command.argv.index("--served-model-name") + 1]
    server = VllmServer(process, command, log_path, name)
    try:
        _wait_healthy(server, health_timeout_s)
    except BaseException:
        server.stop(timeout_s=10)
        raise
    server.startup_s = round(time.monotonic() - started, 1)
    return server


def _wait_healthy(server: VllmServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    url = server.base_url + "/health"
    while time.monotonic() < deadline:
        if not server.alive():
            raise UnlearnopsError(
                f"vLLM exited with code {server.process.returncode} before it was healthy; log {server.log_path}:\n"
                + server.log_tail()
            )
        if _http_status(url) == 200:
            return
        time.sleep(1.0)
    raise UnlearnopsError(
        f"vLLM did not answer 200 on {url} within {timeout_s:.0f} s; log {server.log_path}:\n" + server.log_tail()
    )


# The health probe goes straight to the local server, never through $http_proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | None:
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


# ---- the deployment (audit records around the process) --------------------------------------
@dataclass
class Deployment:
    """What the audit log says about one served version (never the API key)."""

    name: str
    version: str
    request_ids: list[str] = field(default_factory=list)
    artifact_sha256: str | None = None
    deployment_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@contextlib.contextmanager
def running_server(
    model_dir: Path | str,
    deployment: Deployment,
    *,
    audit_log: audit.AuditLog,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    vllm_python: Path | str | None = None,
    max_model_len: int | None = None,
    dtype: str | None = None,
    log_dir: Path | str,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
) -> Iterator[VllmServer]:
    """Serve `model_dir` while the block runs; deployment.started/stopped frame it in the log."""
    served_name = served_model_name(deployment.name, deployment.version)
    command = build_vllm_command(
        model_dir, served_name, host, port, api_key, max_model_len, vllm_python=resolve_vllm_python(vllm_python),
        dtype=dtype,
    )
    server = start_vllm(
        command, Path(log_dir) / f"{deployment.deployment_id}.log", served_name=served_name,
        health_timeout_s=health_timeout_s,
    )
    stop_reason = "stopped"
    try:
        _close_stale_deployments(audit_log, host, port, deployment.deployment_id)
        audit_log.append(
            audit.DEPLOYMENT_STARTED,
            deployment_id=deployment.deployment_id,
            name=deployment.name,
            version=str(deployment.version),
            request_ids=sorted(deployment.request_ids),
            artifact_sha256=deployment.artifact_sha256,
            served_model_name=served_name,
            host=host,
            port=port,
            api_key_required=bool(api_key),
        )
        yield server
        if not server.alive():
            stop_reason = f"vllm exited with code {server.process.returncode}"
    except _Shutdown as signalled:
        stop_reason = f"signal {signalled.signal_name}"
        raise
    except KeyboardInterrupt:
        stop_reason = "signal SIGINT"
        raise
    except BaseException as err:
        stop_reason = f"error: {type(err).__name__}"
        raise
    finally:
        exit_code = server.stop()
        if any(r["fields"].get("deployment_id") == deployment.deployment_id for r in audit.live_deployments(_records_or_empty(audit_log))):
            audit_log.append(
                audit.DEPLOYMENT_STOPPED,
                deployment_id=deployment.deployment_id,
                name=deployment.name,
                version=str(deployment.version),
                reason=stop_reason,
                exit_code=exit_code,
            )


def _records_or_empty(audit_log: audit.AuditLog) -> list[dict]:
    return audit_log.records() if audit_log.storage.exists() else []


def _close_stale_deployments(audit_log: audit.AuditLog, host: str, port: int, new_id: str) -> None:
    """A started deployment on this host:port with no stop record died uncleanly (we hold the
    port now): close it so `audit status` does not report it as live."""
    for record in audit.live_deployments(_records_or_empty(audit_log)):
        fields = record["fields"]
        if fields.get("host") == host and fields.get("port") == port:
            audit_log.append(
                audit.DEPLOYMENT_STOPPED,
                deployment_id=fields["deployment_id"],
                name=fields["name"],
                version=fields["version"],
                reason=f"stale: port taken over by deployment {new_id}",
            )


# ---- serving a registered version ------------------------------------------------------------
class _Shutdown(BaseException):
    """Raised in the main thread by SIGTERM/SIGHUP so the finally blocks stop vLLM and log it."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextlib.contextmanager
def _signals_raise_shutdown() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise _Shutdown(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@dataclass
class ServePlan:
    """Everything decided before launching: the version, where it will live, the command."""

    version: RegisteredVersion
    model_dir: Path
    command: VllmCommand
    deployment: Deployment

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.deployment.name,
            "version": str(self.deployment.version),
            "request_ids": self.deployment.request_ids,
            "model_dir": str(self.model_dir),
            "served_model_name": served_model_name(self.deployment.name, self.deployment.version),
            "command": self.command.to_dict(),
        }


def plan_serve(
    ref: str,
    *,
    host: str,
    port: int,
    api_key: str | None,
    vllm_python: Path | str | None,
    workspace: Workspace,
    max_model_len: int | None = None,
    dtype: str | None = None,
    tracking_uri: str | None = None,
) -> ServePlan:
    """Resolve and gate-check `ref`, decide paths and the command; downloads only its config.json."""
    check_bind(host, api_key)
    version = resolve(ref, tracking_uri=tracking_uri or tracking_uri_for(workspace))
    if not version.gate_passed:
        raise UnlearnopsError(
            f"{ref}: model {version.name} version {version.version} did not pass the gate "
            f"(tag {TAG_GATE}={version.tags.get(TAG_GATE)!r}); serve a version that passed, "
            "or rerun the pipeline"
        )
    model_dir = workspace.root / "serving" / "models" / f"{version.name}-v{version.version}"
    served_name = served_model_name(version.name, version.version)
    command = build_vllm_command(
        model_dir, served_name, host, port, api_key, max_model_len, vllm_python=resolve_vllm_python(vllm_python),
        dtype=dtype, model_config=_registered_config(version, model_dir),
    )
    deployment = Deployment(
        name=str(version.name),
        version=str(version.version),
        request_ids=_request_ids(version, audit.AuditLog(storage_for(workspace))),
    )
    return ServePlan(version, model_dir, command, deployment)


def serve(
    ref: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    vllm_python: Path | str | None = None,
    workspace: Workspace,
    max_model_len: int | None = None,
    dtype: str | None = None,
    tracking_uri: str | None = None,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
    ready_callback: Callable[[VllmServer, Deployment], None] | None = None,
) -> dict[str, Any]:
    """Serve a registered, gate-passed version until vLLM exits or SIGINT/SIGTERM arrives."""
    plan = plan_serve(
        ref, host=host, port=port, api_key=api_key, vllm_python=vllm_python, workspace=workspace,
        max_model_len=max_model_len, dtype=dtype, tracking_uri=tracking_uri,
    )
    model_dir, artifact_sha256 = download_version(plan.version, plan.model_dir)
    plan.deployment.artifact_sha256 = artifact_sha256
    with _signals_raise_shutdown():
        try:
            with running_server(
                model_dir, plan.deployment, audit_log=audit.AuditLog(storage_for(workspace)), host=host, port=port,
                api_key=api_key, vllm_python=vllm_python, max_model_len=max_model_len, dtype=dtype,
                log_dir=workspace.root / "serving" / "logs", health_timeout_s=health_timeout_s,
            ) as server:
                if ready_callback:
                    ready_callback(server, plan.deployment)
                exit_code = server.process.wait()
                raise UnlearnopsError(
                    f"vLLM exited with code {exit_code} while serving; log {server.log_path}:\n" + server.log_tail()
                )
        except _Shutdown as signalled:
            return {"deployment_id": plan.deployment.deployment_id, "stopped_by": signalled.signal_name}
        except KeyboardInterrupt:
            return {"deployment_id": plan.deployment.deployment_id, "stopped_by": "SIGINT"}


def _registered_config(version: RegisteredVersion, model_dir: Path) -> dict:
    """The version's config.json (it decides --dtype): from an earlier download, else fetched alone."""
    if (model_dir / DOWNLOAD_MARKER).is_file():
        return read_json(model_dir / "config.json")
    import mlflow

    location = client(version.tracking_uri).get_model_version_download_uri(version.name, version.version)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/config.json", dst_path=scratch, tracking_uri=version.tracking_uri
            )
        except Exception as err:
            raise UnlearnopsError(f"{version.ref}: cannot read its config.json from the artifact store ({error_summary(err)})") from None
        return read_json(Path(path))


def download_version(version: RegisteredVersion, model_dir: Path) -> tuple[Path, str]:
    """(model_dir, sha256 of its files): the version's files land exactly at `model_dir`, once.

    Registered versions are immutable, so a complete earlier download (its marker written last,
    inside the atomic directory) is reused.
    """
    marker = model_dir / DOWNLOAD_MARKER
    if marker.is_file():
        return model_dir, read_json(marker)["artifact_sha256"]
    with atomic_dir(model_dir) as staging:
        fetch_root = (staging / ".fetch").resolve()
        fetched = Path(version.download(fetch_root)).resolve()
        if fetched != fetch_root and fetch_root not in fetched.parents:
            raise UnlearnopsError(f"{version.ref}: download landed outside {fetch_root}; report this bug")
        for child in list(fetched.iterdir()):  # the model's files at the top, where vLLM looks
            child.rename(staging / child.name)
        shutil.rmtree(fetch_root)
        # download() has checked the files against this tag; hash only when it is absent.
        artifact_sha256 = version.tags.get(TAG_MODEL_SHA) or sha256_tree(staging)
        write_json(staging / DOWNLOAD_MARKER, {"artifact_sha256": artifact_sha256, "ref": version.ref})
    return model_dir, artifact_sha256


def _request_ids(version: RegisteredVersion, audit_log: audit.AuditLog) -> list[str]:
    """The requests a version satisfies: its request-ids tag plus its version.registered records."""
    ids = set(version.request_ids)
    for record in _records_or_empty(audit_log):
        fields = record["fields"]
        if (
            record["event"] == audit.VERSION_REGISTERED
            and str(fields.get("name")) == str(version.name)
            and str(fields.get("version")) == str(version.version)
        ):
            ids |= audit.request_ids_of(fields)
    return sorted(ids)
