"""Where a request's data lives: one MUSE-layout corpus directory that every stage reads.

The request module resolves and checks the data (`ValidationReport.data`). When forget, retain
and holdout all come from one corpus (the bench, or a MUSE directory) the stages read it in
place, so a bench's bench.json stays beside it (unlearning's stopping rule and the PrivLeak
reference AUC read it). Otherwise the resolved data is laid out as a corpus under
`<stages_dir>/corpus/<sha256 of its content>`, written once, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..bench import MANIFEST, privleak_reference
from ..fileio import atomic_dir, canonical_json, sha256_bytes, sha256_tree



@dataclass(frozen=True)
class RequestData:
    corpus: Path
    corpus_sha256: str
    retrain_auc: float | None  # PrivLeak's reference: the bench's retrain model AUC, if known
    bench: Path | None  # the bench directory when the data is the embedded bench


def corpus_of(resolved, workspace) -> RequestData:
    """The corpus directory for a request's resolved data (request.ResolvedData)."""
    if resolved.corpus_dir is not None:
        corpus = Path(resolved.corpus_dir)
        bench = corpus.parent if (corpus.parent / MANIFEST).is_file() else None
        return RequestData(corpus, sha256_tree(corpus), privleak_reference(corpus), bench)
    layout = resolved.to_corpus()
    content = {
        "raw": layout.raw,
        "verbmem": [item.__dict__ for item in layout.verbmem_forget],
        "knowmem": {name: [qa.__dict__ for qa in items] for name, items in layout.knowmem.items()},
        "privleak": layout.privleak,
    }
    out = workspace.stages_dir / "corpus" / sha256_bytes(canonical_json(content))
    if not out.is_dir():
        with atomic_dir(out) as tmp:
            layout.write(tmp)
    return RequestData(out, sha256_tree(out), None, None)

