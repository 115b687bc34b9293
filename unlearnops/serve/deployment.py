"""The deployment layer: audit records around a running vLLM process.

`running_server(command, deployment, ...)` serves while its block runs, framed by
`deployment.started` (what is served, from which registered files, by which route) and
`deployment.stopped` (why it stopped) in the audit log.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import audit
from .command import VllmCommand
from .dense import METHOD, record_sha256
from .process import HEALTH_TIMEOUT_S, VllmServer, exit_description, start_vllm


@dataclass
class Deployment:
    """What the audit log says about one served version (never the API key).

    `artifact_sha256` is the registered model's hash; `served_sha256` the hash of the directory
    vLLM was handed (the same on the native route; a dense copy's on the dense route, whose
    `derivation` record links the two: its method, versions and own hash go into the record).
    """

    name: str
    version: str
    request_ids: list[str] = field(default_factory=list)
    artifact_sha256: str | None = None
    served_sha256: str | None = None
    route: dict[str, Any] | None = None
    derivation: dict[str, Any] | None = None
    deployment_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Which machine serves it: on a team's shared log, host:port alone names a port on every machine.
    machine: str = field(default_factory=lambda: socket.gethostname()[:256] or "unknown")

    def started_fields(self, command: VllmCommand, served_name: str) -> dict[str, Any]:
        """The deployment.started record: flat ids and hashes, as the audit log holds them."""
        argv, route, derivation = command.argv, self.route or {}, self.derivation or {}
        return {
            "deployment_id": self.deployment_id,
            "name": self.name,
            "version": str(self.version),
            "request_ids": sorted(self.request_ids),
            "artifact_sha256": self.artifact_sha256,
            "served_sha256": self.served_sha256,
            "route": route.get("name"),
            "vllm": route.get("vllm"),
            "vllm_extension": route.get("extension"),
            "dtype": argv[argv.index("--dtype") + 1] if "--dtype" in argv else None,
            **derivation_fields(derivation),
            "served_model_name": served_name,
            "machine": self.machine,
            "host": command.host,
            "port": command.port,
            "api_key_required": command.api_key_required,
        }


def derivation_fields(derivation: dict[str, Any]) -> dict[str, Any]:
    """How the served copy derives from the registered files (dense route), and the hash of the full record."""
    if not derivation:
        return {}
    return {
        "derivation_method": derivation["method"],
        "derived_from_sha256": derivation["source_sha256"],
        "derivation_dtype": derivation["dtype"] if isinstance(derivation["dtype"], str) else ",".join(derivation["dtype"]),
        "derivation_versions": [f"{name}=={version}" for name, version in sorted(derivation["versions"].items())],
        "derivation_record_sha256": record_sha256(derivation),
    }


def vouched_derivations(records: list[dict], source_sha256: str) -> frozenset[tuple[str, str]]:
    """(served sha256, derivation record sha256) of every dense copy a signed deployment.started record
    derived from the registered files hashing to `source_sha256`: the caches `dense_copy` may reuse."""
    return frozenset(
        (fields["served_sha256"], fields["derivation_record_sha256"])
        for fields in (r["fields"] for r in records if r["event"] == audit.DEPLOYMENT_STARTED)
        if fields.get("derived_from_sha256") == source_sha256 and fields.get("derivation_method") == METHOD
        and fields.get("served_sha256") and fields.get("derivation_record_sha256")
    )


class Shutdown(BaseException):
    """Raised in the main thread by SIGTERM/SIGHUP so the finally blocks stop vLLM and log it."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextlib.contextmanager
def signals_raise_shutdown() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Shutdown(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def running_server(
    command: VllmCommand,
    deployment: Deployment,
    *,
    audit_log: audit.AuditLog,
    log_dir: Path | str,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
) -> Iterator[VllmServer]:
    """Run `command` while the block runs; deployment.started/stopped frame it in the log."""
    served_name = command.argv[command.argv.index("--served-model-name") + 1]
    server = start_vllm(
        command, Path(log_dir) / f"{deployment.deployment_id}.log", served_name=served_name,
        health_timeout_s=health_timeout_s,
    )
    stop_reason = "stopped"
    try:
        _close_stale_deployments(audit_log, deployment.machine, command.host, command.port, deployment.deployment_id)
        audit_log.append(audit.DEPLOYMENT_STARTED, **deployment.started_fields(command, served_name))
        yield server
        if not server.alive():
            stop_reason = f"vllm exited with {exit_description(server.process.returncode)}"
    except Shutdown as signalled:
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
        if any(r["fields"].get("deployment_id") == deployment.deployment_id for r in audit.live_deployments(records_or_empty(audit_log))):
            audit_log.append(
                audit.DEPLOYMENT_STOPPED,
                deployment_id=deployment.deployment_id,
                name=deployment.name,
                version=str(deployment.version),
                reason=stop_reason,
                exit_code=exit_code,
            )


def records_or_empty(audit_log: audit.AuditLog) -> list[dict]:
    return audit_log.records()  # [] for a log not written yet, on any storage backend


def _close_stale_deployments(audit_log: audit.AuditLog, machine: str, host: str, port: int, new_id: str) -> None:
    """A started deployment on this machine's host:port with no stop record died uncleanly (we hold
    the port now): close it so `audit status` does not report it as live. Another machine's port is
    not ours (a team's shared log): its deployments are left as they are. A record from before
    deployments named their machine was written on one machine's log: taken as this machine's."""
    for record in audit.live_deployments(records_or_empty(audit_log)):
        fields = record["fields"]
        if fields.get("machine", machine) == machine and fields.get("host") == host and fields.get("port") == port:
            audit_log.append(
                audit.DEPLOYMENT_STOPPED,
                deployment_id=fields["deployment_id"],
                name=fields["name"],
                version=fields["version"],
                reason=f"stale: port taken over by deployment {new_id}",
            )
