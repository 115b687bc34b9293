"""The quantization stage: one `quantize(model_dir, scheme, out)` over a registry of schemes.

llm-compressor (RTN / GPTQ / AWQ W4A16, W8A16 -> compressed-tensors, served natively by vLLM) and
bitsandbytes (NF4 / FP4 / LLM.int8, the load-time quantization of Zhang et al. 2024).
"""

from .core import quantize
from .groups import AUTO_GROUP_SIZES, group_size_for, linear_layers
from .schemes import SCHEMES, Scheme, get_scheme

__all__ = ["AUTO_GROUP_SIZES", "SCHEMES", "Scheme", "get_scheme", "group_size_for", "linear_layers", "quantize"]
