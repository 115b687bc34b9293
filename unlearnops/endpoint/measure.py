"""MUSE's metrics measured through a server's completions API, scored by the evaluator's own functions.

The inputs are built exactly as `unlearnops.evaluate` builds them (the same items, the same
`limit`, prompts encoded and cut to the model's context by `generation.encode_prompt`, membership
texts by `muse.membership_ids`), and every score comes from `unlearnops.evaluate.muse` (ROUGE-L,
the KnowMem answer cut, Min-K%, the AUC, PrivLeak): the only thing that differs from the registered
evaluation is who runs the model.

- VerbMem / KnowMem: greedy `/v1/completions` (temperature 0), `max_tokens` 128 / 32 as MUSE.
- PrivLeak: the prompt's log-probabilities (`echo`, `logprobs: 0`, `max_tokens: 0`), Min-40% per
  text, AUC of forget vs holdout, against the registered evaluation's retrain AUC.

Every request of every metric goes into one pool, `concurrency` in flight at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..corpus import Corpus
from ..errors import UnlearnopsError
from ..evaluate import generation, muse
from ..fileio import sha256_bytes
from .client import OpenAIEndpoint

GENERATION_METRICS = ("verbmem_f", "knowmem_f", "knowmem_r")
MEMBERSHIP = "privleak"
MEASURABLE = (*GENERATION_METRICS, MEMBERSHIP)


@dataclass(frozen=True)
class Job:
    """One request: a metric's item, its prompt as token ids, and how it is scored."""

    metric: str
    split: str
    item: int
    prompt_ids: list[int]
    max_tokens: int  # 0: prompt log-probabilities (membership)
    gold: str | None = None  # generation items: the reference the ROUGE-L score is taken against
    label: int | None = None  # membership items: 0 forget, 1 holdout


@dataclass
class Measurement:
    values: dict[str, float | None]  # verbmem_f, knowmem_f, knowmem_r, privleak (0-100), auc (0-1)
    counts: dict[str, int]
    items: list[dict[str, Any]] = field(default_factory=list)  # scores and hashes only, never text
    seconds: float = 0.0
    requests: int = 0
    concurrency: int = 1


def load_tokenizer(model_dir: Path) -> tuple[Any, Any]:
    """(tokenizer, an object with the model's `config`) from a model directory's small files."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        config = AutoConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise UnlearnopsError(f"{model_dir}: cannot load the model's tokenizer and config ({err}); pass --tokenizer DIR") from None
    return tokenizer, SimpleNamespace(config=config)


def plan_jobs(corpus: Corpus, metrics: list[str], tokenizer: Any, model: Any, limit: int | None) -> list[Job]:
    """Every request the metrics need, built as the evaluator builds its inputs."""
    first = (lambda items: list(items[:limit] if limit else items))
    jobs: list[Job] = []
    if "verbmem_f" in metrics:
        budget = generation.prompt_budget(model, tokenizer, muse.VERBMEM_MAX_NEW_TOKENS)
        for index, item in enumerate(first(corpus.verbmem_forget)):
            jobs.append(Job("verbmem_f", "verbmem/forget", index, generation.encode_prompt(tokenizer, item.prompt, budget),
                            muse.VERBMEM_MAX_NEW_TOKENS, gold=muse.truncate_gold(tokenizer, item.gt)))
    for metric, split in (("knowmem_f", "forget"), ("knowmem_r", "retain")):
        if metric not in metrics:
            continue
        budget = generation.prompt_budget(model, tokenizer, muse.KNOWMEM_MAX_NEW_TOKENS)
        icl = corpus.knowmem[f"{split}_qa_icl"]
        for index, qa in enumerate(first(corpus.knowmem[f"{split}_qa"])):
            prompt = muse.knowmem_prompt(icl, qa.question)
            jobs.append(Job(metric, f"knowmem/{split}_qa", index, generation.encode_prompt(tokenizer, prompt, budget),
                            muse.KNOWMEM_MAX_NEW_TOKENS, gold=qa.answer))
    if MEMBERSHIP in metrics:
        context = generation.context_length(model, tokenizer)
        for split, label in (("forget", 0), ("holdout", 1)):
            for index, text in enumerate(first(corpus.privleak[split])):
                jobs.append(Job(MEMBERSHIP, f"privleak/{split}", index, muse.membership_ids(tokenizer, text, context, index=index), 0,
                                label=label))
    return jobs


def check_fits(jobs: list[Job], max_model_len: int | None, url: str) -> None:
    """A prompt the server's context cannot hold would be answered 400: say which setting to change."""
    if not max_model_len:
        return
    # A membership text may fill the whole context (client.prompt_logprobs reads its last token apart).
    longest = max((len(job.prompt_ids) + job.max_tokens for job in jobs), default=0)
    if longest > max_model_len:
        raise UnlearnopsError(
            f"{url}: the server's max_model_len is {max_model_len}, but the registered evaluation used prompts of up to "
            f"{longest} tokens (prompt + new tokens); restart the server with --max-model-len {longest} or more"
        )


def measure(endpoint: OpenAIEndpoint, served_model: str, jobs: list[Job], *, retrain_auc: float | None,
            max_model_len: int | None = None, on_done: Callable[[int], None] | None = None) -> Measurement:
    """Send every job (concurrently), score the answers with the evaluator's functions."""
    started, sent_before = time.perf_counter(), endpoint.requests_sent

    def call(job: Job) -> Any:
        if job.max_tokens == 0:
            return endpoint.prompt_logprobs(served_model, job.prompt_ids, max_model_len=max_model_len)
        return endpoint.complete(served_model, job.prompt_ids, max_tokens=job.max_tokens).text

    answers = endpoint.map(call, jobs, on_done)
    result = score(jobs, answers, retrain_auc=retrain_auc)
    result.seconds = round(time.perf_counter() - started, 3)
    result.requests, result.concurrency = endpoint.requests_sent - sent_before, endpoint.concurrency
    return result


def score(jobs: list[Job], answers: list[Any], *, retrain_auc: float | None) -> Measurement:
    """The metrics from the answers: mean ROUGE-L x 100 per generation metric, Min-K% AUC for membership."""
    per_metric: dict[str, list[float]] = {}
    membership: dict[int, list[float]] = {0: [], 1: []}
    items = []
    for job, answer in zip(jobs, answers):
        row = {"metric": job.metric, "split": job.split, "item": job.item, "prompt_sha256": _ids_hash(job.prompt_ids)}
        if job.max_tokens == 0:
            value = muse.min_k_score(answer)
            membership[job.label].append(value)
            row.update(label=job.label, tokens=len(job.prompt_ids), mia_score=value)
        else:
            text = muse.cut_answer(answer) if job.metric != "verbmem_f" else answer
            value = muse.rouge_l_f1(job.gold, text)
            per_metric.setdefault(job.metric, []).append(value)
            row.update(score=value, output_sha256=sha256_bytes(text.encode("utf-8")))
        items.append(row)
    values: dict[str, float | None] = {key: sum(v) / len(v) * 100 for key, v in per_metric.items()}
    counts = {key: len(v) for key, v in per_metric.items()}
    if membership[0] and membership[1]:
        auc = muse.membership_auc(membership[0], membership[1])
        values.update(auc=auc, privleak=muse.privleak(auc, retrain_auc))
        counts.update(privleak_forget=len(membership[0]), privleak_holdout=len(membership[1]))
    return Measurement(values, counts, items)


def _ids_hash(ids: list[int]) -> str:
    """Names the exact prompt sent (token ids), without its text."""
    return sha256_bytes(",".join(map(str, ids)).encode())[:16]
