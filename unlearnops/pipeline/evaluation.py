"""The evaluate stage: every registered metric (unlearnops.metrics) of the source, the
full-precision and the quantized model, and the inherited metrics of the quantized model on the
forget set of every request the source version already satisfies.

One cached stage output per (model, corpus, settings, metrics): `evaluate:<role>` in the
timings and child runs (its metrics as `metrics.<key>`), `metrics.json` (the whole result)
logged on the child run. The stage record keeps every registered metric, so the gate and MLflow
get each one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..fileio import write_json
from ..metrics import METRICS
from .context import RunContext
from .data import RequestData
from .lineage import recheck, rechecked_metrics
from .runner import Stage
from .stages import StageResult

RESULT = "metrics.json"
# Besides the registered metrics, the keys of an evaluation the stage record keeps (metrics.json keeps everything).
# retrain_auc and counts: PrivLeak's reference and sample sizes, which the gate report shows.
ALSO_RECORDED = ("auc", "retrain_auc", "counts", "precision")


def evaluate_all(ctx: RunContext, registration, source_dir: StageResult, unlearned: StageResult, quantized: StageResult,
                 data: RequestData) -> dict[str, Any]:
    """{"source", "full_precision", "quantized": metrics, "inherited": [InheritedRequest as dict]}."""
    on_corpus = (data.corpus, data.corpus_sha256, data.retrain_auc)
    metrics = {
        "source": evaluate(ctx, "source", source_dir.path / "model", source_dir.record["model_sha256"], *on_corpus),
        "full_precision": evaluate(ctx, "full precision", unlearned.path / "out" / "model", unlearned.record["model_sha256"], *on_corpus),
        "quantized": evaluate(ctx, "quantized", quantized.path / "out", quantized.record["model_sha256"], *on_corpus),
    }
    metrics["inherited"] = inherited(ctx, registration, quantized, data, metrics["quantized"])
    return metrics


def evaluate(ctx: RunContext, role: str, model_dir: Path, model_sha: str, corpus: Path, corpus_sha: str,
             retrain_auc: float | None, metrics: tuple[str, ...] | None = None) -> dict[str, Any]:
    from ..evaluate import evaluate_model

    metrics = tuple(metrics or METRICS)  # part of the key: a newly registered metric is measured, not missed
    settings = {**ctx.config.evaluate.model_dump(), "retrain_auc": retrain_auc, "metrics": metrics}

    def build(tmp: Path) -> dict:
        result = evaluate_model(
            model_dir, corpus, retrain_auc=retrain_auc, limit=settings["limit"], batch_size=settings["batch_size"],
            metrics=metrics, show_progress=ctx.runner.show_progress,
        )
        write_json(tmp / RESULT, result)
        return {"metrics": {key: result.get(key) for key in (*METRICS, *ALSO_RECORDED)}}

    stage = Stage("evaluate", settings, {"model": model_sha, "corpus": corpus_sha}, build, label=f"evaluate:{role}",
                  announce=role, params={"role": role}, artifacts=(RESULT,))
    return ctx.runner.run(stage).record["metrics"]


def inherited(ctx: RunContext, registration, quantized: StageResult, data: RequestData, current: dict) -> list[dict]:
    """Re-check the forget set of every request the source version's signed record claims (lineage.recheck)."""

    def measure(request_id: str, corpus: Path, corpus_sha: str) -> dict[str, Any]:
        if corpus_sha == data.corpus_sha256:
            return current  # the same forget set as this request: already measured
        return evaluate(ctx, f"inherited {request_id}", quantized.path / "out", quantized.record["model_sha256"],
                        corpus, corpus_sha, None, rechecked_metrics())

    return [asdict(request) for request in recheck(ctx.evidence, registration, measure)] if registration is not None else []
