"""The learning-rate calibration at the start of unlearning (unlearn/calibration.py), on the tiny bench."""

from __future__ import annotations

import pytest

from unlearnops.fileio import sha256_tree
from unlearnops.unlearn import UnlearnConfig, unlearn

pytestmark = pytest.mark.slow
QUICK = {"max_steps": 3, "eval_limit": 0, "batch_size": 4}


def test_a_configured_lr_that_forgets_fast_enough_is_kept_and_the_run_is_unchanged(tiny_bench, tmp_path):
    calibrated = unlearn(tiny_bench / "target", tiny_bench / "corpus", tmp_path / "on", UnlearnConfig(**QUICK), show_progress=False)
    plain = unlearn(tiny_bench / "target", tiny_bench / "corpus", tmp_path / "off", UnlearnConfig(**QUICK, lr_calibration=False), show_progress=False)
    probes = calibrated["resolved"]["lr_calibration"]
    assert probes["chosen_lr"] == probes["configured_lr"] == 5e-4 and len(probes["probes"]) == 1 and probes["met"]
    assert probes["probes"][0]["forget_loss_rise"] >= probes["rise_needed"] > 0
    # the probes ran on their own batches and everything was restored: bit-identical weights and losses
    assert sha256_tree(tmp_path / "on" / "model") == sha256_tree(tmp_path / "off" / "model")
    assert calibrated["epochs"][0]["loss"] == plain["epochs"][0]["loss"]
    assert "lr_calibration" not in plain["resolved"] and plain["resolved"]["lr"] == 5e-4


def test_a_learning_rate_too_small_to_move_the_model_is_raised_until_the_forget_loss_moves(tiny_bench, tmp_path):
    record = unlearn(tiny_bench / "target", tiny_bench / "corpus", tmp_path / "out", UnlearnConfig(**QUICK, lr=1e-6), show_progress=False)
    calibration = record["resolved"]["lr_calibration"]
    lrs = [probe["lr"] for probe in calibration["probes"]]
    assert lrs[0] == 1e-6 and all(later == pytest.approx(earlier * 2) for earlier, later in zip(lrs, lrs[1:]))
    assert calibration["probes"][0]["forget_loss_rise"] < calibration["rise_needed"]
    assert record["resolved"]["lr"] == calibration["chosen_lr"] == lrs[-1] > 1e-6
    assert calibration["met"] == (calibration["probes"][-1]["forget_loss_rise"] >= calibration["rise_needed"])
    assert calibration["gap_to_unseen"] > 0  # measured against the bench's never-seen holdout texts
