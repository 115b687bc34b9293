"""Serving a registered version: resolve, gate-check, decide the route, verify the files, serve.

`plan_serve` decides everything without downloading the model or starting anything (what
`--dry-run` prints); `serve(plan)` then makes the served directory hold exactly the registered files
(or their dense copy on the dense route), and runs vLLM until it exits or a signal arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import audit
from ..audit.backends import storage_for
from ..errors import UnlearnopsError
from ..evidence import Evidence, Registration
from ..registry import RegisteredVersion
from ..workspace import Workspace
from .command import PLAIN_CHAT_TEMPLATE, VllmCommand, build_vllm_command, check_bind, resolve_vllm_python, served_model_name
from .deployment import Deployment, Shutdown, running_server, signals_raise_shutdown, vouched_derivations
from .dense import dense_copy, dense_dir
from .process import HEALTH_TIMEOUT_S, VllmServer, exit_description
from . import registered
from .registered import ModelFacts, fetch_verified, gate_refusal, registered_facts
from .route import DENSE, Host, Route, VllmBuild, decide_route, detect_host, inspect_vllm


@dataclass(frozen=True)
class LaunchOptions:
    """What the operator chose for the vLLM process (the model decides the rest)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_model_len: int | None = None
    dtype: str | None = None  # overrides the route's --dtype (passed straight to vLLM)


@dataclass
class ServePlan:
    """Everything decided before launching: the version, the route, where the files live, the command."""

    version: RegisteredVersion
    registration: Registration  # the signed record: the gate decision, the model hash, the requests
    model_dir: Path  # the registered files (downloaded here)
    served_dir: Path  # what vLLM is handed: model_dir, or the dense copy on the dense route
    route: Route
    command: VllmCommand
    deployment: Deployment
    workspace: Workspace = field(repr=False)
    build: VllmBuild = field(repr=False)
    host: Host = field(repr=False)
    options: LaunchOptions = field(repr=False)
    # Dense copies of these registered files that signed deployment records derived (dense_copy may reuse them).
    vouched: frozenset = field(default=frozenset(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.deployment.name,
            "version": str(self.deployment.version),
            "request_ids": self.deployment.request_ids,
            "artifact_sha256": self.deployment.artifact_sha256,
            "model_dir": str(self.model_dir),
            "served_dir": str(self.served_dir),
            "route": self.route.to_dict(),
            "served_model_name": served_model_name(self.deployment.name, self.deployment.version),
            "command": self.command.to_dict(),
        }


def plan_serve(
    ref: str,
    *,
    workspace: Workspace,
    options: LaunchOptions = LaunchOptions(),
    vllm_python: Path | str | None = None,
    isa: str | None = None,
    tracking_uri: str | None = None,
) -> ServePlan:
    """Resolve and gate-check `ref`, decide the route and the command; reads only the model's small files.

    Refuses (UnlearnopsError, exit 1) a version without a signed registration record (created
    outside unlearnops), one whose record says its gate did not pass, and a model the installed
    vLLM cannot run on this host (route.decide_route says why, with the fix).
    """
    check_bind(options.host, options.api_key)
    # The version and its signed registration record (the log verified, the registry the one it was written with).
    evidence = Evidence(workspace, tracking_uri=tracking_uri)
    records = evidence.verified_records(action="serve")
    version, registration = evidence.resolve(ref, records)
    if not registered.passed_gate(registration):
        raise UnlearnopsError(gate_refusal(ref, registration))
    artifact_sha256 = registered.expected_sha256(registration)
    build, host = inspect_vllm(resolve_vllm_python(vllm_python)), detect_host(isa)
    facts = registered_facts(version)
    route = decide_route(facts.config, build, host, where=served_model_name(version.name, version.version)).require()
    model_dir = workspace.root / "serving" / "models" / f"{version.name}-v{version.version}"
    served_dir = dense_dir(_derived_root(workspace), artifact_sha256) if route.name == DENSE else model_dir
    deployment = Deployment(
        name=str(version.name), version=str(version.version),
        request_ids=registration.request_ids,
        artifact_sha256=artifact_sha256, route=route.to_dict(),
    )
    command = _command(served_dir, deployment, route, facts, build, options)
    return ServePlan(
        version, registration, model_dir, served_dir, route, command, deployment, workspace, build, host, options,
        vouched=vouched_derivations(records, artifact_sha256),
    )


def _command(served_dir: Path, deployment: Deployment, route: Route, facts: ModelFacts, build: VllmBuild, options: LaunchOptions) -> VllmCommand:
    return build_vllm_command(
        served_dir, served_model_name(deployment.name, deployment.version), options.host, options.port, options.api_key,
        options.max_model_len, vllm_python=build.python, dtype=options.dtype or route.dtype,
        chat_template=None if facts.has_chat_template else PLAIN_CHAT_TEMPLATE,
    )


def _derived_root(workspace: Workspace) -> Path:
    return workspace.root / "serving" / "derived"


def prepare(plan: ServePlan, *, notify: Callable[[str], None] | None = None) -> ServePlan:
    """Make the served directory hold what the plan promises, verified, and fill in its hashes.

    The registered files are hashed against the registered sha256 (downloaded again on a
    mismatch, refused if the registry's files do not match either); the route is decided again
    from those verified files; on the dense route the copy is derived (or its cache verified).
    """
    artifact_sha256 = fetch_verified(plan.version, plan.model_dir, registered.expected_sha256(plan.registration), notify=notify)
    facts = ModelFacts.of_dir(plan.model_dir)
    route = decide_route(
        facts.config, plan.build, plan.host, where=served_model_name(plan.deployment.name, plan.deployment.version),
    ).require()
    deployment = plan.deployment
    deployment.route, deployment.artifact_sha256 = route.to_dict(), artifact_sha256
    if route.name == DENSE:
        copy = dense_copy(plan.model_dir, artifact_sha256, _derived_root(plan.workspace), vouched=plan.vouched, notify=notify)
        served_dir, deployment.served_sha256, deployment.derivation = copy.path, copy.sha256, copy.derivation
    else:
        served_dir, deployment.served_sha256, deployment.derivation = plan.model_dir, artifact_sha256, None
    command = _command(served_dir, deployment, route, facts, plan.build, plan.options)
    return ServePlan(
        plan.version, plan.registration, plan.model_dir, served_dir, route, command, deployment, plan.workspace, plan.build, plan.host,
        plan.options, plan.vouched,
    )


def serve(
    plan: ServePlan,
    *,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
    notify: Callable[[str], None] | None = None,
    ready_callback: Callable[[VllmServer, Deployment], None] | None = None,
) -> dict[str, Any]:
    """Serve a plan (`plan_serve`) until vLLM exits or SIGINT/SIGTERM arrives."""
    if notify:
        notify(f"route: {plan.route.name} ({plan.route.reason})")
    plan = prepare(plan, notify=notify)
    workspace = plan.workspace
    if notify:
        notify(f"starting vLLM for {plan.deployment.name}/{plan.deployment.version}; waiting for /health (CPU builds take ~45-150 s)")
    with signals_raise_shutdown():
        try:
            with running_server(
                plan.command, plan.deployment, audit_log=audit.AuditLog(storage_for(workspace)),
                log_dir=workspace.root / "serving" / "logs", health_timeout_s=health_timeout_s,
            ) as server:
                if ready_callback:
                    ready_callback(server, plan.deployment)
                exit_code = server.process.wait()
                raise UnlearnopsError(server.failure(f"vLLM exited with {exit_description(exit_code)} while serving"))
        except Shutdown as signalled:
            return {"deployment_id": plan.deployment.deployment_id, "stopped_by": signalled.signal_name}
        except KeyboardInterrupt:
            return {"deployment_id": plan.deployment.deployment_id, "stopped_by": "SIGINT"}
