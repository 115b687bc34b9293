"""Reading a request file safely, and resolving the data it names into a `ResolvedData`.

Every path in a request resolves inside the request file's directory (fileio.confined: no
'..', no absolute path elsewhere, no symlink out of it); the bench reference is the only way
to point outside. Every file is read through fileio's capped reader (size, depth, UTF-8).
Corpus directories are read with corpus.Corpus.load, explicit files with the same readers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from ..corpus import QA, Corpus, VerbmemItem, read_records, read_strings
from ..errors import UnlearnopsError
from ..fileio import confined, read_json
from ..workspace import Workspace
from .schema import BenchSource, CorpusSource, ForgetRequest, schema_errors

REQUEST_MAX_BYTES = 1024 * 1024  # a request is a few hundred bytes; its data lives in other files
REQUEST_MAX_DEPTH = 8  # the schema's deepest value (policy_overrides.NAME) is at depth 2
# KnowMem prompts start with few-shot examples (MUSE's knowmem/*_qa_icl.json). A retain QA list
# without its own examples lends its first FEW_SHOT items (which are then not scored); forget QA
# without its own borrows the retain side's, so a requester needs no few-shot file (docs/requests.md).
FEW_SHOT = 3


@dataclass(frozen=True)
class Origin:
    """Where one list came from: `field` is how reports name it, `path` the file read."""

    field: str
    path: Path


@dataclass
class ResolvedData:
    """The data a request names, loaded: what the pipeline unlearns and evaluates on.

    `privleak_forget` are the forget-side texts of the membership test (MUSE privleak/forget.json,
    else the forget texts). `corpus_dir` is set when all three sources are one MUSE corpus, which
    the pipeline can then use as is; otherwise `to_corpus()` lays the data out in MUSE's layout.
    """

    forget_texts: list[str]
    privleak_forget: list[str]
    retain_texts: list[str]
    holdout_texts: list[str]
    forget_verbmem: list[VerbmemItem] = field(default_factory=list)
    forget_qa: list[QA] = field(default_factory=list)
    forget_qa_icl: list[QA] = field(default_factory=list)
    retain_qa: list[QA] = field(default_factory=list)
    retain_qa_icl: list[QA] = field(default_factory=list)
    corpus_dir: Path | None = None
    origins: dict[str, Origin] = field(default_factory=dict)
    in_place: Corpus | None = field(default=None, repr=False, compare=False)  # the loaded corpus at corpus_dir

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.origins}

    def knowmem(self) -> dict[str, list[QA]]:
        """The knowmem/ files the stages read, few-shot examples supplied where the data has none (FEW_SHOT).

        The lists above stay as loaded, so that a check names an item by its index in the file.
        """
        retain_qa, retain_icl = self.retain_qa, self.retain_qa_icl
        if retain_qa and not retain_icl and len(retain_qa) > FEW_SHOT:
            retain_icl, retain_qa = retain_qa[:FEW_SHOT], retain_qa[FEW_SHOT:]
        forget_icl = self.forget_qa_icl or (retain_icl if self.forget_qa else [])
        files = {"forget_qa": self.forget_qa, "forget_qa_icl": forget_icl, "retain_qa": retain_qa, "retain_qa_icl": retain_icl}
        return {name: items for name, items in files.items() if items}

    def few_shot_problems(self) -> list[tuple[str, str]]:
        """(field, message) for each QA list whose KnowMem prompts would have no few-shot examples."""
        knowmem, problems = self.knowmem(), []
        if self.forget_qa and "forget_qa_icl" not in knowmem:
            problems.append((self.origins["forget_qa"].field, (
                "KnowMem_f prompts need few-shot examples and none are given: add forget.qa_icl (a JSON list of "
                '{"question", "answer"}), or retain QA that has them (retain.qa_icl, or more than '
                f"{FEW_SHOT} retain.qa items); see docs/requests.md")))
        if self.retain_qa and "retain_qa_icl" not in knowmem:
            problems.append((self.origins["retain_qa"].field, (
                f"KnowMem_r prompts need few-shot examples: add retain.qa_icl, or give more than {FEW_SHOT} items "
                f"(the first {FEW_SHOT} then serve as the examples and are not scored); see docs/requests.md")))
        return problems

    def to_corpus(self, root: Path | str = ".") -> Corpus:
        """The data in MUSE's layout, exactly as the stages read it (write it with `.write(dir)`)."""
        return Corpus(
            root=Path(root),
            raw={"forget": self.forget_texts, "retain": self.retain_texts, "holdout": self.holdout_texts},
            verbmem_forget=self.forget_verbmem,
            knowmem=self.knowmem(),
            privleak={"forget": self.privleak_forget, "retain": self.retain_texts, "holdout": self.holdout_texts},
        )

    def stage_corpus(self) -> Corpus:
        """The corpus the unlearn and evaluate stages will read: the one corpus in place, else to_corpus()."""
        if self.corpus_dir is None:
            return self.to_corpus()
        return self.in_place if self.in_place is not None else Corpus.load(self.corpus_dir)


# ---- the request file ---------------------------------------------------------------------------


def read_request_document(path: Path | str) -> object:
    """The request's JSON value, refused if too large, too deep, not UTF-8 or not JSON."""
    return read_json(path, max_bytes=REQUEST_MAX_BYTES, max_depth=REQUEST_MAX_DEPTH)


def parse_request(document: object) -> tuple[ForgetRequest | None, list[tuple[str, str]]]:
    """The request, or None and every schema error as (field, message with the fix)."""
    try:
        return ForgetRequest.model_validate(document), []
    except ValidationError as err:
        return None, schema_errors(err)


def load_request(path: Path | str) -> ForgetRequest:
    """Read and schema-check a request (no data is loaded); raise UnlearnopsError naming the field."""
    request, problems = parse_request(read_request_document(path))
    if request is None:
        field_name, message = problems[0]
        more = f" (and {len(problems) - 1} more; run `unlearnops validate --request {path}`)" if len(problems) > 1 else ""
        raise UnlearnopsError(f"{path}: {field_name}: {message}{more}")
    return request


def request_dir(path: Path | str) -> Path:
    """The directory every path in the request is relative to (and confined in)."""
    return Path(path).resolve().parent


# ---- the data it names --------------------------------------------------------------------------

# What each role takes from a MUSE corpus: attribute -> corpus files in order of preference.
# MUSE's PrivLeak reads privleak/{forget,holdout}.json; some corpora ship only raw/ files.
CORPUS_PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "forget": {
        "forget_texts": ("raw/forget",),
        "privleak_forget": ("privleak/forget", "raw/forget"),
        "forget_verbmem": ("verbmem/forget",),
        "forget_qa": ("knowmem/forget_qa",),
        "forget_qa_icl": ("knowmem/forget_qa_icl",),
    },
    "retain": {
        "retain_texts": ("raw/retain", "privleak/retain"),
        "retain_qa": ("knowmem/retain_qa",),
        "retain_qa_icl": ("knowmem/retain_qa_icl",),
    },
    "holdout": {"holdout_texts": ("privleak/holdout", "raw/holdout")},
}
REQUIRED_PARTS = ("forget_texts", "privleak_forget", "retain_texts", "holdout_texts")

def _read_qa(path: Path) -> list[QA]:
    return [QA(**item) for item in read_records(path, ("question", "answer"))]


# What each role takes from explicit files: attribute -> (key in the request, reader).
FILE_PARTS: dict[str, dict[str, tuple[str, Callable[[Path], list]]]] = {
    "forget": {
        "forget_texts": ("texts", read_strings),
        "forget_verbmem": ("verbmem", lambda path: [VerbmemItem(**item) for item in read_records(path, ("prompt", "gt"))]),
        "forget_qa": ("qa", _read_qa),
        "forget_qa_icl": ("qa_icl", _read_qa),
    },
    "retain": {
        "retain_texts": ("texts", read_strings),
        "retain_qa": ("qa", _read_qa),
        "retain_qa_icl": ("qa_icl", _read_qa),
    },
    "holdout": {"holdout_texts": ("texts", read_strings)},
}


@dataclass
class Resolution:
    """The outcome of loading: the data (None if any part failed) and what was read or refused."""

    data: ResolvedData | None
    loaded: list[Origin]
    failures: list[tuple[str, str]]  # (field, message)


class _Resolver:
    def __init__(self, request: ForgetRequest, base: Path, workspace: Workspace | Path | str | None):
        self.request, self.base, self.workspace = request, base, workspace
        self.corpora: dict[Path, Corpus] = {}
        self.parts: dict[str, list] = {}
        self.origins: dict[str, Origin] = {}
        self.failures: list[tuple[str, str]] = []
        self.fallbacks: list[str] = []  # parts a corpus gave from a second-choice file (the stages read only the first)

    def resolve(self) -> Resolution:
        for role in CORPUS_PARTS:
            self._load_role(role, getattr(self.request, role))
        if "forget_texts" in self.parts and "privleak_forget" not in self.parts:
            self.parts["privleak_forget"] = self.parts["forget_texts"]
            self.origins["privleak_forget"] = self.origins["forget_texts"]
        loaded = list(dict.fromkeys(self.origins.values()))
        if self.failures:
            return Resolution(None, loaded, self.failures)
        data = ResolvedData(**self.parts, origins=self.origins)
        data.corpus_dir = self._single_corpus(data)
        data.in_place = self.corpora.get(data.corpus_dir) if data.corpus_dir is not None else None
        return Resolution(data, loaded, [])

    def _load_role(self, role: str, source: object) -> None:
        if isinstance(source, BenchSource):
            self._attempt(f"{role}.bench", self._from_corpus, role, self._bench_corpus, source.bench)
        elif isinstance(source, CorpusSource):
            self._attempt(f"{role}.corpus", self._from_corpus, role, self._corpus_path, source.corpus)
        else:
            for name, (key, reader) in FILE_PARTS[role].items():
                if (relative := getattr(source, key)) is not None:
                    self._attempt(f"{role}.{key}", self._from_file, name, relative, reader)

    def _attempt(self, label: str, load: Callable[..., None], *args: object) -> None:
        """Run one loader; a failure is recorded against the request field it came from."""
        try:
            load(label, *args)
        except UnlearnopsError as err:
            self.failures.append((label, str(err)))

    def _single_corpus(self, data: ResolvedData) -> Path | None:
        """The corpus directory, when forget, retain and holdout all come from that one corpus AND the stages,
        reading its files themselves, would read exactly what was validated: no second-choice file used
        (privleak/forget.json absent, say), no few-shot examples supplied. Otherwise the pipeline writes
        `to_corpus()`, so validation and the stages share one reader."""
        sources = [getattr(self.request, role) for role in CORPUS_PARTS]
        if len(self.corpora) != 1 or not all(isinstance(source, (BenchSource, CorpusSource)) for source in sources):
            return None
        (corpus_dir, corpus), = self.corpora.items()
        if self.fallbacks or data.knowmem() != corpus.knowmem:
            return None
        return corpus_dir

    def _from_file(self, label: str, name: str, relative: str, reader: Callable[[Path], list]) -> None:
        path = confined(relative, self.base, what=label)
        self.parts[name] = reader(path)
        self.origins[name] = Origin(label, path)

    def _corpus_path(self, label: str, relative: str) -> Path:
        return confined(relative, self.base, what=label)

    def _bench_corpus(self, label: str, size: str) -> Path:
        workspace = self.workspace if isinstance(self.workspace, Workspace) else Workspace.resolve(self.workspace)
        corpus_dir = workspace.bench_dir(size) / "corpus"
        if not corpus_dir.is_dir():
            # Building trains the bench models (minutes); it happens once per workspace.
            from ..bench import ensure_bench

            ensure_bench(workspace, size)
        return corpus_dir

    def _from_corpus(self, label: str, role: str, locate: Callable[[str, str], Path], where: str) -> None:
        corpus_dir = locate(label, where)
        if corpus_dir not in self.corpora:
            self.corpora[corpus_dir] = Corpus.load(corpus_dir)
        corpus = self.corpora[corpus_dir]
        for name, candidates in CORPUS_PARTS[role].items():
            found = next(((file, items) for file in candidates if (items := _corpus_part(corpus, file))), None)
            if found is None:
                if name in REQUIRED_PARTS:
                    wanted = " or ".join(f"{file}.json" for file in candidates)
                    raise UnlearnopsError(f"corpus {corpus_dir}: has no {wanted}; add it or name files with {{\"texts\": ...}}")
                continue
            file, items = found
            if file != candidates[0]:
                self.fallbacks.append(name)
            self.parts[name] = items
            self.origins[name] = Origin(f"{label}:{file}.json", corpus_dir / f"{file}.json")


def _corpus_part(corpus: Corpus, file: str) -> list | None:
    folder, name = file.split("/")
    if folder == "verbmem":
        return corpus.verbmem_forget or None
    return {"raw": corpus.raw, "knowmem": corpus.knowmem, "privleak": corpus.privleak}[folder].get(name)


def resolve_data(request: ForgetRequest, base: Path, workspace: Workspace | Path | str | None = None) -> Resolution:
    """Load the forget, retain and holdout data a request names (bench sources use the workspace)."""
    return _Resolver(request, base, workspace).resolve()
