"""What a backend receives: one quantization job, already validated by `quantize()`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QuantizeJob:
    model_dir: Path  # full-precision source (checked: safetensors, not quantized)
    out: Path  # empty directory the backend writes the quantized model into
    group_size: int  # weights per quantization group (grouped schemes only)
    calibration: tuple[str, ...]  # calibration texts; empty for data-free schemes
    max_seq_length: int  # calibration texts are truncated to this many tokens
