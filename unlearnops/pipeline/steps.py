"""The model-building stages: source (the weights to unlearn from), unlearn, quantize.

Each function declares one `Stage` (settings, input hashes, build function) and hands it to the
runner, which caches, times, prints and logs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import registry
from ..errors import UnlearnopsError
from ..fileio import sha256_tree
from .context import RunContext
from .data import RequestData
from .runner import Stage
from .stages import StageResult

MANIFEST_FILES = ("out/train.json", "out/quantize.json")


def resolve_source(ctx: RunContext, request, data: RequestData) -> registry.RegisteredVersion | None:
    """The registered version to unlearn from (registering the embedded bench target on first use);
    None when the request names a local model directory."""
    if not request.model.startswith("models:/"):
        return None
    try:
        return registry.resolve(request.model, tracking_uri=ctx.tracking_uri)
    except UnlearnopsError:
        name, _, _ = registry.parse_ref(request.model)
        if name != registry.SOURCE_MODEL_NAME:
            raise
    from ..bench import ensure_bench, recorded_metrics

    bench = data.bench or ensure_bench(ctx.workspace, ctx.config.bench.size)
    ctx.runner.announce("source", f"registering the bench target {bench / 'target'} as {registry.SOURCE_MODEL_NAME}@production")
    target_metrics = recorded_metrics(bench, "target")
    registry.register_source_model(
        bench / "target",
        tracking_uri=ctx.tracking_uri,
        artifact_root=ctx.workspace.artifact_root,
        audit=ctx.audit,
        metrics={f"fp.{k}": v for k, v in target_metrics.items() if isinstance(v, (int, float))},
    )
    return registry.resolve(request.model, tracking_uri=ctx.tracking_uri)


def source_stage(ctx: RunContext, source, request) -> StageResult:
    """The source model's files in the stage store: downloaded (and hash-checked) or copied from a local dir."""
    if source is not None:
        config = {"ref": source.ref, "model_sha256": source.tags.get(registry.TAG_FP_SHA) or source.tags.get(registry.TAG_MODEL_SHA)}
        fetch = lambda tmp: source.download_full_precision(tmp / "download").rename(tmp / "model")  # noqa: E731
    else:
        from ..fileio import confined
        from ..modeling import check_model_dir

        local = confined(request.model, ctx.request_path.parent, what="model")
        check_model_dir(local)
        config = {"path": str(local), "model_sha256": sha256_tree(local)}
        fetch = lambda tmp: shutil.copytree(local, tmp / "model")  # noqa: E731

    def build(tmp: Path) -> dict:
        return {"model_sha256": sha256_tree(_full_precision(fetch(tmp), config))}

    return ctx.runner.run(Stage("source", config, {}, build, announce=config.get("ref") or config["path"], manifests=MANIFEST_FILES))


def unlearn_stage(ctx: RunContext, source_dir: StageResult, data: RequestData) -> StageResult:
    from ..unlearn import unlearn

    settings = ctx.config.unlearn_config()

    def build(tmp: Path) -> dict:
        record = unlearn(source_dir.path / "model", data.corpus, tmp / "out", settings, show_progress=ctx.runner.show_progress)
        return {"model_sha256": sha256_tree(tmp / "out" / "model"), "train": brief(record)}

    inputs = {"model": source_dir.record["model_sha256"], "corpus": data.corpus_sha256}
    announce = f"{settings.method}+{settings.regularizer} ({settings.mode})"
    return ctx.runner.run(Stage("unlearn", settings.model_dump(), inputs, build, announce=announce, manifests=MANIFEST_FILES))


def quantize_stage(ctx: RunContext, unlearned: StageResult, data: RequestData) -> StageResult:
    from ..quantize import quantize

    settings = ctx.config.quantize

    def build(tmp: Path) -> dict:
        record = quantize(
            unlearned.path / "out" / "model", settings.scheme, tmp / "out",
            group_size=settings.group_size, num_calibration_samples=settings.num_calibration_samples,
            corpus=data.corpus, show_progress=ctx.runner.show_progress,
        )
        return {"model_sha256": sha256_tree(tmp / "out"), "quantize": brief(record)}

    # The corpus is an input: calibrated schemes (GPTQ, AWQ) calibrate on its retain split.
    inputs = {"model": unlearned.record["model_sha256"], "corpus": data.corpus_sha256}
    return ctx.runner.run(Stage("quantize", settings.model_dump(), inputs, build, announce=settings.scheme, manifests=MANIFEST_FILES))


def _full_precision(model_dir: Path, config: dict) -> Path:
    """Unlearning trains the weights: a 4-bit checkpoint cannot be the starting point."""
    from ..modeling import is_quantized, read_config

    if is_quantized(read_config(model_dir)):
        raise UnlearnopsError(
            f"model {config.get('ref') or config.get('path')}: is quantized and has no full-precision weights to unlearn from; "
            "name a full-precision model or a version registered by `unlearnops run` (it keeps its fp_model/ artifact)"
        )
    return model_dir


def brief(record: dict) -> dict:
    """The scalar part of a stage's manifest (its full file is logged as an artifact)."""
    return {k: v for k, v in (record or {}).items() if isinstance(v, (str, int, float, bool)) or v is None}
