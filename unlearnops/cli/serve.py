"""CLI area: serve: vLLM serving of promoted models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import JsonOpt, WorkspaceOpt
from .output import emit, err_console, out_console


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("serve")(serve_command)


def serve_command(
    model: Annotated[str, typer.Option("--model", help="A registered model: NAME@ALIAS (e.g. news-llama@production).")],
    host: Annotated[str, typer.Option("--host", help="Address to bind. Beyond loopback an API key is required.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to bind.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="UNLEARNOPS_API_KEY", help="Bearer key for /v1/* (passed to vLLM by environment, never logged).", show_default=False),
    ] = None,
    vllm_python: Annotated[
        Path | None,
        typer.Option("--vllm-python", envvar="UNLEARNOPS_VLLM_PYTHON", help="Python of the separate vLLM venv (deploy/setup-vllm.sh).", show_default=False),
    ] = None,
    max_model_len: Annotated[int | None, typer.Option("--max-model-len", min=1, help="Context length vLLM reserves for (default: the model's).")] = None,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="vLLM --dtype override (default: float16 for compressed-tensors on a CPU vLLM, else vLLM's choice).", show_default=False),
    ] = None,
    health_timeout: Annotated[float, typer.Option("--health-timeout", min=1, help="Seconds to wait for GET /health == 200.")] = 600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve and gate-check, print the exact vLLM command (key masked), start nothing.")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve a registered, gate-passed model version with vLLM's OpenAI-compatible server.

    Resolves NAME@ALIAS in the registry, refuses a version whose gate did not pass, downloads it into the workspace, starts vLLM from its own interpreter (UNLEARNOPS_VLLM_PYTHON), waits for /health, and records deployment.started / deployment.stopped in the audit log. Ctrl-C or SIGTERM stops it cleanly.

    /v1/models shows NAME/VERSION, so clients can see which version is live. Exit 1 when the version did not pass its gate, when binding beyond loopback without an API key, or when vLLM fails to start (the tail of its log is printed).
    """
    from ..serve import plan_serve, serve
    from ..workspace import Workspace

    resolved = Workspace.resolve(workspace)
    if dry_run:
        plan = plan_serve(
            model, host=host, port=port, api_key=api_key, vllm_python=vllm_python, workspace=resolved, max_model_len=max_model_len,
            dtype=dtype,
        )
        emit(plan.to_dict(), as_json, lambda: out_console.print(plan.command.display(), highlight=False, soft_wrap=True))
        return

    def announce(server, deployment) -> None:
        ready = {
            "deployment_id": deployment.deployment_id, "name": deployment.name, "version": deployment.version,
            "served_model_name": server.served_name, "url": server.base_url + "/v1", "startup_s": server.startup_s,
            "log": str(server.log_path), "request_ids": deployment.request_ids,
        }
        emit(ready, as_json, lambda: out_console.print(
            f"serving {server.served_name} at {server.base_url}/v1 (ready in {server.startup_s} s; log {server.log_path}); "
            "Ctrl-C to stop", highlight=False,
        ))

    err_console.print(f"starting vLLM for {model}; waiting for /health (CPU builds take ~45 s)", highlight=False)
    result = serve(
        model, host=host, port=port, api_key=api_key, vllm_python=vllm_python, workspace=resolved,
        max_model_len=max_model_len, dtype=dtype, health_timeout_s=health_timeout, ready_callback=announce,
    )
    err_console.print(f"stopped ({result['stopped_by']}); see `unlearnops audit status`", highlight=False)
