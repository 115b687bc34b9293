"""quantize-report: MUSE metrics of the full-precision model and of every scheme's output, side by side.

The quantization-robustness view to look at before shipping: does forgetting (VerbMem_f,
KnowMem_f), utility (KnowMem_r) and privacy (PrivLeak) survive each precision? Writes
quantize-report.json (the table) and quantize-report.png (one panel per metric) under `out`,
with each quantized model in `out/<scheme>/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UnlearnopsError
from ..fileio import atomic_dir, write_bytes, write_json
from ..metrics import METRICS
from .core import quantize
from .schemes import get_scheme

FULL_PRECISION = "full precision"
REPORT_JSON, REPORT_PNG = "quantize-report.json", "quantize-report.png"


def quantize_report(
    model_dir: Path | str,
    corpus_dir: Path | str,
    schemes: Sequence[str],
    out: Path | str,
    *,
    group_size: int | None = None,
    calibration: str | Path | None = None,
    num_calibration_samples: int = 64,
    retrain_auc: float | None = None,
    limit: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Evaluate `model_dir` at full precision and quantized with each scheme; return the report document."""
    from ..bench import privleak_reference
    from ..evaluate import evaluate_model

    if not schemes:
        raise UnlearnopsError("--schemes: name at least one scheme, e.g. rtn-w4a16,nf4")
    for name in schemes:
        get_scheme(name)  # every name checked before hours of work, not after
    model_dir, corpus_dir, out = Path(model_dir), Path(corpus_dir), Path(out)
    retrain_auc = retrain_auc if retrain_auc is not None else privleak_reference(corpus_dir)
    evaluate = {"retrain_auc": retrain_auc, "limit": limit, "show_progress": show_progress}

    rows = [_row(FULL_PRECISION, None, evaluate_model(model_dir, corpus_dir, **evaluate), None)]
    with atomic_dir(out) as tmp:  # the output policy (fileio): the report appears complete, nothing of the user's replaced
        for name in schemes:
            manifest = quantize(
                model_dir, name, tmp / name, group_size=group_size, calibration=calibration,
                num_calibration_samples=num_calibration_samples, corpus=corpus_dir, show_progress=show_progress,
            )
            rows.append(_row(name, out / name, evaluate_model(tmp / name, corpus_dir, **evaluate), manifest))
        for row in rows:
            row["delta"] = {metric: _delta(row[metric], rows[0][metric]) for metric in METRICS}
        document = {
            "model": str(model_dir),
            "corpus": str(corpus_dir),
            "retrain_auc": retrain_auc,
            "metrics": list(METRICS),
            "scale": {metric.key: metric.scale for metric in METRICS.values()},
            "rows": rows,
            "plot": str(out / REPORT_PNG),
        }
        plot_report(rows, tmp / REPORT_PNG)
        write_json(tmp / REPORT_JSON, document)
    return document


def _row(label: str, model_dir: Path | None, metrics: dict, manifest: dict | None) -> dict:
    return {
        "label": label,
        "precision": metrics.get("precision"),
        "model": str(model_dir) if model_dir else metrics.get("model"),
        **{metric: metrics.get(metric) for metric in METRICS},
        "auc": metrics.get("auc"),
        "quantize_s": manifest["wall_time_s"] if manifest else None,
        "max_distinct_values_per_group": manifest["max_distinct_values_per_group"] if manifest else None,
    }


def _delta(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else round(value - reference, 3)


def plot_report(rows: list[dict], path: Path) -> None:
    """One bar panel per metric, one bar per precision; written atomically (fileio.write_bytes)."""
    import io

    from matplotlib.figure import Figure  # the object API draws with Agg: no display, no global backend switch

    figure = Figure(figsize=(3.2 * len(METRICS), 3.6), layout="constrained")
    axes = figure.subplots(1, len(METRICS), sharey=True, squeeze=False)[0]
    labels = [row["label"] for row in rows]
    for axis, metric in zip(axes, METRICS):
        values = [row[metric] if row[metric] is not None else 0.0 for row in rows]
        bars = axis.bar(range(len(rows)), values, color=["#555555"] + ["#4c72b0"] * (len(rows) - 1))
        axis.bar_label(bars, labels=[f"{row[metric]:.1f}" if row[metric] is not None else "n/a" for row in rows], fontsize=7)
        axis.set_title(METRICS[metric].label)
        axis.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    axes[0].set_ylabel("score (" + ", ".join(sorted({m.scale for m in METRICS.values()})) + ")")
    figure.suptitle("MUSE metrics per precision")
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    write_bytes(path, png.getvalue())
