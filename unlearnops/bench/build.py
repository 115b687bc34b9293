"""Build the embedded bench: synthetic corpus, tokenizer, target and retrain models, manifest."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import UnlearnopsError
from ..fileio import atomic_dir, read_json, sha256_file, sha256_tree, write_json
from ..versions import library_versions
from ..workspace import Workspace
from . import muse, synthetic
from .train import ModelShape, TrainRecipe

MANIFEST = "bench.json"
LAYOUT = ("corpus", "target", "retrain", MANIFEST)


def recorded_metrics(bench: Path | str, model: str) -> dict:
    """The metrics bench.json recorded for `model` ("target" or "retrain"); {} when `bench` is not a bench.

    A bench corpus lives at BENCH/corpus, so callers holding a corpus pass its parent.
    """
    manifest = Path(bench) / MANIFEST
    if not manifest.is_file():
        return {}
    document = read_json(manifest)
    metrics = document.get("metrics") if isinstance(document, dict) else None
    recorded = metrics.get(model) if isinstance(metrics, dict) else None
    return recorded if isinstance(recorded, dict) else {}


def privleak_reference(corpus: Path | str) -> float | None:
    """PrivLeak's reference for a bench corpus: the retrain model's AUC that BENCH/bench.json recorded
    beside BENCH/corpus; None for any other corpus (PrivLeak is then null unless one is given)."""
    auc = recorded_metrics(Path(corpus).parent, "retrain").get("auc")
    return float(auc) if isinstance(auc, (int, float)) and not isinstance(auc, bool) else None


@dataclass(frozen=True)
class ModelSpec:
    shape: ModelShape
    recipe: TrainRecipe


# Measured choices, see docs/bench.md. Same keys as synthetic.SIZES (the corpus side of a size).
MODEL_SPECS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(
        ModelShape(hidden=128, layers=2, heads=4, intermediate=256, vocab=768, max_positions=512),
        TrainRecipe(epochs=40),
    ),
    "default": ModelSpec(
        ModelShape(hidden=128, layers=4, heads=4, intermediate=384, vocab=1024, max_positions=512),
        TrainRecipe(epochs=50),
    ),
}
SIZES = tuple(MODEL_SPECS)
# The target learns everything but holdout; the retrain model (MUSE's reference) never sees forget.
TRAINING_SPLITS = {"target": ("forget", "retain"), "retrain": ("retain",)}


def build_bench(out: Path | str, *, seed: int = 0, size: str = "default", show_progress: bool = True,
                source: Path | str | None = None, parallel: bool | None = None) -> dict:
    """Write out/corpus (MUSE layout), out/target, out/retrain (HF dirs) and out/bench.json; return the manifest.

    `source`: a MUSE-layout corpus (e.g. ../shared/muse-news) to cut the corpus from instead of
    the synthetic generator (bench/muse.py). The directory appears complete or not at all (built
    in a temporary sibling, then renamed). `parallel`: train the two models at the same time
    (default: when there are 2+ cores); the bytes are the same either way.
    """
    corpus_size = synthetic.size_of(size)
    spec = MODEL_SPECS[size]
    if source is not None:
        corpus_size = muse.SIZES[size]
        spec = replace(spec, recipe=replace(spec.recipe, epochs=corpus_size.epochs))
    out = Path(out)
    _check_out(out)
    if seed < 0:
        raise UnlearnopsError(f"--seed: {seed} is negative; use a seed >= 0")
    timings: dict[str, dict[str, float]] = {"timings_s": {}, "cpu_s": {}}
    with atomic_dir(out) as tmp:
        with _timed(timings, "corpus"):
            corpus = (synthetic.write_corpus(tmp / "corpus", seed, size) if source is None
                      else muse.write_corpus(source, tmp / "corpus", seed, size))
        with _timed(timings, "tokenizer"):
            from .tokenizer import train_tokenizer

            tokenizer = train_tokenizer([text for texts in corpus.raw.values() for text in texts], spec.shape.vocab)
        training, training_wall = _train(corpus, tokenizer, spec, seed, tmp, show_progress, parallel)
        for model_name, summary in training.items():
            timings["timings_s"][f"train_{model_name}"] = summary.pop("wall_s")
            timings["cpu_s"][f"train_{model_name}"] = summary.pop("cpu_s")
        with _timed(timings, "evaluate"):
            metrics = _evaluate(tmp, show_progress)
        manifest = _manifest(tmp, seed, size, corpus_size, spec, training, metrics, timings, source)
        manifest["training_wall_s"] = round(training_wall, 2)  # both models: the longest of the two when in parallel
        # Written last: ensure_bench treats a directory without it as incomplete.
        write_json(tmp / MANIFEST, manifest)
    return manifest


def ensure_bench(workspace: Workspace, size: str = "default") -> Path:
    """The workspace's bench of this size, built (seed 0) if it is absent or incomplete."""
    from filelock import FileLock

    if size not in SIZES:  # a pretrained base's bench (bench build --base): built by its own command, never here
        if is_complete(workspace.bench_dir(size)):
            return workspace.bench_dir(size)
        if "-" in size:  # base names (smollm2-135m) have a dash, sizes do not
            raise UnlearnopsError(f"bench {size}: not built at {workspace.bench_dir(size)}; build it first: unlearnops bench build "
                                  f"--base {size} --source MUSE_DIR (e.g. ../shared/muse-news; tens of minutes on 2 CPU cores)")
    synthetic.size_of(size)
    out = workspace.bench_dir(size)
    # Two commands starting at once (e.g. a pipeline and a test run) build it once, not twice.
    with FileLock(workspace.locks_dir / f"bench-{size}.lock"):
        if not is_complete(out):
            build_bench(out, seed=0, size=size)
    return out


def _check_out(out: Path) -> None:
    """Replacing `out` deletes it: allow only a new or empty directory, or an earlier bench."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UnlearnopsError(f"--out {out}: exists and is not a directory; choose a new directory")
    if any(out.iterdir()) and not (out / MANIFEST).exists():
        raise UnlearnopsError(f"--out {out}: a non-empty directory that is not a bench (no {MANIFEST}); "
                              "choose a new or empty directory, it would be replaced")


def is_complete(bench: Path) -> bool:
    return all((bench / part).exists() for part in LAYOUT)


def _train(corpus, tokenizer, spec: ModelSpec, seed: int, out: Path, show_progress: bool,
           parallel: bool | None) -> tuple[dict[str, dict], float]:
    """Train target and retrain (independent: at the same time when there are cores for it); (summaries, wall s)."""
    from .train import TrainJob, encode, train_models

    jobs = [TrainJob(name, [text for split in splits for text in corpus.raw[split]], out / name)
            for name, splits in TRAINING_SPLITS.items()]
    longest = max(len(ids) for job in jobs for ids in encode(job.documents, tokenizer))
    if longest > spec.shape.max_positions:
        raise UnlearnopsError(f"bench: a training document has {longest} tokens, over max_positions {spec.shape.max_positions}")
    wall = time.perf_counter()
    training = train_models(jobs, tokenizer, spec.shape, spec.recipe, seed, show_progress=show_progress, parallel=parallel)
    return training, time.perf_counter() - wall


def _evaluate(bench: Path, show_progress: bool) -> dict:
    """MUSE metrics of both models: retrain first, its AUC is the target's PrivLeak reference."""
    from ..evaluate import evaluate_model

    retrain = evaluate_model(bench / "retrain", bench / "corpus", show_progress=show_progress)
    target = evaluate_model(bench / "target", bench / "corpus", retrain_auc=retrain["auc"], show_progress=show_progress)
    return {"target": _metric_subset(target), "retrain": _metric_subset(retrain)}


def _metric_subset(result: dict) -> dict:
    from ..metrics import METRICS

    return {key: result.get(key) for key in (*METRICS, "auc")}


def _manifest(bench: Path, seed: int, size: str, corpus_size, spec: ModelSpec, training: dict, metrics: dict,
              timings: dict[str, dict[str, float]], source: Path | str | None) -> dict:
    corpus_dir = bench / "corpus"
    corpus_files = sorted(path for path in corpus_dir.rglob("*.json"))
    return {
        "seed": seed,
        "size": size,
        "corpus": {
            # Synthetic: people per split; from a MUSE source: texts per split, words per text, QA.
            ("people" if source is None else "texts"): asdict(corpus_size),
            "source": None if source is None else str(Path(source).resolve()),
            "files": {path.relative_to(corpus_dir).as_posix(): sha256_file(path) for path in corpus_files},
            "sha256": sha256_tree(corpus_dir),
        },
        "models": {
            name: {"sha256": sha256_tree(bench / name), "training": training[name]} for name in ("target", "retrain")
        },
        "model_shape": asdict(spec.shape),
        "recipe": asdict(spec.recipe),
        "metrics": metrics,
        # Wall time per phase, and this process's CPU time: on a shared machine the wall time
        # grows with other load, the CPU time is what an uncontended core would need.
        **{kind: {phase: round(seconds, 2) for phase, seconds in values.items()} for kind, values in timings.items()},
        "versions": library_versions("torch", "transformers", "tokenizers"),
    }


@contextmanager
def _timed(timings: dict[str, dict[str, float]], phase: str) -> Iterator[None]:
    """Record the wall and CPU time of one build phase."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings["timings_s"][phase] = time.perf_counter() - wall
    timings["cpu_s"][phase] = time.process_time() - cpu
