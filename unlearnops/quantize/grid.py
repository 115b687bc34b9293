"""Read a quantized model's SAVED tensors and count the distinct values each group holds.

The check that the written model really is on a 2**bits grid: for compressed-tensors, unpack the
int32-packed codes and count distinct codes per group of `group_size` input weights; for
bitsandbytes 4-bit, split the packed bytes into nibbles and count per absmax block; for
LLM.int8, count per row. A layer's entry is the largest count over its groups.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnlearnopsError
from ..modeling import read_config


@dataclass(frozen=True)
class Grid:
    layers: dict[str, int]  # quantized module name -> most distinct values in one of its groups
    group_size: int | None  # weights per group (None: one group per row)

    @property
    def max_distinct(self) -> int:
        return max(self.layers.values(), default=0)


def weight_grid(model_dir: Path | str) -> Grid:
    model_dir = Path(model_dir)
    quant = read_config(model_dir).get("quantization_config") or {}
    reader = _READERS.get(quant.get("quant_method"))
    if reader is None:
        raise UnlearnopsError(f"model {model_dir}: config.json names no quantization this tool can inspect")
    return reader(_tensors(model_dir), quant)


def distinct_per_group(codes, group_size: int) -> int:
    """Most distinct values in any run of `group_size` consecutive entries (rows are whole groups)."""
    import torch

    flat = codes.flatten()
    tail = (-flat.numel()) % group_size  # a short last block: pad with its last value (adds none)
    if tail:
        flat = torch.cat([flat, flat[-1:].expand(tail)])
    groups = flat.reshape(-1, group_size).sort(dim=1).values
    return int(((groups[:, 1:] != groups[:, :-1]).sum(dim=1) + 1).max())


def _compressed_tensors(tensors: dict, quant: dict) -> Grid:
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    weights = next(iter(quant["config_groups"].values()))["weights"]
    bits, group_size = weights["num_bits"], weights["group_size"]
    layers = {}
    for key in tensors:
        if key.endswith(".weight_packed"):
            name = key.removesuffix(".weight_packed")
            shape = tuple(tensors[f"{name}.weight_shape"].tolist())
            codes = unpack_from_int32(tensors[key], bits, shape)
            layers[name] = distinct_per_group(codes, group_size)
    return Grid(layers, group_size)


def _bitsandbytes(tensors: dict, quant: dict) -> Grid:
    if quant.get("load_in_8bit"):
        layers = {key.removesuffix(".SCB"): _int8_rows(tensors[key.removesuffix("SCB") + "weight"]) for key in tensors if key.endswith(".SCB")}
        return Grid(layers, None)
    layers, block = {}, None
    for key in tensors:
        if ".weight.quant_state.bitsandbytes__" in key:
            name = key.split(".weight.quant_state.")[0]
            state = json.loads(bytes(tensors[key].tolist()).decode())
            block = state["blocksize"]
            codes = _nibbles(tensors[f"{name}.weight"])[: math.prod(state["shape"])]
            layers[name] = distinct_per_group(codes, block)
    return Grid(layers, block)


def _nibbles(packed):
    """bitsandbytes stores two 4-bit codes per byte, high nibble first, in flattened weight order."""
    import torch

    flat = packed.flatten()
    return torch.stack([flat >> 4, flat & 0x0F], dim=1).flatten()


def _int8_rows(weight) -> int:
    return distinct_per_group(weight, weight.shape[-1])


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


_READERS: dict[str, Callable[[dict, dict], Grid]] = {
    "compressed-tensors": _compressed_tensors,
    "bitsandbytes": _bitsandbytes,
}
