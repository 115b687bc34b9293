"""Train a small Llama from a config on a list of documents, deterministically, on CPU.

`train_models` trains the bench's independent models (target, retrain) at the same time, one
process and one thread each, when the machine has the cores for it: the same bytes as one
after the other (tested), in the time of the longest.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import progress


@dataclass(frozen=True)
class ModelShape:
    """Llama dimensions. hidden and intermediate are multiples of 128 so that every linear layer
    can be 4-bit quantized with groups of 128 (and 64)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int  # longest KnowMem few-shot prompt + 32, and verbmem prompt + 128, fit


@dataclass(frozen=True)
class TrainRecipe:
    epochs: int
    lr: float = 3e-3
    batch_size: int = 16
    warmup_steps: int = 10
    weight_decay: float = 0.0


def set_threads() -> None:
    """torch threads = $OMP_NUM_THREADS: on shared 2-core machines extra threads spin and run far slower."""
    import torch

    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


@dataclass(frozen=True)
class TrainJob:
    """One bench model: what it learns and where it is saved."""

    name: str
    documents: list[str]
    out: Path


def train_models(jobs: Sequence[TrainJob], tokenizer, shape: ModelShape, recipe: TrainRecipe, seed: int, *,
                 show_progress: bool = True, parallel: bool | None = None) -> dict[str, dict]:
    """Train and save every job's model; per job name (in `jobs` order) its summary, with its own
    `wall_s` and `cpu_s`.

    Every model trains on one thread, so a model's bytes do not depend on where or beside what it
    trained. With `parallel` (default: when this process may use 2+ cores) the largest job trains
    in this process, with the progress bar, and the others each in a process of their own at the
    same time (a fresh interpreter: nothing inherited from this one's thread pools); `cpu_s` of
    such a job counts its whole process, imports included.
    """
    if parallel is None:
        parallel = len(os.sched_getaffinity(0)) >= 2
    if not parallel or len(jobs) < 2:
        return {job.name: train_and_save(job, tokenizer, shape, recipe, seed, show_progress=show_progress) for job in jobs}
    here, *elsewhere = sorted(jobs, key=lambda job: -sum(len(document) for document in job.documents))
    workers = [_Worker.start(job, tokenizer, shape, recipe, seed) for job in elsewhere]
    try:
        alongside = ", ".join(job.name for job in elsewhere)
        results = {here.name: train_and_save(here, tokenizer, shape, recipe, seed, show_progress=show_progress,
                                             description=f"train {here.name} ({alongside} alongside)")}
        for worker in workers:
            results[worker.job.name] = worker.result()
    finally:
        for worker in workers:  # after an error here, a model still training is not waited for
            worker.stop()
    return {job.name: results[job.name] for job in jobs}


def train_and_save(job: TrainJob, tokenizer, shape: ModelShape, recipe: TrainRecipe, seed: int, *,
                   show_progress: bool = False, description: str | None = None) -> dict:
    """Build, train (one thread) and save one model; its training summary and timings."""
    wall, cpu = time.perf_counter(), time.process_time()
    with _one_thread():
        model = build_model(shape, tokenizer, seed)
        sequences = encode(job.documents, tokenizer)
        epoch_losses = train(model, sequences, recipe, pad_id=tokenizer.pad_token_id, seed=seed,
                             description=description or f"train {job.name}", show_progress=show_progress)
    save_model(model, tokenizer, job.out)
    return {"documents": len(job.documents), "tokens": sum(map(len, sequences)),
            "parameters": sum(p.numel() for p in model.parameters()),
            "first_epoch_loss": round(epoch_losses[0], 4), "final_loss": round(epoch_losses[-1], 4),
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


@dataclass
class _Worker:
    """A fresh interpreter training one job. Not multiprocessing: its spawn re-runs the caller's
    main script in the child, so a script calling build_bench without a `__main__` guard would
    run twice (and fail). The job goes in and the summary comes out as pickles in `scratch`."""

    job: TrainJob
    process: subprocess.Popen
    scratch: Path

    @classmethod
    def start(cls, job: TrainJob, *arguments: Any) -> _Worker:
        import pickle
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix=f"unlearnops-train-{job.name}-"))
        (scratch / "job.pkl").write_bytes(pickle.dumps((job, *arguments)))
        code = "import sys; from unlearnops.bench.train import _train_in_own_process; _train_in_own_process(sys.argv[1])"
        # The same unlearnops as this process's, whatever the caller's sys.path was made of.
        root = str(Path(__file__).resolve().parents[2])
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with open(scratch / "stderr.txt", "wb") as stderr:  # read only if it fails: a pipe could fill and stall it
            process = subprocess.Popen([sys.executable, "-c", code, str(scratch)], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=stderr, env=environment)
        return cls(job, process, scratch)

    def result(self) -> dict:
        import pickle

        from ..errors import UnlearnopsError

        code = self.process.wait()
        answer = self.scratch / "answer.pkl"
        if code != 0 or not answer.is_file():
            lines = (self.scratch / "stderr.txt").read_text(errors="replace").strip().splitlines()
            raise UnlearnopsError(f"bench: the process training the {self.job.name} model failed (exit code {code}): "
                                  f"{lines[-1] if lines else 'no message; was it killed, or the machine out of memory?'}")
        return pickle.loads(answer.read_bytes())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _train_in_own_process(scratch: str) -> None:
    """The worker's side of _Worker: train the pickled job, pickle its summary."""
    import pickle

    job, *arguments = pickle.loads((Path(scratch) / "job.pkl").read_bytes())
    summary = train_and_save(job, *arguments)
    summary["cpu_s"] = time.process_time()  # the whole process: a fresh interpreter's imports belong to this model
    (Path(scratch) / "answer.pkl").write_bytes(pickle.dumps(summary))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread while training, then the caller's setting back (a pipeline goes on after the bench)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_model(shape: ModelShape, tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def encode(documents: list[str], tokenizer) -> list[list[int]]:
    """BOS + text + EOS per document: EOS teaches the model where an article ends, so greedy
    verbatim continuations stop instead of running on."""
    return [ids + [tokenizer.eos_token_id] for ids in tokenizer(documents)["input_ids"]]


def train(model, sequences: list[list[int]], recipe: TrainRecipe, *, pad_id: int, seed: int,
          description: str, show_progress: bool = True) -> list[float]:
    """AdamW with linear warmup and cosine decay; returns the mean loss of each epoch."""
    import torch

    torch.manual_seed(seed)
    order_rng = random.Random(seed)
    total_steps = len(_batches([len(ids) for ids in sequences], recipe.batch_size, random.Random(0))) * recipe.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, recipe.warmup_steps, total_steps))
    model.train()
    epoch_losses: list[float] = []
    with progress.task(description, total=total_steps, enabled=show_progress) as bar:
        for _ in range(recipe.epochs):
            losses = []
            for indices in _batches([len(ids) for ids in sequences], recipe.batch_size, order_rng):
                batch = _pad([sequences[i] for i in indices], pad_id)
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.advance(status=f"loss {loss.item():.3f}")
            epoch_losses.append(sum(losses) / len(losses))
    model.eval()
    return epoch_losses


def _batches(lengths: list[int], batch_size: int, rng: random.Random, window: int = 8) -> list[list[int]]:
    """One epoch's batches: shuffled, then sorted by length within windows of `window` batches.

    Articles are about twice as long as QA documents; grouping similar lengths cuts the padding
    (wasted compute) while the order still changes every epoch.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda index: lengths[index])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _pad(batch: list[list[int]], pad_id: int) -> dict:
    """Right-pad to the longest sequence; padded positions are masked and carry no loss."""
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def save_model(model, tokenizer, out: Path) -> None:
    """A self-contained HF directory: safetensors weights, config, generation config, tokenizer."""
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
