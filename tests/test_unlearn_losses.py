"""The unlearning losses against values computed by hand, the registries, and the config."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from unlearnops.errors import UnlearnopsError
from unlearnops.unlearn import UnlearnConfig, config_from
from unlearnops.unlearn import losses
from unlearnops.unlearn.methods import METHODS, REGULARIZERS, Batch, lookup

LN3 = math.log(3.0)


def _two_token_logits() -> torch.Tensor:
    """Batch 1, 3 positions, vocab 2. Position 0: p = (1/4, 3/4); position 1: p = (1/2, 1/2)."""
    return torch.tensor([[[0.0, LN3], [0.0, 0.0], [5.0, 0.0]]])


def test_token_log_probs_by_hand():
    # input 0 -> next tokens 1 then 0: log(3/4), log(1/2); the last position predicts nothing.
    log_probs = losses.token_log_probs(_two_token_logits(), torch.tensor([[0, 1, 0]]))
    assert torch.allclose(log_probs, torch.tensor([[math.log(0.75), math.log(0.5)]]))


def test_nll_and_sequence_log_probs_skip_padding():
    logits, ids = _two_token_logits(), torch.tensor([[0, 1, 0]])
    full = torch.tensor([[1, 1, 1]])
    padded = torch.tensor([[1, 1, 0]])  # the third token is padding: only log(3/4) counts
    assert losses.nll_loss(logits, ids, full).item() == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2)
    assert losses.nll_loss(logits, ids, padded).item() == pytest.approx(-math.log(0.75))
    assert losses.sequence_log_probs(logits, ids, full).item() == pytest.approx(math.log(0.75) + math.log(0.5))
    assert losses.sequence_log_probs(logits, ids, padded).item() == pytest.approx(math.log(0.75))
    assert losses.gradient_ascent_loss(logits, ids, padded).item() == pytest.approx(math.log(0.75))


def test_npo_by_hand():
    # Same likelihood as the reference: -(2/beta) * log(sigmoid(0)) = (2/beta) * log 2.
    same = losses.npo_loss(torch.tensor([-3.0, -7.0]), torch.tensor([-3.0, -7.0]), beta=0.1)
    assert same.item() == pytest.approx(20 * math.log(2))
    # log-ratio -1 and +2 at beta 0.5: -(4) * mean(logsigmoid(0.5), logsigmoid(-1)).
    value = losses.npo_loss(torch.tensor([-4.0, -1.0]), torch.tensor([-3.0, -3.0]), beta=0.5)
    expected = -4 * (math.log(1 / (1 + math.exp(-0.5))) + math.log(1 / (1 + math.exp(1.0)))) / 2
    assert value.item() == pytest.approx(expected)
    # Forgetting more (lower likelihood than the reference) lowers the loss.
    assert losses.npo_loss(torch.tensor([-10.0]), torch.tensor([-3.0]), 0.1) < losses.npo_loss(torch.tensor([-3.0]), torch.tensor([-3.0]), 0.1)


def test_kl_is_reference_to_current_per_token_and_masked():
    # Reference p = (1/2, 1/2) everywhere; current q = (1/4, 3/4) at position 0, = p at position 1.
    current = torch.tensor([[[0.0, LN3], [0.0, 0.0]]])
    reference = torch.zeros(1, 2, 2)
    kl_p_q = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_q_p = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    both = losses.kl_to_reference(current, reference, torch.tensor([[1, 1]]))
    assert both.item() == pytest.approx(kl_p_q / 2)
    assert both.item() != pytest.approx(kl_q_p / 2)  # the other direction would be a different number
    first_only = losses.kl_to_reference(current, reference, torch.tensor([[1, 0]]))
    assert first_only.item() == pytest.approx(kl_p_q)
    assert losses.kl_to_reference(reference, reference, torch.tensor([[1, 1]])).item() == pytest.approx(0.0)


def test_registries_name_every_method_and_regularizer():
    assert set(METHODS) == {"ga", "npo"}
    assert set(REGULARIZERS) == {"none", "gdr", "klr"}
    assert METHODS["npo"].uses_reference and REGULARIZERS["klr"].uses_reference
    assert not METHODS["ga"].uses_reference and not REGULARIZERS["gdr"].uses_reference


def test_registry_losses_on_a_batch():
    logits, ids = _two_token_logits(), torch.tensor([[0, 1, 0]])
    batch = Batch(ids, torch.tensor([[1, 1, 1]]))
    config = UnlearnConfig(npo_beta=0.1)
    assert METHODS["ga"].fn(logits, batch, None, config).item() == pytest.approx((math.log(0.75) + math.log(0.5)) / 2)
    assert METHODS["npo"].fn(logits, batch, lambda: logits, config).item() == pytest.approx(20 * math.log(2))
    assert REGULARIZERS["klr"].fn(logits, batch, lambda: logits, config).item() == pytest.approx(0.0)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnlearnopsError, match="did you mean 'npo'"):
        lookup(METHODS, "nop", what="method")
    with pytest.raises(UnlearnopsError, match="did you mean 'klr'"):
        UnlearnConfig(regularizer="kl")
    with pytest.raises(UnlearnopsError, match="did you mean 'ga'"):
        config_from({"method": "gaa"})


@pytest.mark.parametrize(
    "settings, field",
    [({"lr": 0}, "lr"), ({"lr": -1e-4}, "lr"), ({"mode": "fulll"}, "mode"), ({"epochs": 0}, "epochs"), ({"learning_rate": 1e-3}, "learning_rate")],
)
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(UnlearnopsError, match=f"field '{field}'"):
        config_from(settings)


def test_yaml_and_python_build_the_same_config():
    text = "method: npo\nregularizer: klr\nmode: full\nlr: 1.0e-5\nepochs: 10\nnpo_beta: 0.1\nreg_weight: 1\n"
    from_yaml = config_from(yaml.safe_load(text))
    from_python = UnlearnConfig(method="npo", regularizer="klr", mode="full", lr=1e-5, epochs=10, npo_beta=0.1, reg_weight=1.0)
    assert from_yaml == from_python
    assert from_yaml.learning_rate == 1e-5


def test_default_learning_rate_follows_the_mode():
    assert UnlearnConfig().learning_rate == 5e-4
    assert UnlearnConfig(mode="full").learning_rate == 3e-4
    assert not UnlearnConfig(regularizer="none").uses_retain
