"""Batched greedy generation that returns exactly what one-prompt-at-a-time `model.generate` returns.

Evaluation generates for hundreds of prompts (MUSE: 100 VerbMem + 200 KnowMem); one call per
prompt leaves most of the hardware idle. Batching is only safe for a metric if it changes
nothing, so:
- prompts are padded on the LEFT (padding_side="left"), so every prompt's last token sits at
  the end of the row and the new tokens follow it directly;
- the attention mask hides the pads, and `generate` derives position ids from that mask
  (cumsum - 1), so a padded prompt sees the same positions as when it is alone;
- greedy decoding (no sampling, one beam) with the KV cache (static where the model allows it),
  stopping at end-of-sequence; rows that finish early are filled with pads, cut off here.
Prompts are sorted by token length before batching so that a batch holds similar lengths
(less padding, less wasted compute), and results are returned in the caller's order.

The tokens all prompts of a call start with (a KnowMem split's few-shot block) are encoded once
and their keys and values copied into every batch's cache (`SharedPrefix`), for models whose
layers all attend to every past token.
tests/test_evaluate.py and tests/test_generation_prefix.py prove batched == unbatched token for
token on tiny models and on the tiny bench.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UnlearnopsError

# A tokenizer's model_max_length is a huge sentinel when the real limit is unknown.
_UNKNOWN_LENGTH = 1_000_000


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The most tokens the model may see at once, or None when neither config nor tokenizer says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < _UNKNOWN_LENGTH:
        return value
    return None


def pad_token_id(tokenizer: Any) -> int:
    """The pad id to fill batches with; its value never matters since the attention mask hides it."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    if configured is None:
        return []
    return [int(value) for value in (configured if isinstance(configured, (list, tuple)) else [configured])]


def supports_static_cache(model: Any) -> bool:
    """transformers marks the models whose forward runs on a static KV cache with this flag."""
    return bool(getattr(model, "_can_compile_fullgraph", False))


def greedy_config(model: Any, tokenizer: Any, max_new_tokens: int, *, static_cache: bool = False) -> Any:
    """Greedy decoding with the KV cache, stopping at end-of-sequence.

    static_cache: the default dynamic cache concatenates every layer's keys and values at each
    step (measured: ~30% of batched CPU time on the tiny bench); a static cache is written in
    place. Never compiled (disable_compile): on a GPU transformers would otherwise compile the
    forward for a static cache, a long warm-up per prompt shape.
    """
    from transformers import GenerationConfig

    eos = eos_token_ids(model, tokenizer)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        cache_implementation="static" if static_cache else None,
        disable_compile=True,
        eos_token_id=eos or None,
        pad_token_id=pad_token_id(tokenizer),
    )


def encode_prompt(tokenizer: Any, prompt: str, max_tokens: int | None) -> list[int]:
    """Token ids as MUSE encodes a prompt (with the tokenizer's special tokens, e.g. BOS).

    A prompt longer than `max_tokens` keeps its END (the text the continuation follows) and its
    leading BOS if it had one.
    """
    ids = list(tokenizer(prompt, add_special_tokens=True).input_ids)
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    bos = tokenizer.bos_token_id
    if bos is not None and ids[0] == bos and max_tokens > 1:
        return [bos] + ids[len(ids) - max_tokens + 1 :]
    return ids[len(ids) - max_tokens :]


def prompt_budget(model: Any, tokenizer: Any, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit beside `max_new_tokens` new ones in the model's context."""
    limit = context_length(model, tokenizer)
    if limit is None:
        return None
    if limit <= max_new_tokens:
        raise UnlearnopsError(
            f"model: context length {limit} leaves no room for a prompt before {max_new_tokens} new tokens; "
            "evaluate a model with a longer context (max_position_embeddings)"
        )
    return limit - max_new_tokens


def generate_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Greedy continuations (new token ids, cut before the first end-of-sequence), in prompt order."""
    import torch

    budget = prompt_budget(model, tokenizer, max_new_tokens)
    encoded = [encode_prompt(tokenizer, prompt, budget) for prompt in prompts]
    for index, ids in enumerate(encoded):
        if not ids:
            raise UnlearnopsError(f"prompt {index} ({prompts[index]!r}): encodes to no tokens; remove the empty item")
    eos = set(eos_token_ids(model, tokenizer))
    pad = pad_token_id(tokenizer)
    static = supports_static_cache(model)
    prefix = SharedPrefix.of(model, encoded)
    # With a prefix, generate continues a cache we made, and must not build its own.
    config = greedy_config(model, tokenizer, max_new_tokens, static_cache=static and not prefix.ids)
    order = sorted(range(len(encoded)), key=lambda index: len(encoded[index]))
    results: list[list[int]] = [[] for _ in encoded]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        input_ids, attention_mask = left_pad([encoded[index][len(prefix.ids) :] for index in batch], pad)
        input_ids, attention_mask = prefix.prepend(input_ids, attention_mask)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                past_key_values=prefix.cache(model, len(batch), input_ids.shape[1] + max_new_tokens, static=static),
                generation_config=config,
            )
        for index, row in zip(batch, output[:, input_ids.shape[1] :].tolist()):
            results[index] = cut_at_eos(row, eos)
        if on_batch is not None:
            on_batch(len(batch))
    return results


def supports_prefix_cache(model: Any) -> bool:
    """Whether a cache may start from a prefix's keys and values: every layer a plain full-attention one.

    A sliding-window or recurrent layer keeps another state than the keys and values of every
    past token, so those models encode each prompt whole.
    """
    from transformers.cache_utils import get_layer_types_and_kwargs

    layer_types, _ = get_layer_types_and_kwargs(model.config.get_text_config(decoder=True))
    return bool(layer_types) and all(layer_type == "full_attention" for layer_type in layer_types)


# A shared prefix is used when it is at least this share of the shortest prompt. Generation from
# a cache made here measured ~10% slower than generate's own for prompts that share only their
# BOS (VerbMem; KnowMem prompts cut to the context); a KnowMem few-shot block is 65-95% of a prompt.
MIN_PREFIX_SHARE = 0.25


@dataclass(frozen=True)
class SharedPrefix:
    """The tokens every prompt of a call starts with, and their keys and values, computed once.

    KnowMem prompts are one split's few-shot block followed by a question: without this every
    prompt of a split re-encodes the same block. The prefix is found on token ids (after
    tokenization and truncation), so it is exactly the tokens each prompt starts with, and it
    stops one token short of the shortest prompt so that every row keeps a token for `generate`
    to start from. Empty when the prompts share too little (MIN_PREFIX_SHARE) or the model cannot
    take it.
    """

    ids: list[int]
    keys_values: list[tuple[Any, Any]]  # per layer, shape [1, kv heads, len(ids), head dim]

    @classmethod
    def of(cls, model: Any, encoded: Sequence[Sequence[int]]) -> SharedPrefix:
        import torch
        from transformers import DynamicCache

        shortest = min(map(len, encoded), default=0)
        ids = common_prefix(encoded)[: shortest - 1]
        if not ids or len(ids) < MIN_PREFIX_SHARE * shortest or not supports_prefix_cache(model):
            return cls([], [])
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids], device=model.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        return cls(ids, [(layer.keys, layer.values) for layer in cache.layers])

    def prepend(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
        """[prefix][left-padded rows]: the pads sit between the prefix and each row's own tokens, hidden
        by the mask, and the positions generate derives from the mask (cumsum - 1) stay each token's
        own, as if the prompt were alone."""
        import torch

        if not self.ids:
            return input_ids, attention_mask
        prefix = torch.tensor([self.ids], dtype=input_ids.dtype).expand(input_ids.shape[0], -1)
        return torch.cat([prefix, input_ids], dim=1), torch.cat([torch.ones_like(prefix), attention_mask], dim=1)

    def cache(self, model: Any, rows: int, length: int, *, static: bool) -> Any:
        """A KV cache holding the prefix for each of `rows` rows (None without a prefix), for generate
        to prefill the rows' own tokens on. `static`: preallocated for `length` tokens and written in
        place (the dynamic cache re-concatenates every layer at every decoding step)."""
        from transformers import DynamicCache, StaticCache

        if not self.ids:
            return None
        cache = StaticCache(config=model.config, max_cache_len=length) if static else DynamicCache(config=model.config)
        for layer, (keys, values) in enumerate(self.keys_values):
            cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), layer)
        return cache


def common_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
    first = list(rows[0]) if rows else []
    length = len(first)
    for row in rows[1:]:
        length = next((position for position in range(min(length, len(row))) if row[position] != first[position]), min(length, len(row)))
    return first[:length]


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) with every row right-aligned: padding_side="left"."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for position, row in enumerate(rows):
        if row:
            input_ids[position, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[position, width - len(row) :] = 1
    return input_ids, attention_mask


def cut_at_eos(tokens: Sequence[int], eos: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in eos:
            return list(tokens[:position])
    return list(tokens)


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Text as MUSE decodes it, special tokens skipped.

    MUSE also passes clean_up_tokenization_spaces=True; transformers 5 ignores that for BPE
    tokenizers (with a warning), and it only moves spaces around punctuation, which ROUGE's
    tokenizer drops anyway, so the tokenizer's own default is used.
    """
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuations as text, in prompt order."""
    ids = generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch)
    return [decode(tokenizer, row) for row in ids]


def generate_naive_ids(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int) -> list[list[int]]:
    """One `model.generate` call per prompt, no padding, default (dynamic) cache, as MUSE's code does:
    the reference the batched path must equal."""
    import torch

    budget = prompt_budget(model, tokenizer, max_new_tokens)
    config = greedy_config(model, tokenizer, max_new_tokens)
    eos = set(eos_token_ids(model, tokenizer))
    results = []
    for prompt in prompts:
        input_ids = torch.tensor([encode_prompt(tokenizer, prompt, budget)], dtype=torch.long, device=model.device)
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
        results.append(cut_at_eos(output[0, input_ids.shape[1] :].tolist(), eos))
    return results
