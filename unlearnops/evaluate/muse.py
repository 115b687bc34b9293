"""MUSE's metrics (Shi et al., 2024) as its reference implementation computes them.

Decisions, checked against MUSE's public evaluation code (docs/evaluate.md has the details):
- ROUGE-L is Google's `rouge-score`, no stemmer, and MUSE's reported aggregate `mean_rougeL`
  is the F1 (fmeasure), not the recall; the per-item score is F1 on 0-1, the metric is the
  mean x 100.
- VerbMem: 128 new tokens; the gold continuation is cut to its first 128 tokenizer tokens,
  encoded as MUSE does (with the tokenizer's special tokens, which count toward the 128).
- KnowMem: 32 new tokens, the answer is cut at the first "\\n\\n", "\\nQuestion" or "Question:".
- PrivLeak: Min-40% Prob per text, forget = label 0, holdout = label 1, decision value = minus
  the score, so AUC ~0 means the forget set is obviously memorised and ~0.5 means it is not.
  PrivLeak needs a retrain AUC; without one it is null (MUSE's reference has no 0.5 fallback).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from .. import progress
from ..corpus import QA
from ..errors import UnlearnopsError
from ..fileio import sha256_bytes
from ..metrics.spec import Outcome, Run
from . import generation

VERBMEM_MAX_NEW_TOKENS = 128
KNOWMEM_MAX_NEW_TOKENS = 32
KNOWMEM_STOP_MARKERS = ("\n\n", "\nQuestion", "Question:")
MIN_K_FRACTION = 0.4


# ---- pure scoring (no model) ---------------------------------------------------------------
@functools.cache
def _rouge_l_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_f1(gold: str, generated: str) -> float:
    """ROUGE-L F1 of `generated` against `gold` (0-1)."""
    return float(_rouge_l_scorer().score(gold, generated)["rougeL"].fmeasure)


def knowmem_prompt(icl: Sequence[QA], question: str) -> str:
    shots = "".join(f"Question: {shot.question}\nAnswer: {shot.answer}\n\n" for shot in icl)
    return shots + f"Question: {question}\nAnswer: "


def cut_answer(generated: str) -> str:
    """The answer before the first stop marker: the model starting the next question ends it."""
    for marker in KNOWMEM_STOP_MARKERS:
        generated = generated.split(marker)[0]
    return generated


def truncate_gold(tokenizer: Any, gold: str, max_tokens: int = VERBMEM_MAX_NEW_TOKENS) -> str:
    ids = tokenizer(gold, add_special_tokens=True).input_ids[:max_tokens]
    return generation.decode(tokenizer, ids)


def min_k_score(token_logprobs: Sequence[float], fraction: float = MIN_K_FRACTION) -> float:
    """Min-K% Prob: minus the mean of the lowest `fraction` of a text's token log-probabilities.

    High for text the model finds surprising (non-member), low for memorised text. MUSE takes
    int(n * fraction) tokens, which is none for texts under 3 tokens; we take at least one.
    """
    if not token_logprobs:
        raise ValueError("min_k_score needs at least one token log-probability")
    lowest = sorted(token_logprobs)[: max(1, int(len(token_logprobs) * fraction))]
    return -sum(lowest) / len(lowest)


def membership_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC AUC of telling forget (label 0) from holdout (label 1), decision value = -score."""
    from sklearn.metrics import roc_auc_score

    labels = [0] * len(forget_scores) + [1] * len(holdout_scores)
    decision = [-score for score in [*forget_scores, *holdout_scores]]
    return float(roc_auc_score(labels, decision))


def privleak(auc: float | None, retrain_auc: float | None) -> float | None:
    """(AUC - AUC_retrain) / AUC_retrain x 100: ~0 ideal, negative = still leaks membership."""
    if auc is None or not retrain_auc:
        return None
    return (auc - retrain_auc) / retrain_auc * 100


def text_id(text: str) -> str:
    """A short content hash that names a prompt or text in the details file."""
    return sha256_bytes(text.encode("utf-8"))[:16]


# ---- one forward pass per text ----------------------------------------------------------------
def membership_ids(tokenizer: Any, text: str, limit: int | None, *, index: int = 0) -> list[int]:
    """A membership text's token ids as MUSE encodes it (special tokens, e.g. BOS), cut to the first
    `limit` tokens; the one encoding the evaluator and the endpoint check (unlearnops.endpoint) score."""
    ids = list(tokenizer(text, add_special_tokens=True).input_ids)[:limit]
    if len(ids) < 2:
        raise UnlearnopsError(f"text {index} ({text[:40]!r}): under 2 tokens, too short to score; remove it")
    return ids


def token_logprobs(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[float]]:
    """log p(token_i | tokens_<i) for every token after the first, texts cut to the context length.

    Texts are encoded as MUSE does (with special tokens, e.g. BOS) and keep their beginning when
    cut. Batches of similar lengths, padded on the right with an attention mask.
    """
    import torch

    limit = generation.context_length(model, tokenizer)
    encoded = [membership_ids(tokenizer, text, limit, index=index) for index, text in enumerate(texts)]
    pad = generation.pad_token_id(tokenizer)
    order = sorted(range(len(encoded)), key=lambda index: len(encoded[index]))
    results: list[list[float]] = [[] for _ in encoded]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(encoded[index]) for index in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, index in enumerate(batch):
            input_ids[row, : len(encoded[index])] = torch.tensor(encoded[index])
            attention_mask[row, : len(encoded[index])] = 1
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
        for row, index in enumerate(batch):
            length = len(encoded[index])
            # One row at a time keeps only one (length x vocab) log-softmax in memory.
            logprobs = torch.log_softmax(logits[row, : length - 1].float(), dim=-1)
            targets = input_ids[row, 1:length].to(logprobs.device)
            results[index] = logprobs.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()
        if on_batch is not None:
            on_batch(len(batch))
    return results


# ---- the metrics (registered in unlearnops/metrics/muse.py) -----------------------------------
def verbmem_forget(run: Run) -> Outcome:
    items = run.first(run.corpus.verbmem_forget)
    with progress.task("VerbMem forget", len(items), enabled=run.show_progress) as bar:
        outputs = generation.generate(
            run.model,
            run.tokenizer,
            [item.prompt for item in items],
            max_new_tokens=VERBMEM_MAX_NEW_TOKENS,
            batch_size=run.batch_size,
            on_batch=bar.advance,
        )
    details = []
    for index, (item, output) in enumerate(zip(items, outputs)):
        gold = truncate_gold(run.tokenizer, item.gt)
        details.append(
            {
                "metric": "verbmem_f",
                "split": "verbmem/forget",
                "item": index,
                "prompt_id": text_id(item.prompt),
                "prompt": item.prompt,
                "generated": output,
                "gold": gold,
                "score": rouge_l_f1(gold, output),
            }
        )
    return Outcome(_mean_percent(details), {"verbmem_f": len(items)}, details)


def knowmem(split: str, metric: str, run: Run) -> Outcome:
    questions = run.first(run.corpus.knowmem[f"{split}_qa"])
    icl = run.corpus.knowmem[f"{split}_qa_icl"]
    prompts = [knowmem_prompt(icl, qa.question) for qa in questions]
    with progress.task(f"KnowMem {split}", len(prompts), enabled=run.show_progress) as bar:
        outputs = generation.generate(
            run.model, run.tokenizer, prompts, max_new_tokens=KNOWMEM_MAX_NEW_TOKENS, batch_size=run.batch_size, on_batch=bar.advance
        )
    details = []
    for index, (qa, prompt, output) in enumerate(zip(questions, prompts, outputs)):
        answer = cut_answer(output)
        details.append(
            {
                "metric": metric,
                "split": f"knowmem/{split}_qa",
                "item": index,
                "prompt_id": text_id(prompt),
                "question": qa.question,
                "generated": answer,
                "generated_full": output,
                "gold": qa.answer,
                "score": rouge_l_f1(qa.answer, answer),
            }
        )
    return Outcome(_mean_percent(details), {metric: len(questions)}, details)


def membership(run: Run) -> Outcome:
    """Min-K% scores of forget and holdout texts and the AUC that separates them."""
    splits = {"forget": 0, "holdout": 1}
    texts = {split: run.first(run.corpus.privleak[split]) for split in splits}
    scores: dict[str, list[float]] = {}
    details = []
    total = sum(len(items) for items in texts.values())
    with progress.task(f"PrivLeak ({run.role})", total, enabled=run.show_progress) as bar:
        for split, label in splits.items():
            logprobs = token_logprobs(run.model, run.tokenizer, texts[split], batch_size=run.batch_size, on_batch=bar.advance)
            scores[split] = [min_k_score(row) for row in logprobs]
            for index, (text, row, score) in enumerate(zip(texts[split], logprobs, scores[split])):
                details.append(
                    {
                        "metric": "privleak",
                        "model": run.role,
                        "split": f"privleak/{split}",
                        "item": index,
                        "text_id": text_id(text),
                        "label": label,
                        "tokens": len(row) + 1,
                        "mia_score": score,
                    }
                )
    auc = membership_auc(scores["forget"], scores["holdout"])
    counts = {f"privleak_{split}": len(items) for split, items in texts.items()}
    return Outcome(auc, counts, details)


def privleak_metric(run: Run) -> Outcome:
    """PrivLeak against the run's retrain AUC (null without one); the model's own AUC is reported beside it."""
    outcome = membership(run)
    return Outcome(privleak(outcome.value, run.retrain_auc), outcome.counts, outcome.details, {"auc": outcome.value})


def _mean_percent(details: list[dict]) -> float:
    return sum(row["score"] for row in details) / len(details) * 100
