"""The unlearning loop: LoRA or full fine-tuning, per-epoch evaluation, early stop, merge, save.

One code path for one process and many: accelerate's Accelerator prepares the model, optimizer
and data loaders, so `torchrun --nproc-per-node N` / `accelerate launch` data-parallelise the
same loop. Only the main process evaluates (its stop decision is broadcast) and writes OUT.
"""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from .. import metrics as metrics_registry
from .. import progress
from ..corpus import Corpus
from ..errors import UnlearnopsError
from ..fileio import atomic_dir, check_dir_target, write_json
from ..modeling import check_model_dir, load_causal_lm
from ..versions import library_versions
from .config import UnlearnConfig
from .data import Sequences, chunk_stream, missing_qa, split_texts
from .methods import METHODS, REGULARIZERS, Batch, lookup


Reference = Callable[[Batch], torch.Tensor]


def unlearn(
    model_dir: Path | str, corpus_dir: Path | str, out: Path | str, config: UnlearnConfig | None = None, *, show_progress: bool = True
) -> dict:
    """Unlearn the corpus's forget split from the model; write OUT/{adapter,model,train.json}.

    Returns the train.json document. Raises UnlearnopsError for bad input before any training.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    started = time.perf_counter()
    config = config or UnlearnConfig()
    model_dir, corpus_dir, out = Path(model_dir), Path(corpus_dir), Path(out)
    corpus = check_inputs(model_dir, corpus_dir, out, config)
    config = with_group_sizes(model_dir, config)
    targets = stop_targets(config, corpus_dir)
    leak_reference = privleak_reference(corpus_dir)
    unmeasurable = _drop_unmeasurable(targets, leak_reference)
    metrics = epoch_metrics(corpus, config, targets, leak_reference)

    # cpu=True on a machine without CUDA makes torchrun's processes one gloo process group.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    loaded = load_causal_lm(model_dir)
    tokenizer = loaded.tokenizer
    forget = chunk_stream(split_texts(corpus, "forget", include_qa=config.include_qa), tokenizer, config.seq_len)
    retain = chunk_stream(split_texts(corpus, "retain", include_qa=config.include_qa), tokenizer, config.seq_len) if config.uses_retain else None

    model, reference_logits = build_model(loaded.model, config, device=accelerator.device)
    projector = rounding_cells(model, config)  # before the optimizer: it freezes unquantized params
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay)
    forget_loader = _loader(forget, config, offset=0)
    retain_loader = _loader(retain, config, offset=1) if retain is not None else None
    prepared = accelerator.prepare(model, optimizer, forget_loader, *([retain_loader] if retain_loader else []))
    ddp_model, optimizer, forget_loader = prepared[:3]
    retain_batches = _cycle(prepared[3]) if retain_loader else None

    run = Training(accelerator, ddp_model, model, optimizer, forget_loader, retain_batches, reference_logits, tokenizer, corpus, config, targets, metrics,
                   projector, retrain_auc=leak_reference["auc"])
    # The simulation imposes a regime at its own lr: nothing to calibrate there.
    calibration = _calibrate(run, forget, retain, show_progress) if config.lr_calibration and projector is None else None
    history, stop = run_epochs(run, show_progress)
    record = _record(model_dir, corpus_dir, out, config, model, accelerator, targets, metrics, history, stop)
    if calibration is not None:
        record["resolved"].update(lr=calibration["chosen_lr"], lr_calibration=calibration)
    record["stopping"]["privleak_reference"] = leak_reference
    if unmeasurable:
        record["stopping"]["unmeasurable_targets"] = unmeasurable
    if projector is not None:
        record["resolved"]["rounding_cells"] = {"group_size": config.simulate_rounding_cells, "pinned_fraction": round(projector.pinned_fraction(), 4)}
    record["data"] = _data_summary(corpus, config, forget, retain)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record["wall_seconds"] = round(time.perf_counter() - started, 2)
        record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if torch.cuda.is_available():
            record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        save_outputs(model, tokenizer, config, out, record)
    accelerator.wait_for_everyone()
    return record


# ---- checks before any weights are read -------------------------------------------------------
def check_inputs(model_dir: Path, corpus_dir: Path, out: Path, config: UnlearnConfig) -> Corpus:
    check_dir_target(out)  # the output policy (fileio), before training rather than at the final rename
    check_model_dir(model_dir)
    corpus = Corpus.load(corpus_dir)
    corpus.require("raw/forget")
    if config.uses_retain and not corpus.raw.get("retain"):
        raise UnlearnopsError(
            f"corpus {corpus_dir}: no raw/retain.json, which regularizer '{config.regularizer}' trains on; "
            "add the retain split or pass --regularizer none"
        )
    for source, what in ((model_dir, "--model"), (corpus_dir, "--corpus")):
        if _overlaps(out, source):
            raise UnlearnopsError(f"--out {out}: overlaps {what} {source}, which writing OUT would replace; choose a separate directory")
    return corpus


def with_group_sizes(model_dir: Path, config: UnlearnConfig) -> UnlearnConfig:
    """The RTN groups of the quantized stopping evaluation and of the simulation must tile every layer
    (quantize/groups.py, the one check); stop_group_size is chosen from the model when not given."""
    from ..quantize.groups import group_size_for

    if config.simulate_rounding_cells:
        group_size_for(model_dir, config.simulate_rounding_cells, field="simulate_rounding_cells")
    if config.stop_on != "quantized":
        return config
    return config.model_copy(update={"stop_group_size": group_size_for(model_dir, config.stop_group_size, field="stop_group_size")})


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def stop_targets(config: UnlearnConfig, corpus_dir: Path) -> dict[str, dict[str, Any]]:
    """Stopping targets, metric -> {value, source}. Without a forgetting target (VerbMem_f or
    KnowMem_f), MUSE's rule on a bench corpus: KnowMem_f at or below the retrain model's
    (bench.json next to the corpus). A PrivLeak target adds to the forgetting target, never replaces it."""
    targets = {
        metric: {"value": getattr(config, field), "source": f"config {field}"}
        for metric, field in metrics_registry.stop_settings().items()
        if getattr(config, field) is not None
    }
    if not any(_forgetting(metric) for metric in targets) and config.eval_limit:
        from ..bench import MANIFEST, recorded_metrics

        retrain_knowmem = recorded_metrics(corpus_dir.parent, "retrain").get("knowmem_f")
        if isinstance(retrain_knowmem, (int, float)):
            source = f"{corpus_dir.parent / MANIFEST} metrics.retrain.knowmem_f (MUSE's rule)"
            targets["knowmem_f"] = {"value": float(retrain_knowmem), "source": source}
    return targets


def privleak_reference(corpus_dir: Path) -> dict[str, Any]:
    """PrivLeak's reference for the per-epoch measurement: the bench's retrain AUC, {auc: None} elsewhere."""
    from ..bench import MANIFEST
    from ..bench import privleak_reference as bench_reference

    auc = bench_reference(corpus_dir)
    if auc is not None and 0 < auc <= 1:
        return {"auc": auc, "source": f"{corpus_dir.parent / MANIFEST} metrics.retrain.auc"}
    return {"auc": None, "source": f"none: {corpus_dir} is not a bench corpus (no {MANIFEST} with a retrain AUC beside it)"}


def _drop_unmeasurable(targets: dict, reference: dict) -> dict[str, str]:
    """Remove a PrivLeak target that has no reference AUC; say why (train.json), rather than refuse:
    a pipeline applies one stop_privleak to every request, and the release gate decides what an
    unmeasured PrivLeak means (policy.may_skip)."""
    if "privleak" in targets and reference["auc"] is None:
        del targets["privleak"]
        return {"privleak": f"not applied: no PrivLeak reference ({reference['source']})"}
    return {}


def epoch_metrics(corpus: Corpus, config: UnlearnConfig, targets: dict, reference: dict | None = None) -> tuple[str, ...]:
    """The metrics measured after each epoch: the configured ones the corpus has files for (PrivLeak
    only with a reference AUC), plus every stop target's (none if eval_limit is 0)."""
    if not config.eval_limit:
        if targets:
            raise UnlearnopsError("eval_limit: 0 turns off the per-epoch evaluation that the stop target needs; set it above 0 or drop the target")
        return ()
    for metric in targets:
        missing = [need for need in metrics_registry.get(metric).needs if not corpus.has(need)]
        if missing:
            raise UnlearnopsError(f"corpus {corpus.root}: missing {missing[0]}.json, which the {metric} stop target is measured on")
    wanted = set(config.epoch_metrics) | set(targets)
    has_reference = bool(reference and reference.get("auc"))
    measurable = [
        metric for metric in metrics_registry.per_epoch()
        if all(corpus.has(need) for need in metric.needs) and (metric.key != "privleak" or has_reference)
    ]
    return tuple(metric.key for metric in measurable if metric.key in wanted)


# ---- model, reference, data -------------------------------------------------------------------
def build_model(base, config: UnlearnConfig, *, device) -> tuple[Any, Reference | None]:
    """The model to train (peft-wrapped in LoRA mode) and the frozen reference's logits function."""
    needs_reference = lookup(METHODS, config.method, what="method").uses_reference or bool(
        (regularizer := REGULARIZERS[config.regularizer]) and regularizer.uses_reference
    )
    if config.gradient_checkpointing:
        base.gradient_checkpointing_enable()
    if config.mode == "full":
        frozen = copy.deepcopy(base).eval().requires_grad_(False).to(device) if needs_reference else None
        base.train()
        return base, (_logits_of(frozen) if frozen is not None else None)
    from peft import LoraConfig, get_peft_model

    if config.gradient_checkpointing:
        # Without this, checkpointed blocks see inputs that need no grad and LoRA trains nothing.
        base.enable_input_require_grads()
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules(),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(base, lora)
    except ValueError as err:
        raise UnlearnopsError(f"lora_targets: {str(err).splitlines()[0]}; use 'all-linear' or names of linear modules") from None
    model.train()
    return model, (_adapter_free_logits(model) if needs_reference else None)


def rounding_cells(model, config: UnlearnConfig):
    """The simulation of the large-model regime (`simulate_rounding_cells`), or None."""
    if config.simulate_rounding_cells is None:
        return None
    from ..rounding_cells import RoundingCellProjector

    return RoundingCellProjector(model, group_size=config.simulate_rounding_cells)


def _logits_of(frozen) -> Reference:
    def reference(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return frozen(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits

    return reference


def _adapter_free_logits(peft_model) -> Reference:
    """With LoRA the model before unlearning is the base with adapters switched off: no copy."""

    def reference(batch: Batch) -> torch.Tensor:
        with torch.no_grad(), peft_model.disable_adapter():
            return peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits

    return reference


def _loader(sequences: Sequences, config: UnlearnConfig, *, offset: int) -> DataLoader:
    generator = torch.Generator().manual_seed(config.seed + offset)
    dataset = TensorDataset(sequences.input_ids, sequences.attention_mask)
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator)


def _cycle(loader):
    """Retain batches without end: the retain split is usually larger than the forget split."""
    while True:
        yield from loader


def _calibrate(run, forget: Sequences, retain: Sequences | None, show_progress: bool) -> dict:
    from .calibration import calibrate

    calibration = calibrate(run, forget, retain, train_step)
    tried = ", ".join(f"{probe['lr']:.2g} (+{probe['forget_loss_rise']:.3f})" for probe in calibration["probes"])
    progress.note(f"lr calibration: forget-loss rise needed {calibration['rise_needed']:.3f} in {calibration['probe_steps']} steps; "
                  f"tried {tried}; training at {calibration['chosen_lr']:.2g}",
                  enabled=show_progress and run.accelerator.is_local_main_process)
    return calibration


# ---- the loop ---------------------------------------------------------------------------------
@dataclass
class Training:
    """Everything one run's loop touches; `ddp_model` is what trains (wrapped for data-parallel),
    `model` the same weights unwrapped (for evaluation and saving)."""

    accelerator: Any
    ddp_model: Any
    model: Any
    optimizer: Any
    forget_loader: Any
    retain_batches: Iterator | None
    reference: Reference | None
    tokenizer: Any
    corpus: Corpus
    config: UnlearnConfig
    targets: dict
    metrics: tuple[str, ...]
    projector: Any = None  # RoundingCellProjector when simulating the large-model regime
    retrain_auc: float | None = None  # PrivLeak's reference, when the corpus sits in a bench


def run_epochs(run: Training, show_progress: bool) -> tuple[list[dict], dict]:
    """Train epoch by epoch until the stop targets are met, the epoch cap or max_steps.
    Returns (per-epoch history, stop decision: chosen_epoch, reason, target_met)."""
    config = run.config
    total = min(config.epochs * len(run.forget_loader), config.max_steps or 10**12)
    history: list[dict] = []
    steps_done, why = 0, ""
    description = f"unlearn {config.method}+{config.regularizer} ({config.mode})"
    with progress.task(description, total=total, enabled=show_progress and run.accelerator.is_local_main_process) as bar:
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            entry = train_epoch(run, total - steps_done, lambda loss: bar.advance(status=f"epoch {epoch} loss {loss:.3f}"))
            steps_done += entry["steps"]
            entry["metrics"] = evaluate_epoch(run) if run.metrics else {}
            entry["seconds"] = round(time.perf_counter() - started, 2)
            history.append({"epoch": epoch, **entry})
            met, why = targets_met(entry["metrics"], run.targets)
            if met:
                bar.update(total=steps_done)
                return history, {"chosen_epoch": epoch, "reason": f"first epoch meeting the target: {why}", "target_met": True}
            if overshot(entry["metrics"], run.targets):
                bar.update(total=steps_done)
                reason = f"over-unlearned: {why}; stopped, since more unlearning only raises PrivLeak further"
                return history, {"chosen_epoch": epoch, "reason": reason, "target_met": False}
            if steps_done >= total:
                break
    if steps_done >= total and len(history) < config.epochs:
        reason = f"max_steps {config.max_steps} reached"
    else:
        reason = f"epoch cap {config.epochs} reached"
    reason += f"; target not met ({why})" if run.targets else "; no stop target set"
    return history, {"chosen_epoch": history[-1]["epoch"], "reason": reason, "target_met": False if run.targets else None}


def train_epoch(run: Training, step_budget: int, on_step: Callable[[float], None]) -> dict:
    """One pass over the forget set (or fewer steps, to stay within max_steps); mean losses."""
    sums: dict[str, float] = {}
    steps = 0
    for forget_ids, forget_mask in run.forget_loader:
        if steps >= step_budget:
            break
        retain = Batch(*next(run.retain_batches)) if run.retain_batches is not None else None
        terms = train_step(run, Batch(forget_ids, forget_mask), retain)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        steps += 1
        on_step(terms["loss"])
    means = {name: _mean_over_processes(run.accelerator, value / max(steps, 1)) for name, value in sums.items()}
    return {"steps": steps, **means}


def train_step(run: Training, forget: Batch, retain: Batch | None) -> dict[str, float]:
    """One optimizer step. Forget and retain sequences go through the model in one forward pass,
    so there is one backward and data-parallel gradients are synchronised once."""
    config, reference = run.config, run.reference
    batches = [forget] + ([retain] if retain is not None else [])
    input_ids = torch.cat([batch.input_ids for batch in batches])
    attention_mask = torch.cat([batch.attention_mask for batch in batches])
    logits = run.ddp_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    size = forget.input_ids.shape[0]
    loss = forget_loss = METHODS[config.method].fn(logits[:size], forget, lambda: reference(forget), config)
    terms = {"forget_loss": forget_loss.item()}
    if retain is not None:
        retain_loss = REGULARIZERS[config.regularizer].fn(logits[size:], retain, lambda: reference(retain), config)
        loss = forget_loss + config.reg_weight * retain_loss
        terms["retain_loss"] = retain_loss.item()
    run.accelerator.backward(loss)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.projector is not None:
        run.projector.project()
    return {"loss": loss.item(), **terms}


def _mean_over_processes(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return round(value, 6)
    return round(accelerator.reduce(torch.tensor(value, device=accelerator.device), reduction="mean").item(), 6)


def evaluate_epoch(run: Training) -> dict[str, float]:
    """Measure the model now, on the main process; every process gets the same numbers."""
    from accelerate.utils import broadcast_object_list

    result = [stopping_measure(run) if run.accelerator.is_main_process else None]
    if run.accelerator.num_processes > 1:
        broadcast_object_list(result)
    return result[0]


def stopping_measure(run: Training) -> dict[str, float]:
    """The stopping evaluation: the trained weights, or (stop_on: quantized) a copy quantized with
    stop_scheme, i.e. the model that will ship."""
    config = run.config
    if config.stop_on == "full-precision":
        return measure(run.model, run.tokenizer, run.corpus, run.metrics, config.eval_limit, retrain_auc=run.retrain_auc)
    from .quantized_copy import quantized_copy

    model, tokenizer = quantized_copy(
        run.model, run.tokenizer, run.corpus, config.stop_scheme, config.stop_group_size, calibration_samples=config.stop_calibration_samples
    )
    return measure(model, tokenizer, run.corpus, run.metrics, config.eval_limit, retrain_auc=run.retrain_auc)


def measure(model, tokenizer, corpus: Corpus, metrics: tuple[str, ...], limit: int, *, retrain_auc: float | None = None) -> dict[str, float]:
    """One model's scores on the first `limit` items of each metric's file (PrivLeak also gives its AUC)."""
    from ..evaluate import evaluate_loaded

    was_training = model.training
    model.eval()
    try:
        scores = evaluate_loaded(model, tokenizer, corpus, limit=limit, metrics=metrics, retrain_auc=retrain_auc)
    finally:
        model.train(was_training)
    measured = {metric: round(float(scores[metric]), 3) for metric in metrics}
    if "privleak" in metrics:
        measured["privleak_auc"] = round(float(scores["auc"]), 4)
    return measured


def _forgetting(metric: str) -> bool:
    """A forgetting target (at or below); otherwise a two-sided one (PrivLeak: |value| at or below)."""
    return metrics_registry.get(metric).better == "lower"


def target_met(metric: str, score: float, value: float) -> bool:
    """Forgetting metrics must be at or below their target; PrivLeak within +-target (MUSE reads
    both signs: below 0 the forget texts still leak membership, above 0 over-unlearning)."""
    return score <= value if _forgetting(metric) else abs(score) <= value


def overshot(scores: dict[str, float], targets: dict[str, dict]) -> bool:
    """The forgetting targets are met and PrivLeak went past +target in one epoch (it rises as the
    forget texts' likelihood falls: measured on the bench, docs/unlearn.md): stop rather than go on
    over-unlearning until the epoch cap."""
    if "privleak" not in targets or not scores:
        return False
    forgetting = all(target_met(metric, scores[metric], target["value"]) for metric, target in targets.items() if _forgetting(metric))
    return forgetting and scores["privleak"] > targets["privleak"]["value"]


def targets_met(scores: dict[str, float], targets: dict[str, dict]) -> tuple[bool, str]:
    """All targets met, and a sentence saying how each compares."""
    if not targets or not scores:
        return False, ""
    parts = []
    for metric, target in targets.items():
        met, score, value = target_met(metric, scores[metric], target["value"]), scores[metric], target["value"]
        if _forgetting(metric):
            parts.append(f"{metric} {score:.1f} {'<=' if met else '>'} {value:.1f}")
        else:
            parts.append(f"{metric} {score:+.1f} {'within' if met else 'outside'} +-{value:.1f}")
    return all(target_met(metric, scores[metric], target["value"]) for metric, target in targets.items()), ", ".join(parts)


# ---- outputs ----------------------------------------------------------------------------------
def _data_summary(corpus: Corpus, config: UnlearnConfig, forget: Sequences, retain: Sequences | None) -> dict:
    summary = {"seq_len": config.seq_len, "forget_sequences": len(forget), "forget_tokens": forget.tokens}
    if retain is not None:
        summary.update(retain_sequences=len(retain), retain_tokens=retain.tokens)
    for split in ("forget", "retain") if retain is not None else ("forget",):
        summary[f"{split}_qa_pairs_added"] = len(missing_qa(corpus, split)) if config.include_qa else 0
    return summary


def _record(model_dir, corpus_dir, out, config, model, accelerator, targets, metrics, history, stop) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    resolved = {
        "lr": config.learning_rate,
        "method_variant": METHODS[config.method].variant,
        "regularizer_variant": REGULARIZERS[config.regularizer].variant if config.uses_retain else None,
        "optimizer": "AdamW, constant learning rate, no warm-up",
        "trainable_parameters": trainable,
        "total_parameters": total,
        "processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "effective_batch_size": config.batch_size * accelerator.num_processes,
    }
    if config.mode == "lora":
        resolved["lora_modules"] = sorted({name.split(".")[-1] for name in model.base_model.targeted_module_names})
    return {
        "model": str(model_dir),
        "corpus": str(corpus_dir),
        "out": str(out),
        "config": config.model_dump(),
        "resolved": resolved,
        "stopping": {"targets": targets, "metrics": list(metrics), "eval_limit": config.eval_limit, "measured_on": _measured_on(config)},
        "epochs": history,
        "chosen_epoch": stop["chosen_epoch"],
        "stop_reason": stop["reason"],
        "target_met": stop["target_met"],
        "final_metrics": history[-1]["metrics"] if history else {},
        "versions": library_versions("torch", "transformers", "peft", "accelerate"),
    }


def _measured_on(config: UnlearnConfig) -> str:
    """Which model the stopping rule measured, as train.json says it."""
    if config.stop_on == "quantized":
        return f"quantized ({config.stop_scheme}, group {config.stop_group_size})"
    return "full-precision"


def save_outputs(model, tokenizer, config: UnlearnConfig, out: Path, record: dict) -> None:
    """OUT/adapter (LoRA), OUT/model (merged, full precision, safetensors + tokenizer), OUT/train.json."""
    with atomic_dir(out) as staging:
        if config.mode == "lora":
            model.save_pretrained(staging / "adapter")
            model = model.merge_and_unload()
        if config.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        model.save_pretrained(staging / "model")
        tokenizer.save_pretrained(staging / "model")
        write_json(staging / "train.json", record)
