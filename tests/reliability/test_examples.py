"""Every file in examples/ runs end to end: `unlearnops run` (a real process, pipelines/ci.yaml)
validates it, unlearns, quantizes, evaluates, gates and registers a version for its request.

`files-request.json` lists its forget data as files with QA but no few-shot examples: KnowMem
borrows the retain side's (docs/requests.md), where it used to fail at unlearn on a missing
knowmem/forget_qa_icl.json. The examples' data is the default bench's; the model they name,
`unlearnops-bench@production`, is registered first (`unlearnops register --baseline`) as the
tiny bench's target, the ci pipeline's source, so that both run on the fast settings in any
order (ci.yaml's unlearning settings are tuned for the tiny model: on the default bench's target
they cost too much utility to pass its gate, which would test the tuning, not the examples).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import CI_PIPELINE, child_env, start

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_every_example_runs_end_to_end(tiny_bench, default_bench, tmp_path):
    workspace = tmp_path / "workspace"
    shutil.copytree(tiny_bench, workspace / "bench" / "tiny")
    shutil.copytree(default_bench, workspace / "bench" / "default")
    examples = sorted(EXAMPLES.glob("*.json"))
    assert {path.name for path in examples} >= {"bench-request.json", "files-request.json"}
    baseline = start("register-source", ["register", "--baseline", "--model", str(tiny_bench / "target"), "--name", "unlearnops-bench",
                                         "--json"], env=child_env(workspace), logs=tmp_path / "logs")
    assert baseline.wait() == 0, baseline.err[-3000:]
    for example in examples:
        request_id = json.loads(example.read_text())["request_id"]
        proc = start(example.stem, ["run", "--request", str(example), "--pipeline", str(CI_PIPELINE), "--json"],
                     env=child_env(workspace), logs=tmp_path / "logs")
        assert proc.wait() == 0, f"{example.name}: {proc.out[-2000:]}\n{proc.err[-3000:]}"
        summary = json.loads(proc.out)
        assert summary["passed"] and request_id in summary["version"]["request_ids"], summary.get("failures")
        assert [stage["stage"] for stage in summary["stages"]][-1] == "register"
