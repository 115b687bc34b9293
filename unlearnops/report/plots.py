"""The report's charts: matplotlib figures as SVG, embedded as data: URIs (no file, no network).

SVG keeps the text as paths (matplotlib's default `svg.fonttype`), so a chart looks the same in
any browser or PDF viewer without fonts, and is a few tens of kilobytes.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from ..metrics import METRICS, Metric
from .evidence import ROLES

COLORS = {"source": "#9e9e9e", "retrain": "#8fbf8f", "full_precision": "#5b84c4", "quantized": "#e07b39"}
SHORT = {"source": "original", "retrain": "never\ntrained", "full_precision": "unlearned\nfull prec.", "quantized": "shipped\n4-bit"}
# Plain titles for MUSE's metrics; a metric registered later is titled by its own name.
TITLES = {
    "verbmem_f": "Verbatim overlap with\nthe requested texts",
    "knowmem_f": "Correct answers about\nthe requested data",
    "knowmem_r": "Correct answers about\ndata to keep",
    "privleak": "Privacy leakage\n(PrivLeak)",
}
READINGS = {"lower": "lower is better", "higher": "higher is better", "zero": "0 is ideal"}


def data_uri(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode("utf-8")).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "unlearnops", "font.size": 8, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def evidence_chart(evidence: dict[str, Any]) -> str:
    """One panel per metric: the four models' values, the gate's threshold as a dashed red line."""
    plt = _pyplot()
    rows, policy = evidence["rows"], evidence["policy"]
    panels = [metric for metric in METRICS.values() if any(isinstance((rows.get(role) or {}).get(metric.key), (int, float)) for role in ROLES)]
    figure, axes = plt.subplots(1, len(panels), figsize=(2.75 * len(panels), 3.1), squeeze=False)
    for axis, metric in zip(axes[0], panels):
        key, title, reading = metric.key, TITLES.get(metric.key, metric.name), READINGS[metric.better]
        values = [(rows.get(role) or {}).get(key) for role in ROLES]
        heights = [v if isinstance(v, (int, float)) else 0.0 for v in values]
        bars = axis.bar(range(len(ROLES)), heights, color=[COLORS[r] for r in ROLES], edgecolor=["none"] * 3 + ["#7a3a10"],
                        linewidth=1.2)
        for bar, value in zip(bars, values):
            label = "n/a" if not isinstance(value, (int, float)) else f"{value:.1f}"
            y = bar.get_height()
            axis.annotate(label, (bar.get_x() + bar.get_width() / 2, y), xytext=(0, 2 if y >= 0 else -9),
                          textcoords="offset points", ha="center", fontsize=7)
        for threshold in _thresholds(metric, policy, rows):
            axis.axhline(threshold, color="#c62828", linestyle="--", linewidth=1)
        if metric.better == "zero":
            axis.axhline(0, color="#444444", linewidth=0.8)
            axis.set_ylim(-128, 110)
        else:
            axis.set_ylim(0, 110)
        axis.set_xticks(range(len(ROLES)), [SHORT[r] for r in ROLES], fontsize=6.5)
        axis.set_title(f"{title}\n({reading})", fontsize=8)
    figure.text(0.5, -0.02, "dashed red line: the release gate's limit for the shipped model", ha="center", fontsize=7, color="#c62828")
    figure.tight_layout()
    return data_uri(figure)


def _thresholds(metric: Metric, policy: dict[str, Any], rows: dict[str, Any]) -> list[float]:
    """Where the gate's bound on the shipped model lies on this metric's axis (the registry's Bound)."""
    bound = metric.bound
    limit = policy.get(bound.threshold) if bound else None
    if not isinstance(limit, (int, float)):
        return []
    if bound.kind == "max":
        return [limit]
    if bound.kind == "abs_max":
        return [-limit, limit] if limit <= 110 else []  # a bound beyond the axis bounds nothing
    source = (rows.get("source") or {}).get(metric.key)
    return [limit * source] if isinstance(source, (int, float)) else []


def sustainability_chart(request_id: str, own: dict[str, Any], later: list[dict[str, Any]], policy: dict[str, Any]) -> str:
    """This request's forgetting on its own version and every later one (re-checked at their gates)."""
    plt = _pyplot()
    versions = [own] + later
    figure, axes = plt.subplots(1, 2, figsize=(7.5, 2.6))
    for axis, key, title in ((axes[0], "verbmem_f", "Verbatim overlap"), (axes[1], "knowmem_f", "Correct answers")):
        values = [version.get(key) for version in versions]
        heights = [v if isinstance(v, (int, float)) else 0.0 for v in values]
        axis.bar(range(len(versions)), heights, color=["#e07b39"] + ["#f2b48a"] * len(later))
        for index, value in enumerate(values):
            axis.annotate("n/a" if value is None else f"{value:.1f}", (index, heights[index]), xytext=(0, 2),
                          textcoords="offset points", ha="center", fontsize=7)
        if isinstance(policy.get(f"max_{key}"), (int, float)):
            axis.axhline(policy[f"max_{key}"], color="#c62828", linestyle="--", linewidth=1)
        axis.set_xticks(range(len(versions)), [v["ref"] for v in versions], fontsize=7)
        axis.set_ylim(0, 110)
        axis.set_title(f"{title} on request {request_id}'s data\n(each version, 4-bit; lower is better)", fontsize=8)
    figure.tight_layout()
    return data_uri(figure)
