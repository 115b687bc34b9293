"""llm-compressor `oneshot` schemes: W4A16 (RTN, GPTQ, AWQ) and W8A16, saved as compressed-tensors.

The checkpoints are what vLLM loads natively (pack-quantized int weights + per-group scales in
config.json's `quantization_config`). lm_head stays in full precision, as in every
llm-compressor example: quantizing it costs accuracy and saves little.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from . import compat
from .job import QuantizeJob

IGNORE = ["lm_head"]


def _scheme(build_recipe: Callable[[QuantizeJob], list]) -> Callable[[QuantizeJob], None]:
    """A scheme is the recipe it builds; this runs it through `oneshot` and saves the result."""

    @functools.wraps(build_recipe)
    def run(job: QuantizeJob) -> None:
        compat.route_llmcompressor_logs_to_stderr()  # before any llmcompressor import
        _oneshot(job, build_recipe(job))

    return run


@_scheme
def rtn_w4a16(job: QuantizeJob) -> list:
    """Round-to-nearest, symmetric int4 groups: no calibration data."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return [QuantizationModifier(config_groups=_weight_only(4, job.group_size), ignore=IGNORE)]


@_scheme
def gptq_w4a16(job: QuantizeJob) -> list:
    """GPTQ (second-order error compensation over calibration activations), symmetric int4 groups."""
    from llmcompressor.modifiers.quantization import GPTQModifier

    return [GPTQModifier(config_groups=_weight_only(4, job.group_size), ignore=IGNORE)]


@_scheme
def awq_w4a16(job: QuantizeJob) -> list:
    """AWQ (activation-aware channel scaling), then asymmetric int4 groups as llm-compressor's AWQ recipe."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    compat.allow_awq_without_accelerator()
    weights = _weight_only(4, job.group_size, symmetric=False)
    return [AWQModifier(), QuantizationModifier(config_groups=weights, ignore=IGNORE)]


@_scheme
def w8a16(job: QuantizeJob) -> list:
    """Round-to-nearest, symmetric int8 groups: no calibration data."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return [QuantizationModifier(config_groups=_weight_only(8, job.group_size), ignore=IGNORE)]


def _weight_only(bits: int, group_size: int, *, symmetric: bool = True) -> dict[str, Any]:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(num_bits=bits, type="int", strategy="group", group_size=group_size, symmetric=symmetric)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}


def _oneshot(job: QuantizeJob, recipe: list) -> None:
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype="auto", local_files_only=True, use_safetensors=True)
    calibration: dict[str, Any] = {}
    if job.calibration:
        tokenizer = AutoTokenizer.from_pretrained(job.model_dir, local_files_only=True)
        calibration = {
            "dataset": _tokenized(tokenizer, job.calibration, job.max_seq_length),
            "num_calibration_samples": len(job.calibration),
            "shuffle_calibration_samples": False,  # the caller chose the samples; keep runs reproducible
            "max_seq_length": job.max_seq_length,
        }
    oneshot(model=model, recipe=recipe, **calibration)
    model.save_pretrained(job.out, save_compressed=True)


def _tokenized(tokenizer: Any, texts: tuple[str, ...], max_length: int):
    from datasets import Dataset

    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
