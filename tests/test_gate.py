"""The release gate: each check's pass/fail, the reports it writes, the CLI's exit codes (no models)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from unlearnops.errors import UnlearnopsError
from unlearnops.gate import InheritedRequest, evaluate_gate, to_junit_xml, to_markdown, write_reports
from unlearnops.policy import Policy

POLICY = Policy(max_verbmem_f=30, max_knowmem_f=45, min_utility_ratio=0.8, max_abs_privleak=50, max_quant_gap=10)
SOURCE = {"verbmem_f": 98.0, "knowmem_f": 100.0, "knowmem_r": 90.0, "privleak": -99.0}
FULL_PRECISION = {"verbmem_f": 20.0, "knowmem_f": 30.0, "knowmem_r": 85.0, "privleak": -10.0}
GOOD = {"verbmem_f": 25.0, "knowmem_f": 35.0, "knowmem_r": 80.0, "privleak": -20.0}


def gate(quantized=GOOD, **kwargs):
    kwargs.setdefault("full_precision", FULL_PRECISION)
    kwargs.setdefault("source", SOURCE)
    kwargs.setdefault("policy", POLICY)
    return evaluate_gate(quantized, **kwargs)


def check(report, name):
    return next(c for c in report.checks if c.name == name)


def test_all_checks_pass_on_a_good_quantized_model():
    report = gate()
    assert report.passed and report.decision == "passed"
    assert [c.name for c in report.checks] == [
        "verbmem_f", "knowmem_f", "utility_ratio", "privleak", "quantization_gap.verbmem_f", "quantization_gap.knowmem_f",
        "quantization_gap.privleak",
    ]
    assert all(c.status == "passed" for c in report.checks)
    assert check(report, "utility_ratio").measured == pytest.approx(80 / 90)


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"verbmem_f": 30.5}, "verbmem_f"),
        ({"knowmem_f": 46.0}, "knowmem_f"),
        ({"knowmem_r": 71.0}, "utility_ratio"),  # 71 / 90 = 0.79 < 0.8
        ({"privleak": -51.0}, "privleak"),  # the bound is on |PrivLeak|: negative leaks count
        ({"privleak": 51.0}, "privleak"),
    ],
)
def test_each_threshold_fails_alone(change, failing):
    quantized = {**GOOD, **change}
    report = gate(quantized, full_precision={**quantized})  # no quantization gap
    assert not report.passed
    assert [c.name for c in report.failures] == [failing]


def test_boundary_values_pass():
    at_bounds = {"verbmem_f": 30.0, "knowmem_f": 45.0, "knowmem_r": 72.0, "privleak": 50.0}
    assert gate(at_bounds, full_precision=at_bounds).passed


def test_quantization_gap_fails_when_4bit_recovers_the_forgotten_text():
    """Full precision forgot (VerbMem_f 5), the quantized model remembers again (29, under the max)."""
    report = gate({**GOOD, "verbmem_f": 29.0}, full_precision={**FULL_PRECISION, "verbmem_f": 5.0})
    gap = check(report, "quantization_gap.verbmem_f")
    assert gap.status == "failed" and gap.measured == pytest.approx(24.0)
    assert "quantization" in gap.detail and "29.00" in gap.detail
    assert check(report, "verbmem_f").status == "passed"
    assert not report.passed
    assert "quantization_gap.verbmem_f" in to_junit_xml(report)


def test_missing_inputs_are_skipped_not_passed_silently():
    report = gate(full_precision=None, source=None, quantized={**GOOD, "privleak": None})
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["utility_ratio"] == statuses["privleak"] == statuses["quantization_gap.verbmem_f"] == "skipped"
    assert report.passed


def test_unmeasured_forgetting_fails_and_a_non_number_is_an_error():
    report = gate({"knowmem_f": 1.0, "knowmem_r": 80.0})
    assert [c.name for c in report.failures] == ["verbmem_f"]
    assert "verbmem/forget.json" in report.failures[0].message()
    with pytest.raises(UnlearnopsError, match="finite"):
        gate({**GOOD, "verbmem_f": float("nan")})


def test_inherited_requests_are_rechecked_and_an_unmeasured_one_fails():
    inherited = [
        InheritedRequest("req-a", {"verbmem_f": 10.0, "knowmem_f": 60.0}),
        InheritedRequest("req-b", None, "forget corpus /x of request req-b is gone"),
    ]
    report = gate(inherited=inherited)
    assert {c.name: c.status for c in report.checks if c.name.startswith("inherited.")} == {
        "inherited.req-a.verbmem_f": "passed",
        "inherited.req-a.knowmem_f": "failed",
        "inherited.req-b.verbmem_f": "failed",
        "inherited.req-b.knowmem_f": "failed",
    }
    assert "gone" in check(report, "inherited.req-b.verbmem_f").message()


def test_junit_xml_has_one_testcase_per_check_with_measured_vs_threshold():
    report = gate({**GOOD, "verbmem_f": 41.2}, full_precision={**FULL_PRECISION, "verbmem_f": 40.0})
    root = ET.fromstring(to_junit_xml(report).split("\n", 1)[1])
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(report.checks) and suite.get("failures") == "1"
    failure = next(case for case in cases if case.get("name") == "verbmem_f").find("failure")
    assert failure.get("message") == "measured 41.2 > max 30 (VerbMem on the forget set, quantized)"
    assert next(case for case in cases if case.get("name") == "knowmem_f").find("failure") is None


def test_markdown_names_every_check_and_the_decision():
    report = gate({**GOOD, "knowmem_f": 50.0})
    markdown = to_markdown(report)
    assert markdown.startswith("# Release gate: FAILED")
    assert "| `knowmem_f` | 50 | <= 45 | failed |" in markdown
    assert "| VerbMem_f | 98.00 | 20.00 | 25.00 |" in markdown


def test_write_reports_writes_json_markdown_junit_and_a_png(tmp_path):
    paths = write_reports(gate(), tmp_path / "gate")
    assert json.loads(paths["json"].read_text())["decision"] == "passed"
    assert paths["markdown"].read_text().startswith("# Release gate: PASSED")
    ET.parse(paths["junit"])
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def metric_files(tmp_path):
    def write(name, document):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        return path

    policy = tmp_path / "policy.yaml"
    policy.write_text("gate:\n  max_verbmem_f: 30\n  max_knowmem_f: 45\n  min_utility_ratio: 0.8\n  max_abs_privleak: 50\n  max_quant_gap: 10\n")
    return write, policy


def test_cli_gate_exit_0_on_pass_and_writes_junit(cli, metric_files, tmp_path):
    write, policy = metric_files
    junit = tmp_path / "ci" / "gate.xml"
    result = cli(
        "gate", "--metrics", write("q", GOOD), "--fp-metrics", write("fp", FULL_PRECISION),
        "--source-metrics", write("src", SOURCE), "--policy", policy, "--junit", junit, "--out", tmp_path / "report",
    )
    assert result.exit_code == 0, result.stderr
    assert "quantization_gap.verbmem_f" in result.stdout and "passed" in result.stdout
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    assert (tmp_path / "report" / "gate.png").is_file()


def test_cli_gate_exit_1_on_fail_with_json(cli, metric_files):
    write, policy = metric_files
    result = cli(
        "gate", "--metrics", write("q", {**GOOD, "verbmem_f": 29.0}), "--fp-metrics", write("fp", {**FULL_PRECISION, "verbmem_f": 1.0}),
        "--policy", policy, "--json",
    )
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["decision"] == "failed"
    assert [c["name"] for c in document["checks"] if c["status"] == "failed"] == ["quantization_gap.verbmem_f"]


def test_cli_gate_usage_errors(cli, metric_files):
    write, policy = metric_files
    assert cli("gate", "--policy", policy).exit_code == 2  # neither --model nor --metrics
    bad = policy.with_name("bad.yaml")
    bad.write_text("gate:\n  max_verbmem_f: -1\n")
    result = cli("gate", "--metrics", write("q", GOOD), "--policy", bad)
    assert result.exit_code == 1 and "max_verbmem_f" in result.stderr
