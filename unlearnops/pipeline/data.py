"""Where a request's data lives: the content-addressed snapshot of what validation accepted.

The request module resolves and checks the data (`ValidationReport.data`, in memory); the
snapshot (evidence/snapshot.py) writes exactly that content, in MUSE's layout, under
`<workspace>/data/<sha256>/corpus/`, with the bench's bench.json beside it when the data is a
bench (unlearning's stopping rule and the PrivLeak reference AUC read it there). Every stage
reads the snapshot, never the request's files again, and `corpus` re-hashes it each time a
stage asks for it, refusing (naming the file) if it changed since validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..bench import MANIFEST, privleak_reference
from ..evidence import snapshot as snapshots


@dataclass(frozen=True)
class RequestData:
    snapshot: snapshots.Snapshot
    retrain_auc: float | None  # PrivLeak's reference: the bench's retrain model AUC, if known
    bench: Path | None  # the bench directory when the data is a bench

    @property
    def corpus(self) -> Path:
        """The snapshot's corpus directory, checked to hold exactly the validated content."""
        self.snapshot.check()
        return self.snapshot.corpus

    @property
    def corpus_sha256(self) -> str:
        return self.snapshot.sha256


def corpus_of(resolved, workspace) -> RequestData:
    """Snapshot a request's resolved data (request.ResolvedData, as validated)."""
    source = Path(resolved.corpus_dir) if resolved.corpus_dir is not None else None
    bench = source.parent if source is not None and (source.parent / MANIFEST).is_file() else None
    taken = snapshots.take(resolved, workspace, bench=bench)
    # The snapshot keeps a bench's bench.json beside its corpus, where privleak_reference reads it.
    return RequestData(taken, privleak_reference(taken.corpus), bench)
