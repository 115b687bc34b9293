"""A bench corpus cut from a real MUSE-layout corpus (e.g. ../shared/muse-news/), deterministic given the seed.

The forget, retain and holdout texts are seeded samples of the source's privleak/{forget,retain,
holdout} texts (three disjoint article sets), each truncated to its first `words` words: a model
of one million parameters cannot memorise 1,500-word articles on a CPU in minutes. Because the
truncated texts are not MUSE's verbmem passages, verbmem/forget.json is cut from the truncated
forget texts (as the synthetic bench does), and the QA pairs are seeded samples of the source's
knowmem files, trained on as QA documents in the evaluator's few-shot format (docs/bench.md says
why). Nothing of the source is copied into the repository: the text lives in the built bench only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..corpus import Corpus
from ..errors import UnlearnopsError
from .synthetic import qa_block, verbmem_item


@dataclass(frozen=True)
class MuseSize:
    forget: int  # privleak/forget texts the target learns and unlearning must remove
    retain: int  # privleak/retain texts both models learn
    holdout: int  # privleak/holdout texts no model learns (membership-inference reference)
    words: int  # each text is cut to its first `words` words
    forget_qa: int  # forget QA pairs, each a training document of the target
    retain_qa: int  # retain QA pairs, each a training document of both models
    icl: int  # few-shot examples kept from each ICL file (shorter QA documents)
    epochs: int  # real text needs more passes than the templated synthetic articles


# Measured choices, see docs/bench.md. Same keys as synthetic.SIZES (the model side stays build.MODEL_SPECS).
SIZES: dict[str, MuseSize] = {
    "tiny": MuseSize(forget=6, retain=12, holdout=6, words=48, forget_qa=6, retain_qa=12, icl=2, epochs=60),
    "default": MuseSize(forget=16, retain=32, holdout=16, words=64, forget_qa=16, retain_qa=32, icl=2, epochs=80),
}
SOURCE_FILES = ("privleak/forget", "privleak/retain", "privleak/holdout", "knowmem/forget_qa", "knowmem/forget_qa_icl",
                "knowmem/retain_qa", "knowmem/retain_qa_icl")


def cut(text: str, words: int) -> str:
    """The first `words` words, whitespace normalised to single spaces (verbmem prompts cut at a space)."""
    return " ".join(text.split()[:words])


def subset(source: Path | str, seed: int = 0, size: str | MuseSize = "default") -> Corpus:
    """The bench corpus in memory: a pure function of the source files, seed and size (a name in SIZES or a MuseSize)."""
    shape = size if isinstance(size, MuseSize) else SIZES[size]
    muse = Corpus.load(source)
    muse.require(*SOURCE_FILES)
    rng = random.Random(f"unlearnops-bench-muse:{seed}")
    texts = {split: [cut(text, shape.words) for text in _sample(rng, muse.privleak[split], getattr(shape, split), f"privleak/{split}")]
             for split in ("forget", "retain", "holdout")}
    qa = {split: _sample(rng, muse.knowmem[f"{split}_qa"], getattr(shape, f"{split}_qa"), f"knowmem/{split}_qa")
          for split in ("forget", "retain")}
    icl = {split: muse.knowmem[f"{split}_qa_icl"][: shape.icl] for split in ("forget", "retain")}
    # Training documents: the texts, plus one document per question (ICL examples, then the pair):
    # the evaluator's few-shot prompt followed by the gold answer, as in the synthetic bench.
    raw = {split: texts[split] + [qa_block(icl[split] + [pair]) for pair in qa.get(split, [])] for split in texts}
    return Corpus(
        root=Path("."),
        raw=raw,
        verbmem_forget=[verbmem_item(text) for text in texts["forget"]],
        knowmem={"forget_qa": qa["forget"], "forget_qa_icl": icl["forget"],
                 "retain_qa": qa["retain"], "retain_qa_icl": icl["retain"]},
        privleak=texts,
    )


def write_corpus(source: Path | str, out: Path | str, seed: int = 0, size: str | MuseSize = "default") -> Corpus:
    """Write the subset in MUSE's layout under `out` and return it."""
    corpus = subset(source, seed, size)
    corpus.write(out)
    corpus.root = Path(out)
    return corpus


def _sample(rng: random.Random, items: list, count: int, name: str) -> list:
    if len(items) < count:
        raise UnlearnopsError(f"--source {name}.json: {len(items)} items, the bench needs {count}; use a smaller --size")
    # Source order, so a larger size's subset reads like the source file.
    return [items[index] for index in sorted(rng.sample(range(len(items)), count))]
