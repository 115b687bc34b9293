"""What every benchmark prints beside its numbers: the machine, versions and thread settings."""

from __future__ import annotations

import os
import platform
import sys


def machine_info() -> dict:
    import torch
    import transformers

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def print_machine(machine: dict) -> None:
    print(f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, {machine['device']}")
    print(f"versions: python {machine['python']}, torch {machine['torch']}, transformers {machine['transformers']}")
    print(f"threads: torch {machine['torch_threads']}, OMP_NUM_THREADS={machine['OMP_NUM_THREADS']}")


def default_bench(size: str = "default"):
    """The workspace's bench of this size, built if absent."""
    from unlearnops.bench import ensure_bench
    from unlearnops.workspace import Workspace

    return ensure_bench(Workspace.resolve(), size)
