"""The shared-prefix KV cache: batched generation still equals one `generate` per prompt.

KnowMem prompts of a split share one few-shot block; generation computes its keys and values once
and starts every batch's cache from a copy of them. Each test
compares against `generate_naive_ids` (one unpadded `model.generate` call per prompt, MUSE's way)
token for token, on random-weight models where EOS is made likely so that rows stop at different
steps, and with questions of different lengths so that pads sit between the prefix and a row.
"""

from __future__ import annotations

from collections import Counter

import pytest

from helpers import tiny_llama, tiny_tokenizer
from unlearnops.corpus import QA, Corpus
from unlearnops.evaluate import generation, muse

WORDS = "alice bob carol paris rome oslo baker pilot judge born works lives in the a was and 1970 1984 won prize".split()
ICL = [QA("Where was Alice born?", "Paris"), QA("What does Bob do?", "He is a pilot in Rome"), QA("When was Carol born?", "1984")]
QUESTIONS = ["Where?", "Where was Bob born?", "What prize did Carol win in 1970 and in 1984?", "Who lives in Oslo and works as a judge?",
             "Was the baker born in Rome?", "Who won?", "When did alice win the prize in paris?"]


SHARPEN = 16.0


@pytest.fixture(scope="module")
def tokenizer():
    texts = [" ".join(WORDS), "Question: Where was Bob born?\nAnswer: Rome\n\n", *(muse.knowmem_prompt(ICL, q) for q in QUESTIONS)]
    return tiny_tokenizer(texts * 5, vocab_size=320, add_bos=True)


def _model(tokenizer, *, seed: int = 0, max_positions: int = 256, eos_prompts: list[str] | None = None):
    """A random tiny Llama; with `eos_prompts`, EOS gets the logits of a token it picks in some rows
    (never first): those rows stop early, the others run on."""
    import torch

    model = tiny_llama(tokenizer, heads=4, kv_heads=2, seed=seed, max_positions=max_positions)
    with torch.no_grad():  # sharp attention: outputs then depend on which tokens are attended, and where
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(SHARPEN)
            layer.self_attn.k_proj.weight.mul_(SHARPEN)
    if eos_prompts:
        rows = generation.generate_naive_ids(model, tokenizer, eos_prompts, max_new_tokens=12)
        counts = Counter(token for row in rows for token in set(row[1:]))
        common = next(token for token, count in counts.most_common() if count < len(rows) and all(row[0] != token for row in rows))
        with torch.no_grad():
            model.lm_head.weight[tokenizer.eos_token_id] = model.lm_head.weight[common] * 1.05
    return model


def _prompts() -> list[str]:
    return [muse.knowmem_prompt(ICL, question) for question in QUESTIONS]


def _encoded(model, tokenizer, prompts, max_new_tokens):
    budget = generation.prompt_budget(model, tokenizer, max_new_tokens)
    return [generation.encode_prompt(tokenizer, prompt, budget) for prompt in prompts]


def test_common_prefix_on_token_ids():
    assert generation.common_prefix([[1, 5, 6, 7], [1, 5, 6], [1, 5, 9, 9]]) == [1, 5]
    assert generation.common_prefix([[1, 2], [3]]) == []
    assert generation.common_prefix([[4, 4, 4]]) == [4, 4, 4]
    assert generation.common_prefix([]) == []


def test_knowmem_prompts_share_the_few_shot_block_computed_once(tokenizer):
    model = _model(tokenizer)
    encoded = _encoded(model, tokenizer, _prompts(), 16)
    prefix = generation.SharedPrefix.of(model, encoded)
    shots = tokenizer(muse.knowmem_prompt(ICL, "")).input_ids
    # The block and "Question: " at least; at most the shortest prompt minus the token each row keeps.
    assert len(shots) - 8 <= len(prefix.ids) <= min(map(len, encoded)) - 1
    assert all(row[: len(prefix.ids)] == prefix.ids for row in encoded)
    assert len(prefix.keys_values) == model.config.num_hidden_layers
    keys, values = prefix.keys_values[0]
    assert keys.shape == values.shape == (1, 2, len(prefix.ids), model.config.hidden_size // 4)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_prefix_generation_equals_one_prompt_at_a_time(tokenizer, batch_size):
    prompts = _prompts()
    model = _model(tokenizer, eos_prompts=prompts)
    naive = generation.generate_naive_ids(model, tokenizer, prompts, max_new_tokens=24)
    assert generation.generate_ids(model, tokenizer, prompts, max_new_tokens=24, batch_size=batch_size) == naive
    lengths = {len(row) for row in naive}
    assert len(lengths) > 1 and min(lengths) < 24  # some rows stopped at EOS while others went on


@pytest.mark.parametrize("static", [True, False])
def test_the_cache_after_generate_holds_each_rows_own_keys_and_values(tokenizer, static):
    """Column by column, what generate left in a cache that started from the shared prefix equals
    what each prompt alone produces: positions counted from each row's first token, the pads
    between prefix and row never attended."""
    import torch
    from transformers import DynamicCache

    model = _model(tokenizer, seed=5)
    encoded = _encoded(model, tokenizer, _prompts(), 16)
    prefix = generation.SharedPrefix.of(model, encoded)
    assert prefix.ids
    input_ids, attention_mask = generation.left_pad([row[len(prefix.ids):] for row in encoded], pad=0)
    input_ids, attention_mask = prefix.prepend(input_ids, attention_mask)
    cache = prefix.cache(model, len(encoded), input_ids.shape[1] + 1, static=static)
    assert int(cache.get_seq_length()) == len(prefix.ids)
    config = generation.greedy_config(model, tokenizer, 1)
    with torch.inference_mode():
        model.generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, generation_config=config)
        for row, ids in enumerate(encoded):
            alone = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([ids]), past_key_values=alone, use_cache=True)
            columns = [column for column in range(input_ids.shape[1]) if attention_mask[row, column]]
            assert len(columns) == len(ids)
            for ours, reference in zip(cache.layers, alone.layers):
                torch.testing.assert_close(ours.keys[row, :, columns], reference.keys[0], rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(ours.values[row, :, columns], reference.values[0], rtol=1e-4, atol=1e-5)


def test_dynamic_cache_path_equals_one_prompt_at_a_time(tokenizer):
    """A model that cannot run on a static cache starts from the prefix in a dynamic cache."""
    prompts = _prompts()
    model = _model(tokenizer, seed=3, eos_prompts=prompts)
    model._can_compile_fullgraph = False  # this instance only: the flag transformers sets per architecture
    assert not generation.supports_static_cache(model) and generation.supports_prefix_cache(model)
    naive = generation.generate_naive_ids(model, tokenizer, prompts, max_new_tokens=20)
    assert generation.generate_ids(model, tokenizer, prompts, max_new_tokens=20, batch_size=4) == naive


def test_identical_prompts_and_one_token_suffixes(tokenizer):
    """The prefix stops one token short of the shortest prompt: every row keeps a token to prefill from."""
    model = _model(tokenizer, seed=1)
    same = [muse.knowmem_prompt(ICL, "Where?")] * 3
    assert generation.generate_ids(model, tokenizer, same, max_new_tokens=10, batch_size=2) == \
        generation.generate_naive_ids(model, tokenizer, same, max_new_tokens=10)
    one_more = [same[0], same[0] + "alice"]
    assert generation.generate_ids(model, tokenizer, one_more, max_new_tokens=10) == \
        generation.generate_naive_ids(model, tokenizer, one_more, max_new_tokens=10)


def test_prompts_cut_to_the_context_share_no_prefix_and_still_match(tokenizer):
    """Cut prompts keep their end (and BOS), so the few-shot block starts at a different token in each:
    the BOS is all they share, not worth a cache of its own."""
    model = _model(tokenizer, seed=2, max_positions=48)
    prompts = _prompts()
    encoded = _encoded(model, tokenizer, prompts, 16)
    assert max(map(len, encoded)) == 48 - 16
    assert generation.common_prefix(encoded) == [tokenizer.bos_token_id]
    assert generation.SharedPrefix.of(model, encoded).ids == []
    assert generation.generate_ids(model, tokenizer, prompts, max_new_tokens=16, batch_size=4) == \
        generation.generate_naive_ids(model, tokenizer, prompts, max_new_tokens=16)


def test_through_a_lora_wrapper(tokenizer):
    """The unlearning loop evaluates a PEFT-wrapped model in memory, KnowMem included."""
    from peft import LoraConfig, get_peft_model

    model = _model(tokenizer, seed=4)
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts = _prompts()
    assert generation.supports_prefix_cache(wrapped)
    assert generation.generate_ids(wrapped, tokenizer, prompts, max_new_tokens=16, batch_size=3) == \
        generation.generate_naive_ids(wrapped, tokenizer, prompts, max_new_tokens=16)


def test_a_sliding_window_model_encodes_each_prompt_whole(tokenizer):
    """Sliding-window layers keep only a window of keys: no shared prefix, same outputs."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, sliding_window=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )).eval()
    prompts = _prompts()
    assert not generation.supports_prefix_cache(model)
    assert generation.SharedPrefix.of(model, _encoded(model, tokenizer, prompts, 12)).ids == []
    assert generation.generate_ids(model, tokenizer, prompts, max_new_tokens=12, batch_size=4) == \
        generation.generate_naive_ids(model, tokenizer, prompts, max_new_tokens=12)


def test_tiny_bench_knowmem_and_verbmem_equal_one_prompt_at_a_time(tiny_bench):
    """The bench target on its own prompts: KnowMem with the shared block cached, VerbMem without."""
    from unlearnops.modeling import load_causal_lm

    loaded = load_causal_lm(tiny_bench / "target")
    model, tokenizer = loaded.model, loaded.tokenizer
    corpus = Corpus.load(tiny_bench / "corpus")
    for split in ("forget", "retain"):
        prompts = [muse.knowmem_prompt(corpus.knowmem[f"{split}_qa_icl"], qa.question) for qa in corpus.knowmem[f"{split}_qa"]]
        assert generation.SharedPrefix.of(model, _encoded(model, tokenizer, prompts, 32)).ids
        assert generation.generate_ids(model, tokenizer, prompts, max_new_tokens=32, batch_size=5) == \
            generation.generate_naive_ids(model, tokenizer, prompts, max_new_tokens=32)
    prompts = [item.prompt for item in corpus.verbmem_forget]
    assert generation.generate_ids(model, tokenizer, prompts, max_new_tokens=128, batch_size=4) == \
        generation.generate_naive_ids(model, tokenizer, prompts, max_new_tokens=128)
