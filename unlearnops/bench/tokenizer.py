"""A small byte-level BPE tokenizer trained on the bench corpus, as a transformers tokenizer.

Pre-tokenization splits text into words WITH their trailing whitespace (`\\S+\\s*`), not the
GPT-2 way (leading space). Why: the evaluator's prompts end in a space ("Answer: ", a verbmem
prefix cut after a word). With GPT-2 pre-tokenization the trailing space of a prompt becomes a
lone token the model never saw before a word in training, and greedy answers degrade; with
trailing-space pieces a prompt tokenizes exactly as the same prefix of a training text.
"""

from __future__ import annotations

from collections.abc import Iterable

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train BPE on `texts`; return a `PreTrainedTokenizerFast` that prepends BOS to every text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\S+\s*"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    bos_id = backend.token_to_id(BOS)
    # Like Llama's tokenizer: BOS in front of every encoded text, so an evaluator's prompt
    # starts exactly as the training documents do.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )
