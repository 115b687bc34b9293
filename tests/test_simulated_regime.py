"""The large-model regime, simulated (unlearnops/rounding_cells.py): full precision forgets while
the RTN 4-bit model stays the source's bit for bit. The gate must fail it and name the
quantization gap; `stop_on: quantized` must measure the model that ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnops.unlearn import UnlearnConfig

CI_POLICY = Path(__file__).resolve().parents[1] / "pipelines" / "ci.yaml"
# Full fine-tuning inside the cells; the tiny bench has 10 forget sequences: 5 steps per epoch.
SIMULATED = dict(method="ga", regularizer="gdr", mode="full", lr=1e-3, reg_weight=1.0, batch_size=2, simulate_rounding_cells=128)
CI_TARGETS = dict(stop_verbmem=60.0, stop_knowmem=50.0, eval_limit=8)  # ci.yaml's gate bounds


def _rtn(model_dir: Path, out: Path) -> Path:
    from unlearnops.quantize import quantize

    quantize(model_dir, "rtn-w4a16", out, show_progress=False)
    return out


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


@pytest.fixture(scope="module")
def simulated(tiny_bench, tmp_path_factory) -> Path:
    """The target unlearned inside its RTN cells (eval off, fixed epochs)."""
    from unlearnops.unlearn import unlearn

    out = tmp_path_factory.mktemp("simulated") / "run"
    unlearn(tiny_bench / "target", tiny_bench / "corpus", out, UnlearnConfig(**SIMULATED, epochs=4, eval_limit=0), show_progress=False)
    return out


@pytest.mark.slow
def test_gate_fails_a_model_whose_forgetting_rounding_erased(simulated, tiny_bench, tmp_path, cli):
    source, corpus = tiny_bench / "target", tiny_bench / "corpus"
    source_rtn, unlearned_rtn = _rtn(source, tmp_path / "source-rtn"), _rtn(simulated / "model", tmp_path / "unlearned-rtn")
    before, after = _tensors(source_rtn), _tensors(unlearned_rtn)
    assert before.keys() == after.keys() and any(key.endswith("weight_packed") for key in before)
    assert all(torch.equal(before[key], after[key]) for key in before)  # packed weights, scales, zero points
    assert not torch.equal(_tensors(source)["model.layers.0.mlp.up_proj.weight"], _tensors(simulated / "model")["model.layers.0.mlp.up_proj.weight"])

    result = cli("gate", "--model", unlearned_rtn, "--corpus", corpus, "--policy", CI_POLICY, "--fp-model", simulated / "model", "--source-model", source, "--json")
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    fp, quantized = report["metrics"]["full_precision"], report["metrics"]["quantized"]
    assert fp["verbmem_f"] <= 60 and fp["knowmem_f"] <= 50  # full precision forgot (ci.yaml's bounds)
    status = {check["name"]: check["status"] for check in report["checks"]}
    assert status["quantization_gap.verbmem_f"] == "failed"
    assert status["verbmem_f"] == "failed"
    assert quantized["verbmem_f"] - fp["verbmem_f"] > 25


@pytest.mark.slow
def test_stop_on_quantized_measures_the_model_that_ships(simulated, tiny_bench, tmp_path):
    from unlearnops.unlearn import unlearn

    corpus = tiny_bench / "corpus"
    # Still inside the cells: full precision already meets the targets, so plain stopping
    # declares success at epoch 1; measuring the 4-bit model, the target is never met.
    plain = unlearn(simulated / "model", corpus, tmp_path / "plain", UnlearnConfig(**SIMULATED, epochs=2, **CI_TARGETS), show_progress=False)
    assert plain["chosen_epoch"] == 1 and plain["target_met"] is True
    assert plain["stopping"]["measured_on"] == "full-precision"
    stuck = unlearn(simulated / "model", corpus, tmp_path / "stuck", UnlearnConfig(**SIMULATED, epochs=2, stop_on="quantized", **CI_TARGETS), show_progress=False)
    assert stuck["target_met"] is False and stuck["chosen_epoch"] == 2
    assert stuck["stopping"]["measured_on"] == "quantized (rtn-w4a16, group 128)"
    assert stuck["epochs"][-1]["metrics"]["verbmem_f"] > 60
    # Without the clamp (the knife edge), training continues until the 4-bit model forgets.
    free = {**SIMULATED, "simulate_rounding_cells": None, "lr": 1e-4}
    recovered = unlearn(simulated / "model", corpus, tmp_path / "free", UnlearnConfig(**free, epochs=4, stop_on="quantized", **CI_TARGETS), show_progress=False)
    assert recovered["target_met"] is True
    assert recovered["epochs"][-1]["metrics"]["verbmem_f"] <= 60


@pytest.mark.slow
def test_in_memory_rtn_equals_llm_compressors(tiny_bench, tmp_path):
    from unlearnops.corpus import Corpus
    from unlearnops.modeling import load_causal_lm
    from unlearnops.unlearn.quantized_copy import quantized_copy

    source = load_causal_lm(tiny_bench / "target")
    in_memory, _ = quantized_copy(source.model, source.tokenizer, Corpus.load(tiny_bench / "corpus"), "rtn-w4a16", 128)
    written = load_causal_lm(_rtn(tiny_bench / "target", tmp_path / "rtn")).model.state_dict()
    for name, tensor in in_memory.state_dict().items():
        assert torch.equal(tensor, written[name].to(tensor.dtype)), name
    assert not torch.equal(in_memory.model.layers[0].mlp.up_proj.weight, source.model.model.layers[0].mlp.up_proj.weight)


def test_simulation_refuses_lora(cli, tiny_bench, tmp_path):
    result = cli("unlearn", "--model", tiny_bench / "target", "--corpus", tiny_bench / "corpus", "--out", tmp_path / "out", "--simulate-rounding-cells", "128")
    assert result.exit_code == 1
    assert "simulate_rounding_cells" in result.stderr and "--mode full" in result.stderr
    assert not (tmp_path / "out").exists()
