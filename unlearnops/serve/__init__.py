"""Serve a registered, gate-passed model with vLLM's OpenAI-compatible server, with audit records.

Layers, each usable on its own (one module each):

- `route`: know before starting: from the model's format, the installed vLLM build and the host
  (ISA / CUDA), whether vLLM can run the model here and by which route (`decide_route`).
- `command`: the exact argv + environment + working directory (`build_vllm_command`; pure).
- `process`: `start_vllm(command, log)` -> a `VllmServer` once GET /health is 200; a failure
  names the root cause from vLLM's log (`first_error`).
- `deployment`: `running_server(command, deployment, ...)` frames a running server with
  `deployment.started` / `deployment.stopped` audit records.
- `registered`: what the registry says about a version (`expected_sha256`, `passed_gate`: one
  answer each) and its files, verified against it (`fetch_verified`).
- `dense`: the dense route: a copy dequantized exactly as the evaluator loads the registered
  files, for CPUs whose vLLM build has no kernel for the registered format (AVX2).
- `launch`: `plan_serve(ref)` (what `--dry-run` prints) and `serve(ref)`.
"""

from __future__ import annotations

from .command import (
    API_KEY_ENV,
    PLAIN_CHAT_TEMPLATE,
    VLLM_API_KEY_ENV,
    VLLM_ENV_DEFAULTS,
    VLLM_PYTHON_ENV,
    VllmCommand,
    build_vllm_command,
    check_bind,
    is_loopback,
    resolve_vllm_python,
    served_model_name,
)
from .deployment import Deployment, running_server
from .dense import ServedCopy, dense_copy, derive_dense
from .launch import LaunchOptions, ServePlan, plan_serve, prepare, serve
from .process import HEALTH_TIMEOUT_S, VllmServer, first_error, start_vllm
from .registered import expected_sha256, fetch_verified, passed_gate
from .route import ISA_ENV, ISAS, Host, Route, VllmBuild, decide_route, detect_host, inspect_vllm

__all__ = [
    "API_KEY_ENV", "HEALTH_TIMEOUT_S", "ISAS", "ISA_ENV", "PLAIN_CHAT_TEMPLATE", "VLLM_API_KEY_ENV", "VLLM_ENV_DEFAULTS",
    "VLLM_PYTHON_ENV", "Deployment", "Host", "LaunchOptions", "Route", "ServePlan", "ServedCopy", "VllmBuild",
    "VllmCommand", "VllmServer", "build_vllm_command", "check_bind", "decide_route", "dense_copy", "derive_dense",
    "detect_host", "expected_sha256", "fetch_verified", "first_error", "inspect_vllm", "is_loopback", "passed_gate",
    "plan_serve", "prepare", "resolve_vllm_python", "running_server", "serve", "served_model_name", "start_vllm",
]
