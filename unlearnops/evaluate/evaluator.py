"""Evaluate a model directory or an in-memory model on a MUSE-layout corpus.

A metric whose corpus files are all absent is reported as null with a note; a metric with only
some of its files (e.g. privleak/forget.json without privleak/holdout.json) is an error, since
that corpus is broken rather than smaller; a corpus with files for none of the requested
metrics is an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..corpus import Corpus
from ..errors import UnlearnopsError, UsageError, did_you_mean
from ..fileio import write_text
from ..modeling import check_model_dir, load_causal_lm, precision_of
from ..metrics import METRICS, Run
from . import generation, muse

NO_REFERENCE = (
    "none: no retrain AUC given (--retrain-auc or --retrain-model), so PrivLeak is null; "
    "like MUSE's reference code there is no 0.5 fallback"
)


def select_metrics(names: Sequence[str] | None) -> list[str]:
    """The requested metric names in registry order; an unknown name gets a 'did you mean'."""
    if names is None:
        return list(METRICS)
    for name in names:
        if name not in METRICS:
            raise UsageError(f"metric '{name}': unknown; {did_you_mean(name, METRICS)}choose from {', '.join(METRICS)}")
    return [name for name in METRICS if name in names]


def plan(corpus: Corpus, names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(metrics that can run, notes on those skipped because the corpus lacks their files)."""
    runnable, notes = [], {}
    for name in names:
        needs = METRICS[name].needs
        present = [need for need in needs if corpus.has(need)]
        if len(present) == len(needs):
            runnable.append(name)
        elif present:
            corpus.require(*needs)  # raises, naming the missing file
        else:
            notes[name] = f"not computed: the corpus has no {', '.join(f'{need}.json' for need in needs)}"
    if not runnable:
        wanted = sorted({f"{need}.json" for name in names for need in METRICS[name].needs})
        raise UnlearnopsError(f"corpus {corpus.root}: none of the files the metrics need ({', '.join(wanted)}); pass a MUSE-layout corpus")
    return runnable, notes


def evaluate_loaded(
    model: Any,
    tokenizer: Any,
    corpus: Corpus | Path | str,
    *,
    limit: int | None = None,
    metrics: Sequence[str] | None = None,
    retrain_auc: float | None = None,
    privleak_reference: str | None = None,
    details_path: Path | str | None = None,
    batch_size: int = 16,
    show_progress: bool = False,
    precision: str | None = None,
    model_name: str | None = None,
) -> dict:
    """MUSE metrics of an in-memory model (e.g. each epoch of unlearning, on `limit` items).

    `metrics` selects e.g. ("verbmem_f", "knowmem_f", "knowmem_r"); default all four.
    """
    _check_settings(limit=limit, batch_size=batch_size, retrain_auc=retrain_auc, details_path=details_path)
    corpus = corpus if isinstance(corpus, Corpus) else Corpus.load(corpus)
    reference = privleak_reference or _given_reference(retrain_auc)
    run = Run(model, tokenizer, corpus, limit=limit, batch_size=batch_size, show_progress=show_progress, retrain_auc=retrain_auc)
    result, details = _evaluate(run, select_metrics(metrics), reference)
    result["precision"] = precision or precision_of(model.config.to_dict())
    result["model"] = model_name or getattr(model.config, "_name_or_path", "") or "in-memory model"
    if details_path is not None:
        write_details(details_path, details)
    return result


def evaluate_model(
    model_dir: Path | str,
    corpus_dir: Path | str,
    *,
    retrain_auc: float | None = None,
    retrain_model: Path | str | None = None,
    details_path: Path | str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    metrics: Sequence[str] | None = None,
    show_progress: bool = True,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> dict:
    """MUSE metrics of a local model directory (any precision modeling.load_causal_lm loads)."""
    if retrain_auc is not None and retrain_model is not None:
        raise UsageError("--retrain-auc and --retrain-model: give one PrivLeak reference, not both")
    _check_settings(limit=limit, batch_size=batch_size, retrain_auc=retrain_auc, details_path=details_path)
    corpus = Corpus.load(corpus_dir)
    names = select_metrics(metrics)
    runnable, _ = plan(corpus, names)  # fail on a broken corpus before loading any model
    load_options = {"trust_remote_code": trust_remote_code, "allow_pickle": allow_pickle}
    check_model_dir(model_dir, **load_options)
    reference = _given_reference(retrain_auc)
    retrain_details: list[dict] = []
    if retrain_model is not None:
        check_model_dir(retrain_model, **load_options)
        if "privleak" in runnable:
            retrain_auc, retrain_details = _retrain_membership(retrain_model, corpus, limit, batch_size, show_progress, load_options)
            reference = f"retrain model {retrain_model} (AUC {retrain_auc:.4f} on the same forget/holdout texts)"
        else:
            reference = f"retrain model {retrain_model} not used: PrivLeak is not computed on this corpus"
    loaded = load_causal_lm(model_dir, **load_options)
    run = Run(loaded.model, loaded.tokenizer, corpus, limit=limit, batch_size=batch_size, show_progress=show_progress,
              retrain_auc=retrain_auc)
    result, details = _evaluate(run, names, reference)
    result["precision"] = loaded.precision
    result["model"] = str(model_dir)
    if details_path is not None:
        write_details(details_path, details + retrain_details)
    return result


def _given_reference(retrain_auc: float | None) -> str:
    return f"--retrain-auc {retrain_auc:g}" if retrain_auc is not None else NO_REFERENCE


def _retrain_membership(
    model_dir: Path | str, corpus: Corpus, limit: int | None, batch_size: int, show_progress: bool, load_options: dict
) -> tuple[float, list[dict]]:
    loaded = load_causal_lm(model_dir, **load_options)
    run = Run(loaded.model, loaded.tokenizer, corpus, limit=limit, batch_size=batch_size, show_progress=show_progress, role="retrain")
    outcome = muse.membership(run)
    return float(outcome.value), outcome.details


def _evaluate(run: Run, names: list[str], reference: str) -> tuple[dict, list[dict]]:
    runnable, notes = plan(run.corpus, names)
    values: dict[str, float | None] = dict.fromkeys(METRICS)
    extra: dict[str, Any] = {"auc": None}
    counts: dict[str, int] = {}
    seconds: dict[str, float] = {}
    details: list[dict] = []
    was_training = getattr(run.model, "training", False)
    run.model.eval()  # no dropout while measuring; restored below for a model mid-training
    try:
        for name in runnable:
            started = time.perf_counter()
            outcome = METRICS[name].compute(run)
            seconds[name] = round(time.perf_counter() - started, 3)
            values[name] = outcome.value
            extra.update(outcome.extra)
            counts.update(outcome.counts)
            details.extend(outcome.details)
    finally:
        run.model.train(was_training)
    notes.update({name: "not requested" for name in METRICS if name not in names})
    if extra["auc"] is None:
        reference = notes.get("privleak", reference)
    elif run.retrain_auc is None:
        notes["privleak"] = "null: no retrain reference (--retrain-auc or --retrain-model)"
    elif run.retrain_auc == 0:
        notes["privleak"] = "undefined: the retrain AUC is 0"
    result = {
        "model": None,
        "precision": None,
        **values,
        **extra,
        "retrain_auc": run.retrain_auc,
        "privleak_reference": reference,
        "counts": counts,
        "notes": notes,
        "seconds": seconds,
        "settings": _settings(run),
    }
    return result, details


def _settings(run: Run) -> dict:
    return {
        "limit": run.limit,
        "batch_size": run.batch_size,
        "verbmem_max_new_tokens": muse.VERBMEM_MAX_NEW_TOKENS,
        "knowmem_max_new_tokens": muse.KNOWMEM_MAX_NEW_TOKENS,
        "rouge": "rougeL F1 (rouge-score, no stemmer)",
        "min_k_fraction": muse.MIN_K_FRACTION,
        "context_length": generation.context_length(run.model, run.tokenizer),
        "scale": "; ".join(f"{', '.join(keys)}: {scale}" for scale, keys in _by_scale().items()) + "; auc, retrain_auc: 0-1",
    }


def _by_scale() -> dict[str, list[str]]:
    scales: dict[str, list[str]] = {}
    for metric in METRICS.values():
        scales.setdefault(metric.scale, []).append(metric.key)
    return scales


def _check_settings(*, limit: int | None, batch_size: int, retrain_auc: float | None, details_path: Path | str | None) -> None:
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: must be at least 1 (or omitted for every item)")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    if retrain_auc is not None and not 0 < retrain_auc <= 1:
        raise UsageError(f"--retrain-auc {retrain_auc}: must be an AUC in (0, 1], e.g. 0.4772 for MUSE NEWS")
    if details_path is not None and Path(details_path).is_dir():
        raise UsageError(f"--details {details_path}: is a directory; pass a file path such as details.jsonl")


def write_details(path: Path | str, rows: list[dict]) -> None:
    """One JSON object per line: every scored item and every membership score (atomic write)."""
    try:
        write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    except OSError as err:
        raise UnlearnopsError(f"--details {path}: cannot write ({err.strerror or err}); pass a writable file path") from None
