"""bitsandbytes schemes: the load-time quantization Zhang et al. (2024) measured unlearning under.

4-bit FP4 / NF4: absmax-scaled blocks of 64 weights, no double quantization. 8-bit: LLM.int8
(per-row absmax int8, outlier threshold 6.0). The model is quantized while loading and saved
with `save_pretrained`, so the directory's config.json describes it and it reloads as is.
bitsandbytes leaves lm_head (the output embedding) unquantized.
"""

from __future__ import annotations

from typing import Any

from .job import QuantizeJob

BLOCK_SIZE = 64  # bitsandbytes' fixed 4-bit block size (not configurable through transformers)
INT8_THRESHOLD = 6.0


def nf4(job: QuantizeJob) -> None:
    _quantize_on_load(job, _four_bit("nf4"))


def fp4(job: QuantizeJob) -> None:
    _quantize_on_load(job, _four_bit("fp4"))


def int8(job: QuantizeJob) -> None:
    from transformers import BitsAndBytesConfig

    _quantize_on_load(job, BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD))


def _four_bit(quant_type: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=False,
        bnb_4bit_compute_dtype=torch.float32,  # CPU matmuls: float32 is the fast, exact path
    )


def _quantize_on_load(job: QuantizeJob, config: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        job.model_dir, quantization_config=config, device_map=device, local_files_only=True, use_safetensors=True
    )
    model.save_pretrained(job.out)
