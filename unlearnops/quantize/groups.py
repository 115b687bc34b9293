"""Which weights share a quantization scale: the one check (and choice) of a group size for a model.

A group of G input weights must tile every quantized linear layer, so G divides each layer's
input width. Real models have widths that 128 does not divide (SmolLM2-135M: 576), so when no
group size is given it is chosen from the model: the largest of AUTO_GROUP_SIZES that divides
every quantized width (128 on the embedded bench, 64 on SmolLM2). Every place that quantizes
with groups (quantize, the quantized stopping evaluation, the rounding-cell simulation, the
robustness benchmark) resolves its size here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UnlearnopsError

# Largest first: bigger groups store fewer scales, and 128 is what vLLM's kernels and most published checkpoints use.
AUTO_GROUP_SIZES = (128, 64, 32)


def linear_layers(model_dir: Path | str) -> tuple[dict[str, int], str]:
    """Every Linear layer's input width, and the output embedding's name (lm_head: never quantized).

    Read from the architecture on the meta device: names and shapes at no memory cost.
    """
    import torch

    model = _meta_model(model_dir)
    output = model.get_output_embeddings()
    linears, output_name = {}, ""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linears[name] = module.in_features
        if module is output:
            output_name = name
    return linears, output_name


def quantized_widths(model_dir: Path | str) -> list[int]:
    """The distinct input widths of the linear layers a scheme quantizes (all but the output embedding)."""
    linears, output = linear_layers(model_dir)
    return sorted({width for name, width in linears.items() if name != output})


def resolve_group_size(widths: list[int], requested: int | None, *, field: str = "--group-size") -> int:
    """`requested` if it divides every width, else a clear error; None: the largest of AUTO_GROUP_SIZES that does."""
    fitting = [size for size in (256, *AUTO_GROUP_SIZES, 16) if all(width % size == 0 for width in widths)]
    if requested is None:
        auto = next((size for size in AUTO_GROUP_SIZES if size in fitting), None)
        if auto is None:
            raise UnlearnopsError(
                f"{field}: none of {', '.join(map(str, AUTO_GROUP_SIZES))} divides every quantized layer's input width "
                f"(widths {widths}); pass {field} with a common divisor{', e.g. ' + str(fitting[0]) if fitting else ''}"
            )
        return auto
    if requested < 1:
        raise UnlearnopsError(f"{field}: {requested} must be a positive integer, e.g. 128")
    misfits = sorted({width for width in widths if width % requested})
    if misfits:
        raise UnlearnopsError(
            f"{field}: {requested} does not divide the input width of every quantized linear layer (widths {misfits}); "
            f"use one that does, e.g. {', '.join(map(str, fitting)) or 'a common divisor'}, or leave it out to choose automatically"
        )
    return requested


def group_size_for(model_dir: Path | str, requested: int | None, *, field: str = "--group-size") -> int:
    """The group size to quantize `model_dir` with (see resolve_group_size)."""
    return resolve_group_size(quantized_widths(model_dir), requested, field=field)


def _meta_model(model_dir: Path | str):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config)
