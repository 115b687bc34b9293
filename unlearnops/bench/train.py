"""Train a small Llama from a config on a list of documents, deterministically, on CPU."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

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
