"""A corpus in MUSE's layout, read and written with the same file names and JSON shapes.

    raw/{forget,retain,holdout}.json          list[str]  (articles; retain/holdout optional)
    verbmem/forget.json                       list[{"prompt", "gt"}]
    knowmem/{forget,retain}_qa.json           list[{"question", "answer"}]
    knowmem/{forget,retain}_qa_icl.json       list[{"question", "answer"}]  (few-shot examples)
    privleak/{forget,retain,holdout}.json     list[str]

The loader reads real MUSE downloads (e.g. ../shared/muse-news/) as well as the embedded bench.
Every read goes through fileio's capped reader, and every file must resolve inside the corpus
directory (no symlink escapes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UnlearnopsError
from .fileio import confined, read_json, write_json

RAW_SPLITS = ("forget", "retain", "holdout")
QA_FILES = ("forget_qa", "forget_qa_icl", "retain_qa", "retain_qa_icl")
PRIVLEAK_SPLITS = ("forget", "retain", "holdout")


@dataclass(frozen=True)
class QA:
    question: str
    answer: str


@dataclass(frozen=True)
class VerbmemItem:
    prompt: str
    gt: str


@dataclass
class Corpus:
    root: Path
    raw: dict[str, list[str]] = field(default_factory=dict)
    verbmem_forget: list[VerbmemItem] = field(default_factory=list)
    knowmem: dict[str, list[QA]] = field(default_factory=dict)
    privleak: dict[str, list[str]] = field(default_factory=dict)

    # ---- reading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path | str) -> "Corpus":
        """Load every file that is present; `require` checks what a command needs."""
        root = Path(root)
        try:
            is_dir = root.is_dir()
        except OSError as err:  # a name too long, a loop of links: name the path and why, not "disk full"
            raise UnlearnopsError(f"corpus {root}: cannot be read ({err.strerror or err}); check the path") from None
        if not is_dir:
            raise UnlearnopsError(f"corpus {root}: not a directory; pass a MUSE-layout corpus (raw/, verbmem/, knowmem/, privleak/)")
        corpus = cls(root=root)
        for split in RAW_SPLITS:
            if (path := corpus._path("raw", split)).exists():
                corpus.raw[split] = _strings(path)
        if (path := corpus._path("verbmem", "forget")).exists():
            corpus.verbmem_forget = [VerbmemItem(**item) for item in _records(path, ("prompt", "gt"))]
        for name in QA_FILES:
            if (path := corpus._path("knowmem", name)).exists():
                corpus.knowmem[name] = [QA(**item) for item in _records(path, ("question", "answer"))]
        for split in PRIVLEAK_SPLITS:
            if (path := corpus._path("privleak", split)).exists():
                corpus.privleak[split] = _strings(path)
        if not (corpus.raw or corpus.verbmem_forget or corpus.knowmem or corpus.privleak):
            raise UnlearnopsError(f"corpus {root}: no MUSE-layout files found (expected e.g. raw/forget.json, verbmem/forget.json)")
        return corpus

    def _path(self, folder: str, name: str) -> Path:
        relative = Path(folder) / f"{name}.json"
        if not (self.root / relative).exists():
            return self.root / relative
        return confined(relative, self.root, what=f"corpus file {relative}")

    def require(self, *names: str) -> None:
        """Fail with the missing file's path, e.g. require("verbmem/forget", "knowmem/forget_qa")."""
        for name in names:
            folder, split = name.split("/")
            present = {
                "raw": self.raw,
                "verbmem": {"forget": self.verbmem_forget} if self.verbmem_forget else {},
                "knowmem": self.knowmem,
                "privleak": self.privleak,
            }[folder]
            if not present.get(split):
                raise UnlearnopsError(f"corpus {self.root}: missing or empty {folder}/{split}.json, which this command needs")

    def has(self, name: str) -> bool:
        """Whether the corpus holds a non-empty file, e.g. has("knowmem/forget_qa")."""
        try:
            self.require(name)
        except UnlearnopsError:
            return False
        return True

    # ---- writing ---------------------------------------------------------------------------
    def write(self, root: Path | str) -> None:
        root = Path(root)
        for split, texts in self.raw.items():
            write_json(root / "raw" / f"{split}.json", texts)
        if self.verbmem_forget:
            write_json(root / "verbmem" / "forget.json", [item.__dict__ for item in self.verbmem_forget])
        for name, items in self.knowmem.items():
            write_json(root / "knowmem" / f"{name}.json", [item.__dict__ for item in items])
        for split, texts in self.privleak.items():
            write_json(root / "privleak" / f"{split}.json", texts)


def _strings(path: Path) -> list[str]:
    value = read_json(path)
    if not isinstance(value, list):
        raise UnlearnopsError(f"{path}: expected a JSON list of strings, got {type(value).__name__}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise UnlearnopsError(f"{path}: item {index} is {type(item).__name__}, expected a string")
    if not value:
        raise UnlearnopsError(f"{path}: empty list; remove the file or add texts")
    return value


def _records(path: Path, keys: tuple[str, ...]) -> list[dict[str, str]]:
    value = read_json(path)
    if not isinstance(value, list):
        raise UnlearnopsError(f"{path}: expected a JSON list of objects with keys {list(keys)}, got {type(value).__name__}")
    if not value:
        raise UnlearnopsError(f"{path}: empty list; remove the file or add items")
    records = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or any(not isinstance(item.get(key), str) for key in keys):
            raise UnlearnopsError(f"{path}: item {index} must be an object with string fields {list(keys)}")
        records.append({key: item[key] for key in keys})
    return records


# Public names for reading one file in a MUSE shape (forget requests may list such files directly).
read_strings, read_records = _strings, _records
