"""The per-request report: one self-contained HTML page (and PDF) a data protection officer can read.

    evidence.py  collect(workspace, request_id) -> RequestReport: the data, from the audit log and the registry
    summary.py   the plain-language summary and the limits of the evidence, generated from the numbers
    plots.py     the charts (matplotlib SVG as data: URIs)
    render.py    the HTML (jinja2, templates/report.html.j2) and the PDF (headless Chromium)
"""

from .evidence import RequestReport, collect
from .render import find_chromium, render_html, write_html, write_pdf

__all__ = ["RequestReport", "collect", "find_chromium", "render_html", "write_html", "write_pdf"]
