"""The model-building stages: source (the weights to unlearn from), unlearn, quantize.

Each function declares one `Stage` (settings, input hashes, build function) and hands it to the
runner, which caches, times, prints and logs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import registry
from ..bench import ensure_bench, recorded_metrics
from ..bench import source as bench_source
from ..errors import UnlearnopsError
from ..evidence import ROLE_SOURCE
from ..fileio import sha256_tree
from .context import RunContext
from .data import RequestData
from .runner import Stage
from .stages import StageResult

MANIFEST_FILES = ("out/train.json", "out/quantize.json")


def resolve_source(ctx: RunContext, request, data: RequestData):
    """(the registered version to unlearn from, its signed registration record), registering a
    bench's target on first use; (None, None) when the request names a local model directory.

    A bench target's name (bench/source.py) on a request whose data is a bench must lead to that
    bench's target: the root of the version's signed lineage is checked against the bench's
    recorded target hash, and a version descending from another model is refused, naming the fix.
    """
    if not request.model.startswith("models:/"):
        return None, None
    name, _, _ = registry.parse_ref(request.model)
    named_bench = bench_source.bench_of(name)
    if named_bench is None:  # any other registered model: the registry's answer, as it is
        return ctx.evidence.resolve(request.model)
    _check_bench_name(name, named_bench, data)
    try:
        found = ctx.evidence.resolve(request.model)
    except UnlearnopsError:
        if _registered(ctx, request.model):
            raise
        found = None
    if found is None:  # first use: register the bench's target under this name
        bench = data.bench or ensure_bench(ctx.workspace, named_bench or ctx.config.bench.size)
        ctx.runner.announce("source", f"registering the bench target {bench / 'target'} as {name}@production")
        target_metrics = recorded_metrics(bench, "target")
        ctx.evidence.register_source(bench / "target", name=name,
                                     metrics={f"fp.{k}": v for k, v in target_metrics.items() if isinstance(v, (int, float))})
        found = ctx.evidence.resolve(request.model)
    if data.bench is not None:
        _check_bench_lineage(ctx, request.model, found[1], data.bench)
    return found


def _check_bench_name(name: str, named_bench: str, data: RequestData) -> None:
    """A bench's own name (unlearnops-bench-<bench>) on a request whose data is another bench is refused."""
    if data.bench is None or not named_bench:
        return
    bench_name, _ = bench_source.target_of(data.bench)
    if named_bench != bench_name:
        raise UnlearnopsError(
            f"model: models:/{name} is the {named_bench} bench's target, but the request's data is the {bench_name} bench; "
            f"name that bench's target, models:/{bench_source.source_name(bench_name)}@{registry.PRODUCTION}, in the request's model field; nothing unlearned", field="model"
        )


def _check_bench_lineage(ctx: RunContext, ref: str, registration, bench: Path) -> None:
    """Refuse a version that does not descend from the bench's target (by its signed records)."""
    bench_name, target_sha = bench_source.target_of(bench)
    root = _lineage_root(ctx, registration)
    if target_sha is not None and root.model_sha256 == target_sha:
        return
    own = f"models:/{bench_source.source_name(bench_name)}@{registry.PRODUCTION}"
    fix = (f"name the bench's own target, {own} (registered from that bench on first use), in the request's model field"
           if ref != own else f"the name {own} holds another model in this registry: use a workspace of its own for this bench")
    raise UnlearnopsError(
        f"model: {ref} is {registration.name}/{registration.version}, which descends from model "
        f"{root.name}/{root.version} (sha256 {root.model_sha256[:12]}…), not from the target of the request's bench "
        f"{bench_name} (sha256 {str(target_sha)[:12]}…, {bench / 'bench.json'}): unlearning it would unlearn another model; "
        f"{fix}; nothing unlearned", field="model"
    )


def _lineage_root(ctx: RunContext, registration):
    """The first version of a registration's lineage (a registered source), through the signed
    records' source_version links; a link to a local directory or to no record ends the walk."""
    records = ctx.evidence.verified_records()
    seen = set()
    while registration.role != ROLE_SOURCE and registration.source_version and registration.source_version not in seen:
        seen.add(registration.source_version)
        try:
            name, version, _ = registry.parse_ref(registration.source_version)
            if version is None:
                break
            registration = ctx.evidence.registration(name, version, records)
        except UnlearnopsError:
            break
    return registration


def _registered(ctx: RunContext, ref: str) -> bool:
    """Whether the reference resolves in the registry (then a missing record is an error, not a first use)."""
    try:
        registry.resolve(ref, tracking_uri=ctx.tracking_uri)
    except UnlearnopsError:
        return False
    return True


def source_stage(ctx: RunContext, source, registration, request) -> StageResult:
    """The source model's files in the stage store: downloaded (and checked against the signed
    registration record's hash) or copied from a local dir."""
    if source is not None:
        expected = registration.fp_model_sha256 or registration.model_sha256
        config = {"ref": source.ref, "model_sha256": expected}
        fetch = lambda tmp: source.download_full_precision(tmp / "download", expected).rename(tmp / "model")  # noqa: E731
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
