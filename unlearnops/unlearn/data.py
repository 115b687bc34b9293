"""Training sequences: a corpus split tokenised as one stream and cut into fixed-length chunks.

As in MUSE, the texts of a split are one token stream (documents separated by the end-of-sequence
token) cut into chunks of `seq_len`, each starting with the beginning-of-sequence token when the
tokenizer has one. The last chunk is padded and masked. With `include_qa`, the knowmem QA pairs
are added to the stream in the KnowMem prompt format ("Question: q\nAnswer: a\n\n"), except pairs
whose line the split's raw texts already contain (the embedded bench puts them there): QA text
is part of the target's training data on the bench, so it is part of what is forgotten
(forget_qa) and what is kept (retain_qa). The few-shot (ICL) files are never added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..corpus import QA, Corpus


@dataclass(frozen=True)
class Sequences:
    input_ids: torch.Tensor  # (n, seq_len)
    attention_mask: torch.Tensor  # (n, seq_len)
    tokens: int  # real tokens in the stream

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def qa_text(pairs: list[QA]) -> str:
    return "".join(f"Question: {pair.question}\nAnswer: {pair.answer}\n\n" for pair in pairs)


def missing_qa(corpus: Corpus, split: str) -> list[QA]:
    """The split's knowmem QA pairs whose line its raw texts do not already contain."""
    raw = "\n".join(corpus.raw.get(split, []))
    return [pair for pair in corpus.knowmem.get(f"{split}_qa", []) if qa_text([pair]).strip() not in raw]


def split_texts(corpus: Corpus, split: str, *, include_qa: bool) -> list[str]:
    """The raw texts of `split` ('forget' or 'retain'), plus its missing QA lines when asked."""
    texts = list(corpus.raw.get(split, []))
    added = missing_qa(corpus, split) if include_qa else []
    return texts + ([qa_text(added)] if added else [])


def chunk_stream(texts: list[str], tokenizer, seq_len: int) -> Sequences:
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            stream.append(tokenizer.eos_token_id)
    prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    body = seq_len - len(prefix)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    rows, masks = [], []
    for start in range(0, len(stream), body):
        chunk = prefix + stream[start : start + body]
        padding = seq_len - len(chunk)
        rows.append(chunk + [pad_id] * padding)
        masks.append([1] * len(chunk) + [0] * padding)
    return Sequences(torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long), tokens=len(stream))
