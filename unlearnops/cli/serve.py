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
        typer.Option("--dtype", help="vLLM --dtype override (default: the route's: float16 for W4A16 served natively by a CPU vLLM, float32 for a dense copy, else vLLM's choice).", show_default=False),
    ] = None,
    isa: Annotated[
        str | None,
        typer.Option(
            "--isa", envvar="UNLEARNOPS_SERVE_ISA",
            help="Take the route for this x86 ISA instead of the detected one: avx2, avx512, avx512_bf16 or auto. "
            "Only an ISA this CPU has (forcing avx2 on an AVX-512 host serves the dense copy, as on an AVX2 host).",
            show_default=False,
        ),
    ] = None,
    health_timeout: Annotated[float, typer.Option("--health-timeout", min=1, help="Seconds to wait for GET /health == 200.")] = 600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve, gate-check and decide the route (exit 1 when vLLM cannot run the model here); print the route (stderr) and the exact vLLM command (key masked); download and start nothing.")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve a registered, gate-passed model version with vLLM's OpenAI-compatible server.

    Resolves NAME@ALIAS in the registry, refuses a version whose gate did not pass, decides from the model's format, the installed vLLM build and this host whether vLLM can run it here and by which route (native: the registered files; dense: a copy dequantized exactly as the evaluator loads them, for CPUs whose vLLM has no kernel for the format, e.g. W4A16 on AVX2), downloads it into the workspace and checks its files hash to the registered sha256, starts vLLM from its own interpreter (UNLEARNOPS_VLLM_PYTHON), waits for /health, and records deployment.started (with the route and, for a dense copy, its derivation) / deployment.stopped in the audit log. Ctrl-C or SIGTERM stops it cleanly.

    /v1/models shows NAME/VERSION, so clients can see which version is live. Exit 1 when the version did not pass its gate, when vLLM cannot run the model here (the reason and the fix are printed; --dry-run too), when the files do not match the registered hash, when binding beyond loopback without an API key, or when vLLM fails to start (the root cause from its log is printed, then its tail).
    """
    from ..serve import LaunchOptions, plan_serve, serve
    from ..workspace import Workspace

    resolved = Workspace.resolve(workspace)
    options = LaunchOptions(host=host, port=port, api_key=api_key, max_model_len=max_model_len, dtype=dtype)
    plan = plan_serve(model, workspace=resolved, options=options, vllm_python=vllm_python, isa=isa)
    if dry_run:

        def render() -> None:
            err_console.print(f"route: {plan.route.name} ({plan.route.reason})", highlight=False, soft_wrap=True)
            out_console.print(plan.command.display(), highlight=False, soft_wrap=True)

        emit(plan.to_dict(), as_json, render)
        return

    def announce(server, deployment) -> None:
        ready = {
            "deployment_id": deployment.deployment_id, "name": deployment.name, "version": deployment.version,
            "served_model_name": server.served_name, "url": server.base_url + "/v1", "startup_s": server.startup_s,
            "log": str(server.log_path), "request_ids": deployment.request_ids, "route": deployment.route["name"],
            "artifact_sha256": deployment.artifact_sha256, "served_sha256": deployment.served_sha256,
        }
        emit(ready, as_json, lambda: out_console.print(
            f"serving {server.served_name} at {server.base_url}/v1 (ready in {server.startup_s} s; log {server.log_path}); "
            "Ctrl-C to stop", highlight=False,
        ))

    def notify(line: str) -> None:
        err_console.print(line, highlight=False, soft_wrap=True)

    result = serve(plan, health_timeout_s=health_timeout, notify=notify, ready_callback=announce)
    err_console.print(f"stopped ({result['stopped_by']}); see `unlearnops audit status`", highlight=False)
