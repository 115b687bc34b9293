"""RTN rounding cells: measure which 4-bit codes an update flips, and simulate the large-model regime.

In a 7B model, unlearning by full fine-tuning moves each weight by ~1e-5 against a 4-bit step of
~0.05, so every weight stays inside the rounding cell of its original code and the 4-bit model
equals the original's: the forgetting vanishes at 4 bits. Tiny models move weights by a sizeable
fraction of a step, so that failure does not happen naturally here. `RoundingCellProjector`
imposes it: after each optimizer step it clamps every quantized weight into the cell of the
*source* model's RTN code (shrunk by a small margin), keeps each group's min and max entries
fixed (they set the scale), and freezes every parameter that is not quantized. The RTN 4-bit
model of the result then equals the source's bit for bit.

Quantization parameters come from compressed-tensors' own `calculate_qparams` with the W4A16
preset's arguments (symmetric int4, group strategy), i.e. what llm-compressor's RTN computes
from a group's min/max.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EXCLUDED_MODULES = ("lm_head",)


def _quant_args(group_size: int, num_bits: int = 4):
    from compressed_tensors.quantization import QuantizationArgs

    return QuantizationArgs(num_bits=num_bits, type="int", symmetric=True, strategy="group", group_size=group_size)


def quantized_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The layers RTN W4A16 quantizes: every Linear except the lm_head."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.endswith(EXCLUDED_MODULES)
    }


@dataclass
class GroupCodes:
    codes: torch.Tensor  # int codes, shape [out, in // group, group]
    scale: torch.Tensor  # shape [out, in // group, 1]
    zero_point: torch.Tensor
    bit_min: int
    bit_max: int


def rtn_codes(weight: torch.Tensor, group_size: int, num_bits: int = 4) -> GroupCodes:
    """The RTN codes, scales and zero points of a [out, in] weight in groups along `in`."""
    from compressed_tensors.quantization.utils import calculate_qparams, calculate_range

    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"group size {group_size} does not divide the layer width {in_features}")
    groups = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
    args = _quant_args(group_size, num_bits)
    scale, zero_point = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
    scale, zero_point = scale.unsqueeze(-1), zero_point.unsqueeze(-1).to(scale.dtype)
    bit_min, bit_max = (int(bound) for bound in calculate_range(args, groups.device))
    codes = torch.clamp(torch.round(groups / scale + zero_point), bit_min, bit_max)
    return GroupCodes(codes.to(torch.int8), scale, zero_point, bit_min, bit_max)


def changed_code_fraction(source: nn.Module, updated: nn.Module, group_size: int = 128) -> float:
    """Fraction of RTN 4-bit codes that differ between two models with the same architecture."""
    source_layers, updated_layers = quantized_linears(source), quantized_linears(updated)
    changed = total = 0
    for name, layer in source_layers.items():
        before = rtn_codes(layer.weight, group_size).codes
        after = rtn_codes(updated_layers[name].weight, group_size).codes
        changed += int((before != after).sum())
        total += before.numel()
    return changed / max(total, 1)


class RoundingCellProjector:
    """Clamp quantized weights into their source RTN cells after every optimizer step."""

    def __init__(self, model: nn.Module, *, group_size: int = 128, margin: float = 1e-3):
        self.layers = quantized_linears(model)
        self.bounds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, layer in self.layers.items():
            self.bounds[name] = self._cell_bounds(layer.weight.detach(), group_size, margin)
        quantized = {id(layer.weight) for layer in self.layers.values()}
        for parameter in model.parameters():
            # Embeddings, norms and lm_head are not quantized: any change there would reach the
            # 4-bit model, so the simulation freezes them.
            if id(parameter) not in quantized:
                parameter.requires_grad_(False)

    @staticmethod
    def _cell_bounds(weight: torch.Tensor, group_size: int, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
        packed = rtn_codes(weight, group_size)
        codes = packed.codes.float()
        groups = weight.float().reshape(packed.codes.shape)
        lower = (codes - packed.zero_point - 0.5 + margin) * packed.scale
        upper = (codes - packed.zero_point + 0.5 - margin) * packed.scale
        # Codes at the ends of the range absorb everything beyond them (clamping).
        lower = torch.where(codes == packed.bit_min, torch.full_like(lower, -torch.inf), lower)
        upper = torch.where(codes == packed.bit_max, torch.full_like(upper, torch.inf), upper)
        group_min, group_max = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        lower, upper = torch.maximum(lower, group_min), torch.minimum(upper, group_max)
        # The group's extremes set scale and zero point: pin them to their source values.
        extreme = (groups == group_min) | (groups == group_max)
        lower, upper = torch.where(extreme, groups, lower), torch.where(extreme, groups, upper)
        shape = weight.shape
        return lower.reshape(shape).to(weight.dtype), upper.reshape(shape).to(weight.dtype)

    @torch.no_grad()
    def project(self) -> None:
        for name, layer in self.layers.items():
            lower, upper = self.bounds[name]
            layer.weight.copy_(torch.clamp(layer.weight, lower, upper))

    @torch.no_grad()
    def pinned_fraction(self) -> float:
        """Fraction of quantized weights sitting on a cell wall (how hard the constraint binds)."""
        pinned = total = 0
        for name, layer in self.layers.items():
            lower, upper = self.bounds[name]
            pinned += int(((layer.weight == lower) | (layer.weight == upper)).sum())
            total += layer.weight.numel()
        return pinned / max(total, 1)
