"""Workarounds for the pinned llm-compressor 0.14.0.1, kept in this one place.

Each one names the upstream behaviour it works around and has a sentinel test in
tests/test_quantize.py that fails on the day upstream no longer needs it.
"""

from __future__ import annotations

import contextlib
import os
import sys

# The method as upstream ships it, kept so the sentinel test can run AWQ without the patch.
UPSTREAM_PIN_MEMORY = None


def allow_awq_without_accelerator() -> None:
    """Make AWQ run on a CPU-only torch.

    llm-compressor 0.14.0.1's AWQ smoothing calls
    `llmcompressor.pipelines.cache.IntermediatesCache.pin_memory` for every cached batch,
    unconditionally; on a torch without CUDA/XPU `Tensor.pin_memory()` raises "Cannot access
    accelerator device when none is available". Pinning only speeds host-to-device copies, so
    with no accelerator it does nothing useful: we make it a no-op. With an accelerator present
    the upstream method is left alone. Sentinel: test_awq_upstream_still_needs_pin_memory_patch.
    """
    global UPSTREAM_PIN_MEMORY
    import torch

    if UPSTREAM_PIN_MEMORY is not None or torch.accelerator.is_available():
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    UPSTREAM_PIN_MEMORY = IntermediatesCache.pin_memory

    def pin_memory_noop(self, batch_index: int, input_names: list[str] | None = None) -> None:
        """No accelerator: nothing to pin for (see allow_awq_without_accelerator)."""

    IntermediatesCache.pin_memory = pin_memory_noop


def route_llmcompressor_logs_to_stderr() -> None:
    """llm-compressor's logger setup (run at import) re-routes every loguru message to *stdout*
    at INFO level, and its import already logs, which would corrupt `--json` output. Import it
    with stdout pointing at stderr, then log to stderr only."""
    if "llmcompressor" in sys.modules:
        return  # already imported: routed here before, or the caller configured logging itself
    from loguru import logger

    with contextlib.redirect_stdout(sys.stderr):
        import llmcompressor  # noqa: F401  (its import runs the logger setup we override)

    logger.remove()
    # Errors only by default: on CPU every step warns "No accelerator available", and METRIC lines
    # (GPTQ's per-layer error, level 38) are progress noise. LLM_COMPRESSOR_LOG_LEVEL brings them back.
    level = os.environ.get("LLM_COMPRESSOR_LOG_LEVEL", "ERROR").upper()
    logger.add(sys.stderr, level=level)
