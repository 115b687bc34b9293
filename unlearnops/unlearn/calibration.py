"""Learning-rate calibration at the start of an unlearning run (`lr_calibration`, on by default).

Why: the engine's learning rates were measured on the 1.1M-parameter bench, where the target
learnt at 3e-3 and a few hundred steps of LoRA at 5e-4 forget. A real pretrained model fine-tuned
on a handful of texts gets only a few optimizer steps per epoch and moves far less per step: the
same settings ran 8 epochs on SmolLM2-135M without forgetting (TINY-SCALE-FINDINGS). Instead of
one learning rate per model size, the run measures how fast *this* model forgets.

How: from the starting weights, a few probe steps of the run's forget loss (GA or NPO) on a
fixed forget batch at the configured learning rate; if, at that pace (rise per step x the run's
steps per epoch), an epoch would not close at least `EPOCH_FRACTION` of the gap between the forget
texts' loss and never-seen texts' loss (privleak holdout; else 1 nat), the weights and optimizer
are restored and the next learning rate (x `FACTOR`) is probed, up to `MAX_FACTOR` x the
configured one. The first learning rate that
moves the forget loss enough is kept; if none does, the largest probed. A model that already
forgets fast enough at the configured learning rate keeps it, and since the probes use their own
batches and the weights and optimizer are restored, its run is then identical to one without
calibration. The probes are recorded in train.json (`resolved.lr_calibration`). Not run under
`simulate_rounding_cells`, which imposes a regime at its own learning rate.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from . import losses
from .data import Sequences, chunk_stream
from .methods import Batch

PROBE_STEPS = 4  # optimizer steps per probed learning rate
# Of the forget -> never-seen loss gap, closed per EPOCH at the probed pace (rise per probe step x
# steps per epoch): the stopping rule and the cap count epochs, and a small forget set has few steps each.
EPOCH_FRACTION = 0.08
# Between probed learning rates. Not 4: on SmolLM2-135M the forget loss rose 0.72 nats in 4 GA steps
# at 5e-4 and 17 (the model broken, retain loss +17) at 2e-3; doubling steps through that cliff.
FACTOR = 2.0
MAX_FACTOR = 64.0  # the largest probed learning rate, relative to the configured one
FALLBACK_GAP = 1.0  # nats, when the corpus has no never-seen texts to measure the gap against


def calibrate(run: Any, forget: Sequences, retain: Sequences | None, train_step) -> dict:
    """Choose the learning rate (set on run.optimizer) and return the record of the probes."""
    config = run.config
    device = run.accelerator.device
    forget_probe = _first_rows(forget, config.batch_size, device)
    retain_probe = _first_rows(retain, config.batch_size, device) if retain is not None else None
    start = _nll(run.model, forget_probe)
    holdout = _holdout_rows(run, config, device)
    gap = (_nll(run.model, holdout) - start) if holdout is not None else None
    steps_per_epoch = max(1, len(run.forget_loader))
    needed = EPOCH_FRACTION * (gap if gap is not None and gap > 0 else FALLBACK_GAP) * PROBE_STEPS / steps_per_epoch
    snapshot = _snapshot(run)
    probes, chosen = [], None
    lr = config.learning_rate
    while lr <= config.learning_rate * MAX_FACTOR * (1 + 1e-9):
        rise, retain_change = _probe(run, lr, forget_probe, retain_probe, start, train_step)
        _restore(run, snapshot)
        probes.append({"lr": lr, "forget_loss_rise": round(rise, 4), "retain_loss_change": None if retain_change is None else round(retain_change, 4)})
        if rise >= needed:
            chosen = lr
            break
        lr *= FACTOR
    chosen = _agree(run, chosen if chosen is not None else probes[-1]["lr"])
    _set_lr(run.optimizer, chosen)
    return {
        "configured_lr": config.learning_rate, "chosen_lr": chosen, "met": any(p["lr"] == chosen and p["forget_loss_rise"] >= needed for p in probes),
        "forget_loss_start": round(start, 4), "gap_to_unseen": None if gap is None else round(gap, 4), "rise_needed": round(needed, 4),
        "probe_steps": PROBE_STEPS, "steps_per_epoch": steps_per_epoch, "probes": probes,
    }


def _probe(run, lr: float, forget: Batch, retain: Batch | None, start: float, train_step) -> tuple[float, float | None]:
    """PROBE_STEPS steps at `lr` on the fixed probe batches; (forget loss rise, retain loss change)."""
    _set_lr(run.optimizer, lr)
    retain_start = _nll(run.model, retain) if retain is not None else None
    for _ in range(PROBE_STEPS):
        # The forget loss alone: with GDR's weight 8 the retain term dominates the first steps and
        # hides how fast the model can move (measured on the bench: GA+GDR's forget loss is flat
        # for 4 steps at the lr that forgets it within 20 epochs, GA alone rises by 0.3 nats).
        train_step(run, forget, None)
    rise = _nll(run.model, forget) - start
    return rise, (_nll(run.model, retain) - retain_start) if retain is not None else None


def _nll(model, batch: Batch) -> float:
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        return float(losses.nll_loss(logits, batch.input_ids, batch.attention_mask))


def _first_rows(sequences: Sequences, rows: int, device) -> Batch:
    return Batch(sequences.input_ids[:rows].to(device), sequences.attention_mask[:rows].to(device))


def _holdout_rows(run, config, device) -> Batch | None:
    """Never-trained texts (privleak/holdout) as training-shaped rows: the loss level of unseen text."""
    texts = run.corpus.privleak.get("holdout") or []
    if not texts:
        return None
    return _first_rows(chunk_stream(texts, run.tokenizer, config.seq_len), config.batch_size, device)


def _snapshot(run) -> dict:
    trainable = {name: p.detach().clone() for name, p in run.model.named_parameters() if p.requires_grad}
    return {"params": trainable, "optimizer": copy.deepcopy(run.optimizer.state_dict())}


def _restore(run, snapshot: dict) -> None:
    with torch.no_grad():
        for name, p in run.model.named_parameters():
            if name in snapshot["params"]:
                p.copy_(snapshot["params"][name])
    run.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))
    run.optimizer.zero_grad(set_to_none=True)


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _agree(run, lr: float) -> float:
    """Every data-parallel process trains with the main process's choice."""
    if run.accelerator.num_processes == 1:
        return lr
    from accelerate.utils import broadcast_object_list

    chosen = [lr]
    broadcast_object_list(chosen)
    return chosen[0]
