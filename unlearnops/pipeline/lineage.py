"""Sustainability: a model must keep satisfying every request its source version satisfies.

One re-check for `unlearnops run` (pipeline/evaluation.py) and `unlearnops gate --lineage`: the
requests a version satisfies are those its signed registration record claims, and each one's
forget set is its validated data snapshot, found by the hash in that record
(evidence.Evidence.validated_data); it is measured again with the inherited metrics of the
registry (metrics.inherited()). A snapshot that is gone or changed cannot be re-checked, and the
gate fails that request.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..gate import InheritedRequest
from ..metrics import inherited

# measure(request_id, forget corpus dir, its recorded sha256) -> the model's metrics on it
Measure = Callable[[str, Path, str], dict[str, Any]]


def recheck(evidence, registration, measure: Measure) -> list[InheritedRequest]:
    """Every request a version's signed registration record (evidence.Registration) claims, measured on its forget set."""
    found = []
    for request_id, snapshot, problem in evidence.validated_data(registration):
        if problem:
            found.append(InheritedRequest(request_id, None, problem))
        else:
            found.append(InheritedRequest(request_id, measure(request_id, snapshot.corpus, snapshot.sha256)))
    return found


def rechecked_metrics() -> tuple[str, ...]:
    """The metric keys measured on an inherited request's forget set."""
    return tuple(metric.key for metric in inherited())
