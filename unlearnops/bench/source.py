"""Which registered model is a bench's target: the names `run` registers bench targets under.

A workspace may hold several benches (default, tiny, smollm2-135m), each with its own target
model. `run` registers a bench's target on first use, under two kinds of names:

  unlearnops-bench-<bench>   that bench's target, always (e.g. unlearnops-bench-smollm2-135m)
  unlearnops-bench           the generic name: the target of the first bench it was used with

A request whose data is a bench gets that bench's target or is refused: the pipeline compares
the bench's recorded target hash (bench.json `models.target.sha256`) with the model at the root
of the named version's signed lineage (pipeline/steps.py), so the generic name can no longer
silently stand for another bench's model.
"""

from __future__ import annotations

from pathlib import Path

from .. import registry
from ..fileio import read_json
from .build import MANIFEST, SIZES
from .pretrained import BASES

GENERIC = registry.SOURCE_MODEL_NAME


def benches() -> tuple[str, ...]:
    """Every bench a request may name: the synthetic sizes and the pretrained bases."""
    return (*SIZES, *BASES)


def source_name(bench: str) -> str:
    """The registered name of one bench's target: unlearnops-bench-<bench>."""
    return f"{GENERIC}-{bench}"


def bench_of(name: str) -> str | None:
    """For a registered model name: "" for the generic bench source, the bench for a bench's own
    name, None for any other model (e.g. unlearnops-bench-unlearned: no bench of that name)."""
    if name == GENERIC:
        return ""
    return next((bench for bench in benches() if name == source_name(bench)), None)


def is_bench_source(ref: str) -> bool:
    """Whether a model reference names a bench target that `run` registers on first use (alias production)."""
    name, _, alias = registry.parse_ref(ref)
    return bench_of(name) is not None and alias == registry.PRODUCTION


def target_of(bench_dir: Path) -> tuple[str, str | None]:
    """(the bench's name, its target's recorded sha256) from BENCH/bench.json."""
    manifest = read_json(Path(bench_dir) / MANIFEST)
    models = manifest.get("models") if isinstance(manifest, dict) else None
    target = models.get("target") if isinstance(models, dict) else None
    digest = target.get("sha256") if isinstance(target, dict) else None
    return str(manifest.get("size", "?")), digest if isinstance(digest, str) else None
