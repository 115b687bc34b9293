"""The process layer: start vLLM in its own process group, wait for GET /health, stop it, explain a failure."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnlearnopsError
from .command import VllmCommand

HEALTH_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30
# vLLM prefixes every line with its process and log level: "(Worker pid=7) ERROR 11-29 07:51:52 [file.py:12] ".
_VLLM_PREFIX = re.compile(r"^(\([^)]*pid=\d+\)\s*)?([A-Z]+ \d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \[[^\]]*\] ?)?")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Fault)\b(: .*)?$")


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

    def failure(self, what: str) -> str:
        """`what`, the root cause from the log (its first exception line), then the log's tail."""
        cause = first_error(self.log_path)
        return (
            f"{what}" + (f": {cause}" if cause else "") + f"\nlog {self.log_path} (last {LOG_TAIL_LINES} lines):\n" + self.log_tail()
        )


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


def first_error(log: Path | str) -> str | None:
    """The root cause in a vLLM log: the exception line of its first traceback, else its first ERROR line.

    vLLM's last lines name only the consequence ("Engine core initialization failed. See root
    cause above"); the first traceback, raised in a worker, names the cause.
    """
    path = Path(log)
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        text = handle.read(8 * 1024 * 1024).decode("utf-8", errors="replace")
    first_error_line, in_traceback = None, False
    for raw in text.splitlines():
        line = _VLLM_PREFIX.sub("", raw, count=1)
        if first_error_line is None and " ERROR " in raw and line.strip() and not line.startswith("Traceback"):
            first_error_line = line.strip()
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and _EXCEPTION_LINE.match(line):
            return line.strip()
    return first_error_line


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
    names the root cause from vLLM's log, then its tail.
    """
    check_port_free(command.host, command.port)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command.argv, env=command.full_env(), cwd=command.cwd, stdout=log, stderr=subprocess.STDOUT,
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


def exit_description(returncode: int | None) -> str:
    """'code 3', or 'signal SIGILL' for a process a signal killed (Popen's negative codes)."""
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
    return f"code {returncode}"


def _wait_healthy(server: VllmServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    url = server.base_url + "/health"
    while time.monotonic() < deadline:
        if not server.alive():
            raise UnlearnopsError(server.failure(f"vLLM exited with {exit_description(server.process.returncode)} before it was healthy"))
        if _http_status(url) == 200:
            return
        time.sleep(1.0)
    raise UnlearnopsError(server.failure(f"vLLM did not answer 200 on {url} within {timeout_s:.0f} s"))


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
