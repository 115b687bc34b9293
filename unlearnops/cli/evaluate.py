"""CLI area: evaluate: MUSE metrics on any local model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import AllowPickleOpt, CorpusOpt, JsonOpt, ModelDirOpt, TrustRemoteCodeOpt
from .output import emit, out_console, table

# PrivLeak's membership AUC, shown under the registered metrics.
AUC_ROW = ("auc", "Min-40% AUC (0-1)", "0.5 = no membership signal")


def evaluate_command(
    model: ModelDirOpt,
    corpus: CorpusOpt,
    retrain_auc: Annotated[
        float | None,
        typer.Option("--retrain-auc", help="PrivLeak reference: the retrained model's AUC (MUSE NEWS 0.4772, BOOKS 0.5393).", show_default=False),
    ] = None,
    retrain_model: Annotated[
        Path | None,
        typer.Option("--retrain-model", help="PrivLeak reference: a model trained without the forget set; its AUC is computed on the same texts.", show_default=False),
    ] = None,
    details: Annotated[
        Path | None,
        typer.Option("--details", help="Write one JSON line per scored item and per membership text (generated text, gold, score) to this file.", show_default=False),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N items of each file (quick checks).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts generated (and texts scored) together.")] = 16,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="Compute only this metric (repeatable), a key of the metric registry: verbmem_f, knowmem_f, knowmem_r, privleak, ...", show_default=False),
    ] = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """MUSE metrics of a model: VerbMem and KnowMem on the forget set, KnowMem on the retain set, PrivLeak.

    Greedy generation, ROUGE-L F1 (no stemmer), Min-40% Prob membership AUC, as MUSE's reference
    code computes them, on MUSE's 0-100 scale. Works on full-precision and quantized model
    directories (compressed-tensors, bitsandbytes) and reports which precision was measured.
    PrivLeak needs --retrain-auc or --retrain-model; without either it is null (no 0.5 fallback).
    A metric whose corpus files are all absent is reported as null with a note.
    """
    from ..evaluate import evaluate_model

    result = evaluate_model(
        model,
        corpus,
        retrain_auc=retrain_auc,
        retrain_model=retrain_model,
        details_path=details,
        limit=limit,
        batch_size=batch_size,
        metrics=metric or None,
        show_progress=not as_json,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    emit(result, as_json, lambda: _render(result, details))


def _render(result: dict, details: Path | None) -> None:
    from ..metrics import METRICS

    counts = result["counts"]
    shown = [(metric.key, metric.name, metric.reading) for metric in METRICS.values()] + [AUC_ROW]
    rows = []
    for key, label, reading in shown:
        items = _items(counts, "privleak" if key == "auc" else key)
        rows.append((label, result[key], items, reading, result["notes"].get(key, "")))
    out_console.print(table(f"MUSE metrics of {result['model']} (0-100 unless noted)", ("metric", "value", "items", "reading", "note"), rows))
    if result["auc"] is not None:
        out_console.print(f"AUC: {result['auc']:.4f}", highlight=False)
    out_console.print(f"precision measured: {result['precision']}", highlight=False)
    out_console.print(f"PrivLeak reference: {result['privleak_reference']}", highlight=False)
    if details is not None:
        out_console.print(f"details: {details}", highlight=False)


def _items(counts: dict, key: str) -> int | str | None:
    """Items a metric used: its count, or its parts' ("6 forget + 6 holdout" for privleak_forget, privleak_holdout)."""
    if key in counts:
        return counts[key]
    parts = [f"{count} {name.removeprefix(key + '_')}" for name, count in counts.items() if name.startswith(key + "_")]
    return " + ".join(parts) or None


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
