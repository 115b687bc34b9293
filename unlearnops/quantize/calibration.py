"""Calibration texts for GPTQ / AWQ: where they come from, and the one thing they must never be.

Sources: `CORPUS_DIR:split` (a raw split of a MUSE-layout corpus, e.g. `bench/corpus:retain`) or
a JSON file holding a list of strings. With no source but a corpus, the corpus's retain split is
used. Calibrating on the data being forgotten is refused: the quantizer would fit its rounding
to exactly the texts the unlearning removed. Refused are a split named `forget` and any source
that shares a text (identical, or equal up to case, punctuation and spacing: the rule of a
request's retain and holdout texts, request.checks.forget_overlap) with the forget split of the
corpus it lives in or of `--corpus`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..corpus import Corpus
from ..errors import UnlearnopsError
from ..fileio import read_json, sha256_file

DEFAULT_SPLIT = "retain"
FORGET_SPLIT = "forget"


@dataclass(frozen=True)
class CalibrationSet:
    texts: tuple[str, ...]
    source: str  # "CORPUS_DIR:split" or the file path
    sha256: str  # of the file the texts were read from


def resolve_calibration(spec: str | Path | None, corpus: Path | str | None) -> CalibrationSet | None:
    """The calibration set named by `spec` (or the corpus's retain split), checked against forgetting."""
    if spec is None:
        return _from_split(Path(corpus), DEFAULT_SPLIT, corpus) if corpus is not None else None
    path = Path(spec)
    if path.is_file():
        return _from_file(path, corpus)
    directory, sep, split = str(spec).rpartition(":")
    if not sep or not directory or "/" in split:
        raise UnlearnopsError(
            f"--calibration: '{spec}' is neither a JSON file nor CORPUS_DIR:split; e.g. --calibration bench/corpus:retain"
        )
    return _from_split(Path(directory), split, corpus)


def _from_split(corpus_dir: Path, split: str, other_corpus: Path | str | None) -> CalibrationSet:
    if split == FORGET_SPLIT:
        raise _forget_refusal(f"{corpus_dir}:{split}")
    source = Corpus.load(corpus_dir)
    if split not in source.raw:
        available = ", ".join(name for name in source.raw if name != FORGET_SPLIT) or "none"
        raise UnlearnopsError(f"--calibration: corpus {corpus_dir} has no raw/{split}.json; available splits: {available}")
    texts = source.raw[split]
    _refuse_forget_overlap(texts, f"{corpus_dir}:{split}", [source, *_other(other_corpus)])
    return CalibrationSet(tuple(texts), f"{corpus_dir}:{split}", sha256_file(corpus_dir / "raw" / f"{split}.json"))


def _from_file(path: Path, corpus: Path | str | None) -> CalibrationSet:
    if path.stem == FORGET_SPLIT:
        raise _forget_refusal(str(path))
    texts = read_json(path)
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
        raise UnlearnopsError(f"--calibration: {path} must hold a non-empty JSON list of strings")
    _refuse_forget_overlap(texts, str(path), [*_enclosing_corpus(path), *_other(corpus)])
    return CalibrationSet(tuple(texts), str(path), sha256_file(path))


def _refuse_forget_overlap(texts: list[str], source: str, corpora: list[Corpus]) -> None:
    from ..request.checks import forget_overlap  # the rule a request's retain and holdout texts are held to

    shared = forget_overlap(texts, [text for corpus in corpora for text in corpus.raw.get(FORGET_SPLIT, [])])
    if shared:
        raise _forget_refusal(source, f" ({len(shared)} of its {len(texts)} texts are forget texts, up to case, punctuation and spacing)")


def _enclosing_corpus(path: Path) -> list[Corpus]:
    """The corpus a file sits in (CORPUS/raw/NAME.json), so a renamed copy of raw/forget is caught."""
    root = path.resolve().parent.parent
    if path.resolve().parent.name == "raw" and (root / "raw" / f"{FORGET_SPLIT}.json").exists():
        return [Corpus.load(root)]
    return []


def _other(corpus: Path | str | None) -> list[Corpus]:
    return [Corpus.load(corpus)] if corpus is not None else []


def _forget_refusal(source: str, detail: str = "") -> UnlearnopsError:
    return UnlearnopsError(
        f"--calibration: {source} is the forget data{detail}; calibrating on it would fit the quantizer to the "
        f"texts being erased. Use the retain split (e.g. CORPUS_DIR:{DEFAULT_SPLIT}) or other non-forget text"
    )
