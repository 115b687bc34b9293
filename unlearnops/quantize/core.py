"""`quantize()`: validate, run one scheme's backend into an atomic output dir, verify, write quantize.json."""

from __future__ import annotations

import time
from pathlib import Path

from .. import progress
from ..errors import UnlearnopsError
from ..fileio import atomic_dir, sha256_tree, write_json
from ..modeling import check_model_dir, is_quantized, precision_of, read_config
from ..versions import library_versions
from .calibration import CalibrationSet, resolve_calibration
from .grid import weight_grid
from .groups import linear_layers, resolve_group_size
from .job import QuantizeJob
from .schemes import Scheme, get_scheme

MAX_CALIBRATION_TOKENS = 512


def quantize(
    model_dir: Path | str,
    scheme: str,
    out: Path | str,
    *,
    group_size: int | None = None,
    calibration: str | Path | None = None,
    num_calibration_samples: int = 64,
    corpus: Path | str | None = None,
    show_progress: bool = True,
) -> dict:
    """Quantize a full-precision HF model dir with `scheme` into `out` (HF dir + quantize.json).

    `calibration` is `CORPUS_DIR:split` or a JSON list-of-strings file; with none, calibrated
    schemes use `corpus`'s retain split. `group_size` None: the largest of 128/64/32 that divides
    every quantized layer's input width (quantize/groups.py). Returns the quantize.json document.
    """
    spec = get_scheme(scheme)
    model_dir, out = Path(model_dir), Path(out)
    config = _check_source(model_dir, out)
    all_linears, output_embedding = linear_layers(model_dir)
    linears = {name: width for name, width in all_linears.items() if name != output_embedding}
    requested = group_size
    if spec.grouped:
        group_size = resolve_group_size(sorted(set(linears.values())), group_size)
    calibration_set = _calibration_for(spec, scheme, calibration, corpus, num_calibration_samples)
    texts = calibration_set.texts[:num_calibration_samples] if calibration_set and spec.calibrated else ()
    source_sha256 = sha256_tree(model_dir)

    started = time.perf_counter()
    with atomic_dir(out) as tmp, progress.task(f"quantize {scheme}", total=2, enabled=show_progress) as bar:
        bar.update(status="quantizing")
        max_tokens = min(MAX_CALIBRATION_TOKENS, int(config.get("max_position_embeddings") or MAX_CALIBRATION_TOKENS))
        spec.run(QuantizeJob(model_dir, tmp, group_size, texts, max_tokens))
        _copy_tokenizer(model_dir, tmp)
        wall_time = time.perf_counter() - started
        bar.advance(status="verifying saved weights")
        grid = weight_grid(tmp)
        _check_grid(grid, linears, spec, scheme)
        manifest = {
            "scheme": scheme,
            "summary": spec.summary,
            "precision": precision_of(read_config(tmp)),
            "bits": spec.bits,
            "group_size": spec.group_size(group_size),
            # "auto": chosen from the model's widths; "given": the caller's; "library": the scheme fixes it.
            "group_size_source": "library" if not spec.grouped else ("auto" if requested is None else "given"),
            "calibration": _calibration_record(calibration_set, len(texts)) if texts else None,
            "num_calibration_samples": len(texts),
            "quantized_layers": len(grid.layers),
            "max_distinct_values_per_group": grid.max_distinct,
            "unquantized_linear_layers": sorted(set(all_linears) - set(grid.layers)),
            "source_model": str(model_dir.resolve()),
            "source_model_sha256": source_sha256,
            "versions": _versions(spec),
            "wall_time_s": round(wall_time, 3),
            "out": str(out.resolve()),
        }
        write_json(tmp / "quantize.json", manifest)
        bar.advance(status="done")
    return manifest


def _check_source(model_dir: Path, out: Path) -> dict:
    config = check_model_dir(model_dir)
    if is_quantized(config):
        raise UnlearnopsError(
            f"model {model_dir}: already quantized ({precision_of(config)}); quantize the full-precision model instead"
        )
    source, target = model_dir.resolve(), out.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise UnlearnopsError(f"--out {out}: overlaps the source model directory {model_dir}; choose a separate --out")
    return config


def _calibration_for(spec: Scheme, scheme: str, calibration, corpus, samples: int) -> CalibrationSet | None:
    if samples < 1:
        raise UnlearnopsError(f"--num-calibration-samples: {samples} must be at least 1")
    calibration_set = resolve_calibration(calibration, corpus)  # always checked: a forget split is never accepted
    if spec.calibrated and calibration_set is None:
        raise UnlearnopsError(
            f"--scheme {scheme}: needs calibration data; pass --calibration CORPUS_DIR:retain or --corpus CORPUS_DIR"
        )
    return calibration_set


def _calibration_record(calibration_set: CalibrationSet, used: int) -> dict:
    return {"source": calibration_set.source, "sha256": calibration_set.sha256, "texts_available": len(calibration_set.texts), "texts_used": used}


def _check_grid(grid, linears: dict[str, int], spec: Scheme, scheme: str) -> None:
    """The written model must hold every targeted layer quantized, on a 2**bits grid per group."""
    if set(grid.layers) != set(linears) or grid.max_distinct > 2**spec.bits:
        missing = sorted(set(linears) - set(grid.layers))[:3]
        raise UnlearnopsError(
            f"--scheme {scheme}: the written model failed verification ({len(grid.layers)}/{len(linears)} layers quantized, "
            f"missing e.g. {missing}; at most {grid.max_distinct} values per group, expected <= {2**spec.bits}); "
            "please report this with quantize.json's versions"
        )


def _copy_tokenizer(model_dir: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(model_dir, local_files_only=True).save_pretrained(out)


def _versions(spec: Scheme) -> dict[str, str]:
    return library_versions("torch", "transformers", spec.library, *(["compressed-tensors"] if spec.library == "llmcompressor" else []))
