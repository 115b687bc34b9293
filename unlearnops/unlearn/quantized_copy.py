"""The model that ships, during training: a quantized copy of the current weights for `stop_on: quantized`.

RTN W4A16 is quantized in memory (the rounding-cell codes of `unlearnops.rounding_cells`,
dequantized into a copy: the same values llm-compressor writes, checked by
tests/test_simulated_regime.py); every other scheme goes through `quantize()` on disk and is
loaded back as `evaluate` loads it. Either way the trained model is left untouched.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..corpus import Corpus
from ..rounding_cells import quantized_linears, rtn_codes


def quantized_copy(model, tokenizer, corpus: Corpus, scheme: str, group_size: int, *, calibration_samples: int = 64) -> tuple[Any, Any]:
    """(model, tokenizer) of `model`'s merged weights quantized with `scheme` (a calibrated scheme
    on `calibration_samples` texts of the corpus's retain split, as `quantize` does)."""
    merged = _merged_copy(model)
    if scheme in IN_MEMORY:
        IN_MEMORY[scheme](merged, group_size)
        return merged, tokenizer
    return _through_disk(merged, tokenizer, corpus, scheme, group_size, calibration_samples)


def _merged_copy(model):
    """A copy with LoRA adapters merged: what `unlearn` would save now."""
    clone = copy.deepcopy(model)
    return clone.merge_and_unload() if hasattr(clone, "merge_and_unload") else clone


@torch.no_grad()
def _rtn_w4a16(model, group_size: int) -> None:
    """Replace each quantized Linear's weight by its RTN int4 value: (code - zero point) x scale."""
    for layer in quantized_linears(model).values():
        packed = rtn_codes(layer.weight, group_size)
        dequantized = (packed.codes.to(packed.scale.dtype) - packed.zero_point) * packed.scale
        layer.weight.copy_(dequantized.reshape(layer.weight.shape).to(layer.weight.dtype))


# Schemes quantized in memory (fast, no disk); the rest take the `quantize()` route.
IN_MEMORY = {"rtn-w4a16": _rtn_w4a16}


def _through_disk(merged, tokenizer, corpus: Corpus, scheme: str, group_size: int, calibration_samples: int) -> tuple[Any, Any]:
    from ..modeling import load_causal_lm
    from ..quantize import quantize

    with tempfile.TemporaryDirectory(prefix="unlearnops-stop-") as scratch:
        source, quantized = Path(scratch) / "model", Path(scratch) / "quantized"
        merged.save_pretrained(source)
        tokenizer.save_pretrained(source)
        quantize(source, scheme, quantized, group_size=group_size, num_calibration_samples=calibration_samples, corpus=corpus.root, show_progress=False)
        loaded = load_causal_lm(quantized)
    return loaded.model, loaded.tokenizer
