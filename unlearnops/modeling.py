"""Loading local causal LMs safely, and telling which precision a model directory holds.

Safe by default: no remote code (a config.json with `auto_map` is refused) and safetensors
weights only (pickle checkpoints can execute code on load). Both can be opted into explicitly.
Nothing is ever fetched from a hub: every load is `local_files_only`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UnlearnopsError
from .fileio import read_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    precision: str  # e.g. "fp32", "w4a16 (compressed-tensors)", "nf4 (bitsandbytes)"
    path: Path


def read_config(model_dir: Path | str) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UnlearnopsError(f"model {model_dir}: not a directory; pass a Hugging Face model directory")
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise UnlearnopsError(f"model {model_dir}: no config.json; pass a Hugging Face model directory")
    config = read_json(config_path, max_bytes=8 * 1024 * 1024)
    if not isinstance(config, dict):
        raise UnlearnopsError(f"{config_path}: expected a JSON object")
    return config


def check_model_dir(model_dir: Path | str, *, trust_remote_code: bool = False, allow_pickle: bool = False) -> dict:
    """Refuse what is unsafe or incomplete before any weights are read; return config.json."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if config.get("auto_map") and not trust_remote_code:
        raise UnlearnopsError(
            f"model {model_dir}: config.json asks for remote code (auto_map); refusing. "
            "Pass --trust-remote-code only if you trust this directory's Python files"
        )
    files = [p for p in model_dir.iterdir() if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return config
    if any(p.suffix in PICKLE_SUFFIXES for p in files):
        if allow_pickle:
            return config
        raise UnlearnopsError(
            f"model {model_dir}: weights are in pickle format, which can run code on load; refusing. "
            "Convert them to safetensors, or pass --allow-pickle if you trust the file"
        )
    raise UnlearnopsError(f"model {model_dir}: no weights (*.safetensors) found")


def precision_of(config: dict) -> str:
    """Name the precision a config.json describes: what `evaluate` reports it measured."""
    quant = config.get("quantization_config")
    if not quant:
        return str(config.get("torch_dtype") or config.get("dtype") or "float32").replace("torch.", "")
    method = quant.get("quant_method", "unknown")
    if method == "bitsandbytes":
        if quant.get("load_in_8bit"):
            return "int8 (bitsandbytes LLM.int8)"
        return f"{quant.get('bnb_4bit_quant_type', 'fp4')} (bitsandbytes)"
    if method == "compressed-tensors":
        scheme = _compressed_tensors_scheme(quant)
        return f"{scheme} (compressed-tensors)"
    return f"{method}"


def _compressed_tensors_scheme(quant: dict) -> str:
    for group in (quant.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        activations = group.get("input_activations")
        if weights.get("num_bits"):
            act_bits = activations.get("num_bits") if activations else 16
            return f"w{weights['num_bits']}a{act_bits}"
    return "quantized"


def is_quantized(config: dict) -> bool:
    return bool(config.get("quantization_config"))


def _quantized_load_options(config: dict) -> dict[str, Any]:
    """How each quantized format this tool writes loads on any machine, CPU included.

    compressed-tensors: dequantize to dense weights at load (the values stay exactly on the
    4/8-bit grid; CPU has no packed-int kernels). bitsandbytes: keep the saved 4/8-bit layers,
    placed on the GPU when there is one, else on the CPU (bitsandbytes >= 0.48 runs there).
    """
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method == "compressed-tensors":
        from transformers import CompressedTensorsConfig

        return {"quantization_config": CompressedTensorsConfig(dequantize=True)}
    if method == "bitsandbytes":
        import torch

        return {"device_map": "cuda" if torch.cuda.is_available() else "cpu"}
    return {}


def load_causal_lm(
    model_dir: Path | str,
    *,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    dtype: Any = None,
) -> LoadedModel:
    """Load a local model + tokenizer for inference on CPU (any precision this tool writes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    config = check_model_dir(model_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if not is_quantized(config):
        kwargs["dtype"] = dtype or torch.float32
    kwargs.update(_quantized_load_options(config))
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=trust_remote_code)
        with warnings.catch_warnings():
            # "You passed quantization_config ... the model's will be used": only our loading attributes are taken, as intended.
            warnings.filterwarnings("ignore", message=".*already has a `quantization_config`.*")
            model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except (OSError, ValueError, KeyError, ImportError, AttributeError) as err:  # the last two: broken remote code
        raise UnlearnopsError(f"model {model_dir}: cannot be loaded ({str(err).splitlines()[0]})") from None
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, precision=precision_of(config), path=model_dir)
