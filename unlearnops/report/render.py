"""The request report as one self-contained HTML file (and, with Chromium, the same page as PDF).

Self-contained: inline CSS, charts as data: URIs, no script, no font or image from anywhere, and a
Content-Security-Policy that forbids loading anything but data: images, so the file opens the same
from an e-mail attachment with no network. Jinja2 escapes every value (autoescape).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UnlearnopsError
from ..fileio import check_file_target, write_bytes, write_text
from . import plots
from .evidence import METRICS, ROLE_LABELS, ROLES, RequestReport
from .summary import LEGAL_BASES, day, limits, num, summarise, when

TEMPLATE = "report.html.j2"
CHROMIUM_ENV = "UNLEARNOPS_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless Chromium without a profile, updates, sync or background traffic (what the test passes too).
CHROMIUM_FLAGS = ("--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--no-default-browser-check")
PDF_TIMEOUT_S = 120
# The gate's checks in plain words; a check of a metric registered later keeps its name.
CHECK_LABELS = {
    "verbmem_f": "Verbatim overlap with the requested texts",
    "knowmem_f": "Correct answers about the requested data",
    "utility_ratio": "Knowledge kept (fraction of the original's)",
    "privleak": "Privacy leakage |PrivLeak|",
    "quantization_gap.verbmem_f": "4-bit gap: verbatim overlap",
    "quantization_gap.knowmem_f": "4-bit gap: correct answers",
    "quantization_gap.privleak": "4-bit gap: privacy leakage",
}
# Plain names for MUSE's metrics (the registry's technical label in brackets); others keep their registry name.
PLAIN_LABELS = {"verbmem_f": "Verbatim overlap", "knowmem_f": "Answers about requested data", "knowmem_r": "Answers about data to keep",
                "privleak": "Privacy leakage"}
OTHER_LABELS = {"auc": "Membership AUC (PrivLeak's basis)", "served_model": "Model name the endpoint serves"}


def metric_labels() -> dict[str, str]:
    from ..metrics import METRICS

    labels = {key: f"{PLAIN_LABELS[key]} ({metric.label})" if key in PLAIN_LABELS else metric.name for key, metric in METRICS.items()}
    return {**labels, **OTHER_LABELS}


def render_html(report: RequestReport) -> str:
    import jinja2

    source = resources.files("unlearnops.report").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, day=day, num=num, check_label=_check_label, signed=_signed)
    return env.from_string(source).render(**context(report))


def context(report: RequestReport) -> dict[str, Any]:
    evidence = report.evidence
    charts: dict[str, str] = {}
    sustained = []
    if evidence is not None:
        charts["evidence"] = plots.evidence_chart(evidence)
        own = {"ref": evidence["version"], **{k: (evidence["rows"]["quantized"] or {}).get(k) for k in ("verbmem_f", "knowmem_f")}}
        sustained = [{"ref": v["ref"], **_inherited_values(v)} for v in report.later_versions]
        if sustained:
            charts["sustainability"] = plots.sustainability_chart(report.request["request_id"], own, sustained, evidence["policy"])
    return {
        "r": report, "request": report.request, "audit": report.audit, "lineage": report.lineage, "evidence": evidence,
        "later": report.later_versions, "endpoints": report.endpoint_checks, "summary": summarise(report), "limits": limits(report),
        "limit_texts": limit_texts(evidence["policy"] if evidence else {}),
        "charts": charts, "roles": ROLES, "role_labels": ROLE_LABELS, "metrics": METRICS, "metric_labels": metric_labels(),
        "legal_bases": LEGAL_BASES, "version": __version__,
    }


def limit_texts(policy: dict[str, Any]) -> dict[str, str]:
    """Each metric's gate limit on the shipped model, in words (from its Bound in the registry)."""
    from ..metrics import METRICS

    texts = {}
    for key, metric in METRICS.items():
        limit = policy.get(metric.bound.threshold) if metric.bound else None
        if not isinstance(limit, (int, float)):
            texts[key] = ""
        elif metric.bound.kind == "max":
            texts[key] = f"≤ {num(limit)}"
        elif metric.bound.kind == "abs_max":
            texts[key] = f"within ±{num(limit, 0)}"
        else:
            texts[key] = f"≥ {num(limit * 100, 0)}% of original"
    return texts


def _inherited_values(version: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for check in version["checks"]:
        values[check["name"].rsplit(".", 1)[-1]] = check.get("measured")
    return values


def _check_label(name: str) -> str:
    if name.startswith("inherited."):
        _, request, metric = name.split(".", 2)
        return f"Earlier request {request}: {CHECK_LABELS.get(metric, metric).lower()}"
    return CHECK_LABELS.get(name, name)


def _signed(value: Any, digits: int = 1) -> str:
    return "n/a" if not isinstance(value, (int, float)) else f"{value:+.{digits}f}"


def write_html(report: RequestReport, out: Path, *, what: str = "report") -> Path:
    write_text(out, render_html(report), what=what)
    return out


# ---- PDF ----------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    """$UNLEARNOPS_CHROMIUM, else the first Chromium or Chrome on PATH."""
    chosen = os.environ.get(CHROMIUM_ENV)
    if chosen:
        return chosen if Path(chosen).is_file() and os.access(chosen, os.X_OK) else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def chromium_command(chromium: str, profile: Path) -> list[str]:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    return command


def write_pdf(html: Path, out: Path, *, what: str = "PDF") -> Path:
    """Print the HTML page to PDF with headless Chromium (`--print-to-pdf`), atomically."""
    chromium = find_chromium()
    if chromium is None:
        raise UnlearnopsError(
            f"--pdf: no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on PATH and ${CHROMIUM_ENV}); install it "
            "(Debian/Ubuntu: apt-get install chromium) or open the HTML report and print it"
        )
    check_file_target(out, what=what)
    with tempfile.TemporaryDirectory(prefix="unlearnops-chromium-") as profile:
        staging = Path(profile) / "report.pdf"
        command = [*chromium_command(chromium, Path(profile) / "profile"), "--no-pdf-header-footer", f"--print-to-pdf={staging}",
                   html.resolve().as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PDF_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UnlearnopsError(f"--pdf: Chromium did not finish within {PDF_TIMEOUT_S} s; open the HTML report and print it") from None
        if done.returncode != 0 or not staging.is_file() or staging.stat().st_size == 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UnlearnopsError(f"--pdf: Chromium exited {done.returncode} without a PDF ({last[:200]})")
        write_bytes(out, staging.read_bytes(), what=what)
    return out
