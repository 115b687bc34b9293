"""The release gate: each check's pass/fail, the reports it writes, the CLI's exit codes (no models)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from unlearnops.errors import UnlearnopsError
from unlearnops.gate import InheritedRequest, auc_standard_error, evaluate_gate, privleak_noise, to_junit_xml, to_markdown, write_reports
from unlearnops.policy import Policy, accepted_policy

DEFAULT_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "default.yaml"

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


def test_missing_inputs_are_skipped_only_where_the_policy_allows_and_privleak_is_not_by_default():
    report = gate(full_precision=None, source=None, quantized={**GOOD, "privleak": None})
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["utility_ratio"] == statuses["quantization_gap.verbmem_f"] == statuses["quantization_gap.privleak"] == "skipped"
    # A privacy bound that was not measured is not met: by default PrivLeak may not be skipped.
    assert statuses["privleak"] == "failed" and not report.passed
    assert "does not let privleak pass unmeasured" in check(report, "privleak").message()
    assert report.skipped == ["utility_ratio", "quantization_gap.verbmem_f", "quantization_gap.knowmem_f", "quantization_gap.privleak"]
    assert report.unmeasured == ["utility_ratio", "privleak", *report.skipped[1:]]
    # The policy decides: one that lists privleak in may_skip passes it, as skipped, and says so.
    lenient = POLICY.model_copy(update={"may_skip": (*POLICY.may_skip, "privleak")})
    report = gate(full_precision=None, source=None, quantized={**GOOD, "privleak": None}, policy=lenient)
    assert report.passed and check(report, "privleak").status == "skipped"
    assert report.verdict.startswith("PASSED; not measured, skipped by the policy: utility_ratio, privleak")


def test_a_skipped_check_is_visible_in_every_report(tmp_path):
    lenient = POLICY.model_copy(update={"may_skip": ("privleak", "quantization_gap.*")})
    report = gate({**GOOD, "privleak": None}, policy=lenient)
    assert report.passed and report.skipped == ["privleak", "quantization_gap.privleak"]
    paths = write_reports(report, tmp_path / "gate")
    document = json.loads(paths["json"].read_text())
    assert document["decision"] == "passed" and document["skipped"] == ["privleak", "quantization_gap.privleak"]
    assert "skipped by the policy: privleak" in document["verdict"]
    assert paths["markdown"].read_text().startswith("# Release gate: PASSED; not measured, skipped by the policy: privleak")
    assert "| `privleak` | not measured |" in paths["markdown"].read_text()
    suite = ET.parse(paths["junit"]).getroot().find("testsuite")
    assert suite.get("skipped") == "2"
    skipped = next(case for case in suite.findall("testcase") if case.get("name") == "privleak").find("skipped")
    assert skipped.get("message").startswith("not measured: no retrain AUC")


def test_the_default_gate_fails_a_model_that_leaks_membership_and_names_the_side():
    """The issue's model: q.privleak -85.37 (GA+GDR, MUSE's stop rule) fails default.yaml's bound, signed."""
    policy = Policy.from_yaml(DEFAULT_PIPELINE)
    assert policy.max_abs_privleak <= 50
    leaky = {**GOOD, "privleak": -85.37}
    report = gate(leaky, full_precision={**leaky, "privleak": -81.10}, policy=policy)
    privleak = check(report, "privleak")
    assert not report.passed and [c.name for c in report.failures] == ["privleak"]
    assert privleak.measured == -85.37 and privleak.side == "under-unlearning"
    assert privleak.message().startswith("measured -85.37: |-85.37| > max 50, under-unlearning")
    assert "| `privleak` | -85.37 | \\|x\\| <= 50 | failed (under-unlearning) |" in to_markdown(report)
    # Over-unlearning fails too, and says so.
    over = gate({**GOOD, "privleak": 56.0}, full_precision={**GOOD, "privleak": 56.0}, policy=policy)
    assert check(over, "privleak").side == "over-unlearning" and "over-unlearning" in check(over, "privleak").detail
    # Within the bound on either side passes; the side is still reported.
    for value in (-49.0, 49.0):
        inside = gate({**GOOD, "privleak": value}, full_precision={**GOOD, "privleak": value}, policy=policy)
        assert inside.passed and check(inside, "privleak").side == ("under-unlearning" if value < 0 else "over-unlearning")


def test_privleak_quantization_gap_is_the_distance_from_zero_that_4bit_added():
    # Full precision -10, 4-bit -25: quantization put 15 points of membership leak back.
    report = gate({**GOOD, "privleak": -25.0}, full_precision={**FULL_PRECISION, "privleak": -10.0})
    gap = check(report, "quantization_gap.privleak")
    assert gap.status == "failed" and gap.measured == pytest.approx(15.0)
    assert "4-bit minus full precision -15.00" in gap.detail
    # Crossing 0 (+5 -> -5) moves no further from ideal; moving toward 0 is not a loss.
    assert check(gate({**GOOD, "privleak": -5.0}, full_precision={**FULL_PRECISION, "privleak": 5.0}), "quantization_gap.privleak").passed
    assert check(gate({**GOOD, "privleak": 2.0}, full_precision={**FULL_PRECISION, "privleak": -30.0}), "quantization_gap.privleak").measured == -28.0


def test_the_report_shows_privleaks_reference_and_says_when_the_sample_is_too_small():
    measured = {**GOOD, "privleak": 15.9, "auc": 0.742, "retrain_auc": 0.640625, "counts": {"privleak_forget": 16, "privleak_holdout": 16}}
    reference = gate(measured, full_precision=measured).privleak_reference
    assert reference["n_forget"] == reference["n_holdout"] == 16 and not reference["too_small"]
    assert reference["auc_standard_error"] == pytest.approx(0.0987, abs=1e-3)
    assert reference["privleak_noise_95"] == pytest.approx(30.2, abs=0.2)
    assert "0.641 +- 0.099" in reference["message"]
    small = {**measured, "counts": {"privleak_forget": 4, "privleak_holdout": 4}}
    report = gate(small, full_precision=small)
    assert report.privleak_reference["too_small"] and "sample too small for the bound to mean anything" in report.privleak_reference["message"]
    needed = report.privleak_reference["texts_needed"]
    assert privleak_noise(0.640625, needed, needed) < 50 <= privleak_noise(0.640625, needed - 1, needed - 1)
    assert "sample too small" in check(report, "privleak").detail and "## PrivLeak reference" in to_markdown(report)


def test_auc_standard_error_matches_the_exact_null_variance_and_a_simulation():
    # At AUC 0.5 Hanley & McNeil's formula agrees with the Mann-Whitney statistic's exact null variance.
    for n_forget, n_holdout in ((16, 16), (10, 30)):
        exact = math.sqrt((n_forget + n_holdout + 1) / (12 * n_forget * n_holdout))
        assert auc_standard_error(0.5, n_forget, n_holdout) == pytest.approx(exact, rel=0.02)
    # Away from 0.5: the spread of AUCs (the fraction of forget/holdout pairs ranked right) of
    # simulated scores, the holdout shifted so that the AUC is ~0.64 as on the default bench.
    import numpy as np

    rng = np.random.default_rng(0)
    forget, holdout = rng.normal(0, 1, (4000, 16)), rng.normal(0.5, 1, (4000, 16))
    aucs = (holdout[:, None, :] > forget[:, :, None]).mean(axis=(1, 2))
    assert auc_standard_error(float(aucs.mean()), 16, 16) == pytest.approx(float(aucs.std(ddof=1)), rel=0.1)


def test_inherited_requests_are_rechecked_under_the_policy_they_were_accepted_with():
    """Request A tightened max_verbmem_f to 25 when it was accepted; a later run's policy says 30."""
    tightened = POLICY.tightened({"max_verbmem_f": 25})
    record = {"corpus_sha256": "0" * 64, "location": "data/" + "0" * 64, "policy": tightened.model_dump(mode="json")}
    assert accepted_policy(record)[0] == tightened
    on_a = {"verbmem_f": 27.0, "knowmem_f": 10.0}
    report = gate(inherited=[InheritedRequest("req-a", on_a, record=record)])
    verbmem = check(report, "inherited.req-a.verbmem_f")
    assert verbmem.status == "failed" and verbmem.threshold == 25 and "accepted with" in verbmem.detail
    # A record from before policies were recorded: this run's policy, said plainly.
    legacy = check(gate(inherited=[InheritedRequest("req-a", on_a, record={"forget_corpus": "/data/a"})]), "inherited.req-a.verbmem_f")
    assert legacy.status == "passed" and legacy.threshold == 30 and "no policy recorded" in legacy.detail
    # A record edited to loosen a bound never loosens it below this run's policy; an unreadable one neither.
    loosened = {**record, "policy": {**record["policy"], "max_verbmem_f": 90.0}}
    assert check(gate(inherited=[InheritedRequest("req-a", {"verbmem_f": 31.0, "knowmem_f": 1.0}, record=loosened)]), "inherited.req-a.verbmem_f").threshold == 30
    broken = {**record, "policy": {"max_verbmem_f": "lots"}}
    unreadable = check(gate(inherited=[InheritedRequest("req-a", on_a, record=broken)]), "inherited.req-a.verbmem_f")
    assert unreadable.threshold == 30 and "unreadable" in unreadable.detail


def test_may_skip_names_real_checks_and_requests_cannot_widen_it():
    with pytest.raises(Exception, match="did you mean 'privleak'"):
        Policy(may_skip=("privlek",))
    assert Policy(may_skip=("inherited.*",)).may_pass_unmeasured("inherited.req-a.verbmem_f")
    with pytest.raises(UnlearnopsError, match="policy_overrides.may_skip: unknown threshold"):
        POLICY.tightened({"may_skip": 1.0})
    assert POLICY.strictest(Policy(may_skip=())).may_skip == ()


def test_unmeasured_forgetting_fails_and_a_non_number_is_an_error():
    report = gate({"knowmem_f": 1.0, "knowmem_r": 80.0, "privleak": -5.0})
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


def test_cli_gate_prints_signed_values_the_side_and_the_reference(cli, metric_files):
    """The table once printed `privleak 85.37` for a model tagged q.privleak = -85.37."""
    write, policy = metric_files
    leaky = {**GOOD, "privleak": -85.37, "auc": 0.094, "retrain_auc": 0.640625, "counts": {"privleak_forget": 16, "privleak_holdout": 16}}
    result = cli("gate", "--metrics", write("q", leaky), "--fp-metrics", write("fp", {**leaky, "privleak": -81.1}), "--policy", policy)
    assert result.exit_code == 1
    assert "-85.37" in result.stdout and "85.37" not in result.stdout.replace("-85.37", "")
    assert "FAILED (under-unlearning)" in result.stdout
    assert "PrivLeak reference: retrain AUC 0.641 +- 0.099" in result.stdout
    assert "gate: FAILED" in result.stdout
