"""The metric registry: one specification per metric, and every consumer reads it.

The worked example of docs/architecture.md (tests/data/metrics/knowmem_f_em.py) is dropped into
a copy of the package as one module; the evaluator, the policy, the gate and its reports, and
the CLI's table then carry it with no other change. (tests/test_pipeline.py runs it through
`unlearnops run`, to MLflow and the registry.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import package_with_metric
from unlearnops import metrics
from unlearnops.errors import UnlearnopsError
from unlearnops.policy import Policy
from unlearnops.unlearn import UnlearnConfig

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests" / "data" / "metrics" / "knowmem_f_em.py"
EXAMPLE_TEST = EXAMPLE.with_name("test_knowmem_f_em.py")


def test_muses_metrics_are_registered_with_their_gate_and_stop_settings():
    assert list(metrics.METRICS) == ["verbmem_f", "knowmem_f", "knowmem_r", "privleak"]
    assert Policy().model_dump() == {m.bound.threshold: m.bound.default for m in metrics.gated()} | {
        "max_quant_gap": 10.0, "may_skip": ("utility_ratio", "quantization_gap.*"),
    }
    assert [m.key for m in metrics.with_gap()] == ["verbmem_f", "knowmem_f", "privleak"]
    assert [m.key for m in metrics.inherited()] == ["verbmem_f", "knowmem_f"]
    assert metrics.stop_settings() == {"verbmem_f": "stop_verbmem", "knowmem_f": "stop_knowmem", "privleak": "stop_privleak"}
    assert set(metrics.stop_settings().values()) <= set(UnlearnConfig.model_fields)


def test_the_registry_refuses_a_late_or_inconsistent_metric():
    late = metrics.Metric(key="late", label="Late", name="late", description="late", needs=("raw/forget",),
                          compute=lambda run: None, better="lower", reading="lower")
    with pytest.raises(UnlearnopsError, match="after unlearnops.policy read the registry"):
        metrics.register(late)  # the policy's thresholds are built: a new one could not be set
    with pytest.raises(UnlearnopsError, match="stop target needs a per-epoch metric"):
        metrics.spec._check(metrics.Metric(**{**late.__dict__, "better": "higher", "stop_setting": "stop_late"}))
    with pytest.raises(UnlearnopsError, match="threshold 'max_verbmem_f' is another metric's"):
        metrics.spec._check(metrics.Metric(**{**late.__dict__, "bound": metrics.Bound("max_verbmem_f", "max", 1.0, "x")}))
    with pytest.raises(UnlearnopsError, match="did you mean 'verbmem_f'"):
        metrics.get("verbmem")
    with pytest.raises(UnlearnopsError, match="cannot be measured after each epoch"):
        from unlearnops.unlearn import config_from

        config_from({"epoch_metrics": ["privleek"]})


def test_docs_show_the_worked_example_verbatim():
    docs = (REPO / "docs" / "architecture.md").read_text()
    assert EXAMPLE.read_text().strip() in docs and EXAMPLE_TEST.read_text().strip() in docs


def test_the_worked_example_and_its_test_pass_as_one_module_added_to_the_package(tiny_bench, tmp_path):
    package = package_with_metric(tmp_path / "package", EXAMPLE)
    tests = tmp_path / "tests"
    tests.mkdir()
    for source in (REPO / "tests" / "conftest.py", REPO / "tests" / "helpers.py", EXAMPLE_TEST):
        shutil.copy(source, tests / source.name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]),
           "UNLEARNOPS_TEST_BENCH": str(tiny_bench)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                            capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout


EXAMPLE_RUN = """
import json, sys
from pathlib import Path
from unlearnops import metrics
from unlearnops.cli import main
from unlearnops.evaluate import evaluate_model
from unlearnops.gate import InheritedRequest, evaluate_gate, to_markdown
from unlearnops.policy import Policy

bench = Path(sys.argv[1])
quantized = evaluate_model(bench / "target", bench / "corpus", limit=4, show_progress=False)
low = {**quantized, "knowmem_f_em": 0.0}
report = evaluate_gate(quantized, full_precision=low, source=None, policy=Policy(max_knowmem_f_em=10.0),
                       inherited=[InheritedRequest("earlier", {"verbmem_f": 0.0, "knowmem_f": 0.0, "knowmem_f_em": 50.0})])
code = main(["evaluate", "--model", str(bench / "target"), "--corpus", str(bench / "corpus"), "--limit", "2"])
print(json.dumps({
    "registry": list(metrics.METRICS), "defaults": Policy().model_dump(), "value": quantized["knowmem_f_em"],
    "counts": quantized["counts"], "checks": {check.name: check.status for check in report.checks},
    "markdown": to_markdown(report), "cli": code,
}))
"""


def test_a_metric_module_dropped_into_the_package_is_measured_gated_and_shown(tiny_bench, tmp_path):
    package = package_with_metric(tmp_path / "package", EXAMPLE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "400"}
    result = subprocess.run([sys.executable, "-c", EXAMPLE_RUN, str(tiny_bench)], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    found = json.loads(lines[-1])
    assert found["registry"] == ["verbmem_f", "knowmem_f", "knowmem_r", "privleak", "knowmem_f_em"]
    assert found["defaults"]["max_knowmem_f_em"] == 40.0  # the policy has its threshold, with its default
    assert 0 <= found["value"] <= 100 and found["counts"]["knowmem_f_em"] == 4  # the evaluator computed it
    assert found["value"] > 10  # the tiny target memorised its forget answers: the gate below must fail it
    checks = found["checks"]
    assert checks["knowmem_f_em"] == "failed" and checks["quantization_gap.knowmem_f_em"] == "failed"
    assert checks["inherited.earlier.knowmem_f_em"] == "failed" and checks["inherited.earlier.verbmem_f"] == "passed"
    assert "| KnowMem_f EM |" in found["markdown"]
    assert found["cli"] == 0 and any(line.startswith("│ KnowMem forget (exact)") for line in lines)  # the evaluate table shows it
