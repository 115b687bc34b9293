"""Pure loss functions on tensors: no model, no data loading, each checked by hand in the tests.

Shapes: `logits` (batch, time, vocab); `input_ids` and `attention_mask` (batch, time). Token t
predicts token t+1, so every language-model loss compares logits[:, :-1] with input_ids[:, 1:]
and counts a position only where both tokens are real (attention_mask 1 at t and t+1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_log_probs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_{t+1} | x_{<=t}) for every position: shape (batch, time - 1)."""
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def target_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """1 where a next-token prediction is scored: the token and its successor are both real."""
    return (attention_mask[:, :-1] * attention_mask[:, 1:]).float()


def sequence_log_probs(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """log p(y) of each whole sequence (sum over its scored tokens): shape (batch,)."""
    return (token_log_probs(logits, input_ids) * target_mask(attention_mask)).sum(-1)


def nll_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per scored token (the usual language-model loss)."""
    mask = target_mask(attention_mask)
    return -(token_log_probs(logits, input_ids) * mask).sum() / mask.sum().clamp(min=1)


def gradient_ascent_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """GA: minimising -NLL pushes the forget set's likelihood down."""
    return -nll_loss(logits, input_ids, attention_mask)


def npo_loss(sequence_logp: torch.Tensor, reference_sequence_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO, the paper's sequence-level form (Zhang et al. 2024):

    -(2 / beta) * mean( logsigmoid( -beta * (log p_theta(y) - log p_ref(y)) ) )

    At the start (theta = ref) it equals (2 / beta) * log 2; it falls as p_theta(y) drops below
    p_ref(y), and saturates instead of diverging like GA.
    """
    log_ratio = sequence_logp - reference_sequence_logp
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def kl_to_reference(logits: torch.Tensor, reference_logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_theta) per token, summed over the vocabulary, averaged over real tokens.

    F.kl_div(input, target) computes sum target * (log target - input), i.e. KL(target || input):
    input is the current model's log-probabilities, target the reference's (both log-softmaxed,
    log_target=True). Raw logits would not give a KL (MUSE's code passes them; we do not).
    """
    log_q = F.log_softmax(logits.float(), dim=-1)
    log_p = F.log_softmax(reference_logits.float(), dim=-1)
    per_token = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
    mask = attention_mask.float()
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
