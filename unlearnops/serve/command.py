"""The command layer: the exact vLLM argv + environment for one model directory (pure; nothing starts).

`--dry-run` prints it. vLLM runs from its own interpreter ($UNLEARNOPS_VLLM_PYTHON / --vllm-python):
vLLM and llm-compressor pin clashing torch and compressed-tensors versions, so they cannot share a venv.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UnlearnopsError

VLLM_PYTHON_ENV = "UNLEARNOPS_VLLM_PYTHON"
API_KEY_ENV = "UNLEARNOPS_API_KEY"
REPO_VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
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
# For a tokenizer without a chat template (the bench models are completion models), so that
# /v1/chat/completions answers instead of 400: the tokenizer's BOS (vLLM adds no special tokens
# to chat prompts) and the messages' text, one per line, no roles, for the model to continue; a
# single user message gets the tokens /v1/completions gives its text (with a tokenizer that
# adds BOS, as the bench's do). A literal template: vLLM takes a
# string containing "{" as the template itself (one line: Jinja reads '\\n' as a newline).
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token is defined and bos_token else '' }}"
    "{%- for message in messages %}{{ message['content'] }}{% if not loop.last %}{{ '\\n' }}{% endif %}{%- endfor %}"
)


@dataclass(frozen=True)
class VllmCommand:
    """The argv, the environment variables set on top of the caller's, and the working directory.

    vLLM shows its `--model` argument as `root` in /v1/models; running from the model's parent
    directory with `--model <directory name>` keeps the server's local paths out of that answer.
    """

    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    cwd: str | None = None

    @property
    def api_key_required(self) -> bool:
        return bool(self.env.get(VLLM_API_KEY_ENV))

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
        line = " ".join(assignments + [shlex.quote(part) for part in self.argv])
        return f"cd {shlex.quote(self.cwd)} && {line}" if self.cwd else line

    def to_dict(self) -> dict[str, Any]:
        return {
            "argv": self.argv, "env": self.shown_env(), "cwd": self.cwd, "host": self.host, "port": self.port,
            "shell": self.display(),
        }


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
    chat_template: str | None = None,
    extra_args: list[str] | None = None,
) -> VllmCommand:
    """The vLLM OpenAI-server launch for one model directory (nothing is started, nothing decided).

    `dtype` and `chat_template` come from the route (route.decide_route) and the model's
    tokenizer; None leaves each to vLLM.
    """
    check_bind(host, api_key)
    model_dir = Path(model_dir).resolve()
    argv = [
        str(vllm_python), "-m", VLLM_MODULE,
        "--model", model_dir.name,
        "--served-model-name", served_name,
        "--host", host,
        "--port", str(port),
    ]
    if max_model_len:
        argv += ["--max-model-len", str(max_model_len)]
    if dtype:
        argv += ["--dtype", dtype]
    if chat_template:
        argv += ["--chat-template", chat_template]
    argv += list(extra_args or [])
    env = dict(VLLM_ENV_DEFAULTS)
    if api_key:
        env[VLLM_API_KEY_ENV] = api_key
    return VllmCommand(argv, env, host, port, cwd=str(model_dir.parent))


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
