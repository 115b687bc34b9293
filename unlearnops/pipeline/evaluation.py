"""The evaluate stage: MUSE metrics of the source, the full-precision and the quantized model, and of
the quantized model on the forget set of every request the source version already satisfies.

One cached stage output per (model, corpus, settings): `evaluate:<role>` in the timings and
child runs, `metrics.json` (the whole result) logged on the child run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..fileio import write_json
from .context import RunContext
from .data import RequestData
from .runner import Stage
from .stages import StageResult

RESULT = "metrics.json"
# The keys of an evaluation the stage record keeps (metrics.json keeps everything).
RECORDED = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak", "auc", "precision")
INHERITED_METRICS = ("verbmem_f", "knowmem_f")


def evaluate_all(ctx: RunContext, source, source_dir: StageResult, unlearned: StageResult, quantized: StageResult,
                 data: RequestData) -> dict[str, Any]:
    """{"source", "full_precision", "quantized": metrics, "inherited": [InheritedRequest as dict]}."""
    on_corpus = (data.corpus, data.corpus_sha256, data.retrain_auc)
    metrics = {
        "source": evaluate(ctx, "source", source_dir.path / "model", source_dir.record["model_sha256"], *on_corpus),
        "full_precision": evaluate(ctx, "full precision", unlearned.path / "out" / "model", unlearned.record["model_sha256"], *on_corpus),
        "quantized": evaluate(ctx, "quantized", quantized.path / "out", quantized.record["model_sha256"], *on_corpus),
    }
    metrics["inherited"] = inherited(ctx, source, quantized, data, metrics["quantized"])
    return metrics


def evaluate(ctx: RunContext, role: str, model_dir: Path, model_sha: str, corpus: Path, corpus_sha: str,
             retrain_auc: float | None, metrics: tuple[str, ...] | None = None) -> dict[str, Any]:
    from ..evaluate import evaluate_model

    settings = {**ctx.config.evaluate.model_dump(), "retrain_auc": retrain_auc, "metrics": metrics}

    def build(tmp: Path) -> dict:
        result = evaluate_model(
            model_dir, corpus, retrain_auc=retrain_auc, limit=settings["limit"], batch_size=settings["batch_size"],
            metrics=metrics, show_progress=ctx.runner.show_progress,
        )
        write_json(tmp / RESULT, result)
        return {"metrics": {key: result.get(key) for key in RECORDED}}

    stage = Stage("evaluate", settings, {"model": model_sha, "corpus": corpus_sha}, build, label=f"evaluate:{role}",
                  announce=role, params={"role": role}, artifacts=(RESULT,))
    return ctx.runner.run(stage).record["metrics"]


def inherited(ctx: RunContext, source, quantized: StageResult, data: RequestData, current: dict) -> list[dict]:
    """Re-check the forget set of every request the source version already satisfies."""
    from ..gate import InheritedRequest

    found = []
    for request_id, corpus, problem in (source.forget_sets() if source is not None else []):
        if problem:
            found.append(asdict(InheritedRequest(request_id, None, problem)))
            continue
        corpus_sha = source.request_records()[request_id]["corpus_sha256"]
        if corpus_sha == data.corpus_sha256:
            measured = current  # the same forget set as this request: already measured
        else:
            measured = evaluate(
                ctx, f"inherited {request_id}", quantized.path / "out", quantized.record["model_sha256"],
                corpus, corpus_sha, None, INHERITED_METRICS,
            )
        found.append(asdict(InheritedRequest(request_id, measured)))
    return found
