"""`unlearnops report`: the per-request page a data protection officer reads, checked the way a person sees it.

Built from a real pipeline run (tests/evidence_workspace.py: two requests, a promotion, a later
version that re-checked the first request) and a real endpoint verification (tests/openai_server.py).
The page is opened in headless Chromium through the DevTools protocol (tests/browser.py): the
request id and the gate result are visible, the charts are images that loaded, no console error,
nothing requested from the network; a control page with an external image and a script error
shows that those checks can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest

from evidence_workspace import FIRST, REFUSED, env, evidence, record_deployment  # noqa: F401  (fixtures)
from unlearnops.report import find_chromium

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="headless Chromium is not installed here (`apt-get install chromium`; .ci/run installs it, so CI runs this test)",
)


@pytest.fixture(scope="module")
def verified(evidence):
    """A verification of an endpoint serving the registered model, recorded in the log (as verify-endpoint does)."""
    from openai_server import CompletionServer
    from unlearnops.endpoint import verify_endpoint
    from unlearnops.workspace import Workspace

    with CompletionServer(evidence.registered_dir, f"{evidence.name}/{evidence.version}") as server:
        record_deployment(evidence, server.port)  # left live: the report shows the request satisfied by a served model
        result = verify_endpoint(Workspace(evidence.root), server.url, request_id=FIRST)
    assert result.passed
    return result


def _forget_texts(bench) -> list[str]:
    corpus = bench / "corpus"
    texts = [item["gt"] for item in json.loads((corpus / "verbmem" / "forget.json").read_text())]
    texts += [qa["answer"] for qa in json.loads((corpus / "knowmem" / "forget_qa.json").read_text())]
    texts += json.loads((corpus / "privleak" / "forget.json").read_text())
    return texts


def test_the_report_states_the_request_lineage_evidence_and_endpoint(env, verified, cli, tmp_path):
    out = tmp_path / "report.html"
    result = cli("report", "--request", FIRST, "--request-file", env.request_file, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["gate_passed"] and document["audit_ok"] and document["status"] == "satisfied"
    assert document["endpoint"][0]["passed"] and document["problems"] == []
    html = out.read_text()
    for expected in (FIRST, "Data Protection Office", "GDPR Art. 17", "DSR ticket 0001", f"{env.name}/{env.version}",
                     f"{env.name}/{env.later_version}", f"{env.name}/1", "PASSED", "VERIFIES", "VERIFIED", verified.endpoint):
        assert expected in html, expected
    # nothing from anywhere but the file itself, and no forgotten text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|ftp:)""", html, re.I) and "<script" not in html.lower()
    windows = {text[i : i + 40] for text in _forget_texts(env.bench) for i in range(0, max(1, len(text) - 39), 20) if len(text) >= 40}
    assert windows and not [window for window in windows if window in html]


def test_the_summary_is_generated_from_the_numbers(env, verified):
    from unlearnops.report import collect
    from unlearnops.report.summary import summarise
    from unlearnops.workspace import Workspace

    report = collect(Workspace(env.root), FIRST)
    evidence = report.evidence
    shipped, source = evidence["rows"]["quantized"], evidence["rows"]["source"]
    text = " ".join(sentence.text for sentence in summarise(report))
    assert f"fell from {source['verbmem_f']:.1f} to {shipped['verbmem_f']:.1f}" in text
    assert f"re-checked it on its forget set and still meet it ({env.name}/{env.later_version})" in text
    assert "was verified on" in text and "The release gate PASSED" in text
    # the same report with a failed check, a mismatch and an unverified log says so, in words
    evidence["gate"]["passed"] = False
    next(c for c in evidence["gate"]["checks"] if c["name"] == "verbmem_f")["status"] = "failed"
    report.endpoint_checks[0]["passed"] = False
    report.endpoint_checks[0]["failed_checks"] = ["verbmem_f"]
    report.audit.update(ok=False, reason="record 3's content does not match its hash (edited)")
    sentences = summarise(report)
    bad = " ".join(s.text for s in sentences if s.tone == "bad")
    assert "The release gate FAILED" in bad and "MISMATCH at" in bad and "does NOT verify" in bad and "verbatim overlap" in bad

    # a gate report with a two-sided, signed PrivLeak check and its reference's uncertainty (issue 15's format)
    from unlearnops.report import render_html
    from unlearnops.report.summary import limits

    privleak = next(c for c in evidence["gate"]["checks"] if c["name"] == "privleak")
    privleak.update(direction="abs_max", measured=-85.37, threshold=50.0, status="failed", side="under-unlearning: the forget texts still leak")
    evidence["privleak_reference"] = {"retrain_auc": 0.8, "privleak_noise_95": 61.0, "bound": 50.0, "too_small": True,
                                      "texts_needed": 40, "message": "sample too small for the bound to mean anything"}
    assert any("as wide as the gate's bound" in s.text and s.tone == "bad" for s in limits(report))
    html = render_html(report)
    assert "|x| ≤ 50.00" in html and "-85.37" in html and "under-unlearning" in html and "sample too small" in html


@needs_chromium
def test_the_report_renders_in_headless_chromium_as_a_person_sees_it(env, verified, cli, tmp_path):
    from browser import Browser

    out, shot = tmp_path / "report.html", tmp_path / "report.png"
    assert cli("report", "--request", FIRST, "--request-file", env.request_file, "--out", out).exit_code == 0
    with Browser() as browser:
        page = browser.open(out, screenshot=shot)
        visible = page.evaluate("document.body.innerText")
        images = page.evaluate("[...document.images].map(i => ({id: i.id, complete: i.complete, width: i.naturalWidth, "
                               "scheme: i.src.split(':')[0]}))")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        gate = page.evaluate("document.getElementById('gate-result').innerText")
        title = page.evaluate("document.title")
    assert FIRST in title and f"request {FIRST}" in visible
    assert gate == "PASSED" and "Live endpoint: VERIFIED" in visible.replace("\n", " ")
    assert {image["id"] for image in images} == {"chart-evidence", "chart-sustainability"}
    assert all(image["complete"] and image["width"] > 300 and image["scheme"] == "data" for image in images), images
    assert page.console_errors == [] and page.exceptions == [], (page.console_errors, page.exceptions)
    assert page.network_requests == [] and page.failed == [], page.network_requests
    assert overflow <= 0, "the page is wider than the window"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


@needs_chromium
def test_the_browser_checks_catch_a_fetch_and_a_console_error(env, verified, cli, tmp_path):
    """The control: the same page with an external image and a script error fails each check above."""
    from browser import Browser

    out = tmp_path / "report.html"
    assert cli("report", "--request", FIRST, "--out", out).exit_code == 0
    html = out.read_text()
    html = html.replace("default-src 'none'; img-src data:;", "default-src 'none'; img-src data: http:; script-src 'unsafe-inline';")
    control = tmp_path / "control.html"
    control.write_text(html.replace("</main>", '<img id="remote" src="http://127.0.0.1:9/x.png"><script>console.error("broken")</script></main>'))
    with Browser() as browser:
        page = browser.open(control)
        remote = page.evaluate("document.getElementById('remote').naturalWidth")
    assert "http://127.0.0.1:9/x.png" in page.network_requests
    assert any("broken" in entry["text"] for entry in page.console_errors)
    assert remote == 0  # an image that did not load


@needs_chromium
def test_the_pdf_is_the_same_page_printed(env, cli, tmp_path):
    out, pdf = tmp_path / "report.html", tmp_path / "report.pdf"
    result = cli("report", "--request", FIRST, "--out", out, "--pdf", pdf, "--json")
    assert result.exit_code == 0, result.stderr
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 2  # the whole page, printed on A4/Letter pages
    assert json.loads(result.stdout)["pdf"] == str(pdf)


def test_a_request_whose_gate_failed_shows_the_failed_gate_and_nothing_registered(env, cli, tmp_path):
    out = tmp_path / "report.html"
    result = cli("report", "--request", REFUSED, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["gate_passed"] is False and document["status"] == "pending"
    assert any("its release gate did not pass" in problem for problem in document["problems"])
    html = out.read_text()
    assert "FAILED" in html and "not registered" in html
    assert "at most 1.0" in html  # the request's own, tighter limit is the one shown


def test_a_request_file_that_is_not_the_one_received_is_refused(env, cli, tmp_path):
    changed = tmp_path / "request.json"
    request = json.loads(env.request_file.read_text())
    request["requester"]["name"] = "Someone Else"
    changed.write_text(json.dumps(request))
    out = tmp_path / "report.html"
    result = cli("report", "--request", FIRST, "--request-file", changed, "--out", out)
    assert result.exit_code == 1 and "is not the" in result.stderr and "audit log recorded" in result.stderr
    assert not out.exists()
    unknown = cli("report", "--request", "dsr-never-received", "--out", out)
    assert unknown.exit_code == 1 and "no request.received record" in unknown.stderr and not out.exists()


def test_a_report_on_a_log_that_does_not_verify_says_so_and_exits_1(env, cli, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(env.root, copy, ignore=shutil.ignore_patterns("bench", "mlartifacts", "stages", "serving"))
    lines = (copy / "audit.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    record["fields"]["status"] = "edited"
    lines[-1] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    (copy / "audit.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report.html"
    result = cli("report", "--request", FIRST, "--workspace", copy, "--out", out, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["audit_ok"] is False
    html = out.read_text()
    assert 'class="banner"' in html and "DOES NOT VERIFY" in html


def test_a_gate_report_the_log_does_not_attest_is_not_shown(env, cli, tmp_path):
    from unlearnops import registry

    version = registry.resolve(f"{env.name}/{env.version}", tracking_uri=f"sqlite:///{env.root / 'mlflow.db'}")
    gate_json = next((env.root / "mlartifacts").glob(f"{version.tags['unlearnops.run_id']}/artifacts/gate/gate.json"))
    original = gate_json.read_bytes()
    try:
        forged = json.loads(original)
        forged["metrics"]["quantized"]["verbmem_f"] = 1.0
        gate_json.write_text(json.dumps(forged))
        result = cli("report", "--request", FIRST, "--out", tmp_path / "report.html", "--json")
    finally:
        gate_json.write_bytes(original)
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["gate_passed"] is None
    assert any("not the one the audit log's gate.decided record attests" in problem for problem in document["problems"])
