"""Forget losses (methods) and retain losses (regularisers), looked up by name.

Adding one is one function and one decorator line. Each loss gets the trained model's logits
on its batch, a zero-argument `reference` that returns the frozen reference model's logits
(the model before unlearning) on the same batch, and the run's settings (an UnlearnConfig;
typed here as the `LossSettings` it reads, so that data flows one way: the config validates
its names against these registries, this module never imports the config). `reference` is only
called, and in full fine-tuning the frozen copy only kept, by losses registered with
`uses_reference=True`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import UnlearnopsError, did_you_mean
from . import losses

if TYPE_CHECKING:
    import torch


class LossSettings(Protocol):
    """What the losses read of an UnlearnConfig."""

    npo_beta: float


LossFn = Callable[["torch.Tensor", "Batch", Callable[[], "torch.Tensor"], LossSettings], "torch.Tensor"]


@dataclass(frozen=True)
class Batch:
    input_ids: "torch.Tensor"
    attention_mask: "torch.Tensor"


@dataclass(frozen=True)
class Loss:
    fn: LossFn
    uses_reference: bool
    variant: str  # recorded in train.json: which formula, so runs are comparable across tools


METHODS: dict[str, Loss] = {}
# "none" means no retain loss and no retain data; every other regulariser trains on the retain split.
REGULARIZERS: dict[str, Loss | None] = {"none": None}


def _register(registry: dict, name: str, *, uses_reference: bool = False, variant: str) -> Callable[[LossFn], LossFn]:
    def add(fn: LossFn) -> LossFn:
        registry[name] = Loss(fn=fn, uses_reference=uses_reference, variant=variant)
        return fn

    return add


# ---- methods: losses on forget batches ---------------------------------------------------------
@_register(METHODS, "ga", variant="gradient ascent: minimise -NLL(forget), mean over tokens")
def gradient_ascent(logits, batch, reference, config):
    return losses.gradient_ascent_loss(logits, batch.input_ids, batch.attention_mask)


@_register(METHODS, "npo", uses_reference=True, variant="NPO, paper form: sequence log-likelihoods vs frozen reference")
def negative_preference(logits, batch, reference, config):
    current = losses.sequence_log_probs(logits, batch.input_ids, batch.attention_mask)
    before = losses.sequence_log_probs(reference(), batch.input_ids, batch.attention_mask)
    return losses.npo_loss(current, before, config.npo_beta)


# ---- regularisers: losses on retain batches ----------------------------------------------------
@_register(REGULARIZERS, "gdr", variant="gradient descent on retain: NLL(retain), mean over tokens")
def gradient_descent_retain(logits, batch, reference, config):
    return losses.nll_loss(logits, batch.input_ids, batch.attention_mask)


@_register(REGULARIZERS, "klr", uses_reference=True, variant="KL(p_ref || p_theta) per token on retain, log-softmaxed")
def kl_retain(logits, batch, reference, config):
    return losses.kl_to_reference(logits, reference(), batch.attention_mask)


def lookup(registry: dict, name: str, *, what: str):
    """The registry entry for `name`, or a clear error that lists the choices and a close match."""
    if name in registry:
        return registry[name]
    raise UnlearnopsError(f"{what}: unknown name '{name}'; {did_you_mean(name, registry)}choose one of {', '.join(sorted(registry))}")
