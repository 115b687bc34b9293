"""The registry of quantization schemes: name -> Scheme. Adding one is a backend function and one line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UnlearnopsError, did_you_mean
from . import bnb_backend, llmcompressor_backend
from .job import QuantizeJob


@dataclass(frozen=True)
class Scheme:
    run: Callable[[QuantizeJob], None]  # writes the quantized model (weights + config) into job.out
    library: str  # the distribution that does the work (its version goes into quantize.json)
    bits: int  # weight bits: a group holds at most 2**bits distinct values
    calibrated: bool  # needs calibration texts
    grouped: bool  # honours --group-size (otherwise the library fixes the grouping)
    fixed_group_size: int | None = None  # the library's own group, when not grouped (None: per row)
    summary: str = ""

    def group_size(self, requested: int) -> int | None:
        """Weights that share one scale in the written model."""
        return requested if self.grouped else self.fixed_group_size


_LLMC = "llmcompressor"
_BNB = "bitsandbytes"

SCHEMES: dict[str, Scheme] = {
    "rtn-w4a16": Scheme(llmcompressor_backend.rtn_w4a16, _LLMC, 4, False, True, summary="round-to-nearest int4, symmetric groups"),
    "gptq-w4a16": Scheme(llmcompressor_backend.gptq_w4a16, _LLMC, 4, True, True, summary="GPTQ int4, symmetric groups"),
    "awq-w4a16": Scheme(llmcompressor_backend.awq_w4a16, _LLMC, 4, True, True, summary="AWQ scaling + int4, asymmetric groups"),
    "w8a16": Scheme(llmcompressor_backend.w8a16, _LLMC, 8, False, True, summary="round-to-nearest int8, symmetric groups"),
    "nf4": Scheme(bnb_backend.nf4, _BNB, 4, False, False, bnb_backend.BLOCK_SIZE, summary="NormalFloat4, absmax blocks of 64"),
    "fp4": Scheme(bnb_backend.fp4, _BNB, 4, False, False, bnb_backend.BLOCK_SIZE, summary="FP4 (e2m1), absmax blocks of 64"),
    "int8": Scheme(bnb_backend.int8, _BNB, 8, False, False, None, summary="LLM.int8, per-row absmax, outlier threshold 6.0"),
}


def get_scheme(name: str) -> Scheme:
    if name in SCHEMES:
        return SCHEMES[name]
    raise UnlearnopsError(f"--scheme: unknown scheme '{name}'; {did_you_mean(name, SCHEMES)}choose one of {', '.join(SCHEMES)}")
