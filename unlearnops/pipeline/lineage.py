"""Sustainability: a model must keep satisfying every request its source version satisfies.

One re-check for `unlearnops run` (pipeline/evaluation.py) and `unlearnops gate --lineage`: the
forget set of each inherited request, located through the version's `unlearnops.request.<id>`
tag, is measured again with the inherited metrics of the registry (metrics.inherited()); a
forget set that is gone or changed cannot be re-checked, and the gate fails that request. The
record goes to the gate with the measurement: it holds the policy the request was accepted with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..gate import InheritedRequest
from ..metrics import inherited

# measure(request_id, forget corpus dir, its recorded sha256) -> the model's metrics on it
Measure = Callable[[str, Path, str], dict[str, Any]]


def recheck(version, measure: Measure) -> list[InheritedRequest]:
    """Every request `version` (a registry.RegisteredVersion) satisfies, measured on its forget set."""
    records = version.request_records()
    found = []
    for request_id, corpus, problem in version.forget_sets():
        record = records.get(request_id)  # with the policy the request was accepted with (policy.accepted_policy reads it)
        if problem:
            found.append(InheritedRequest(request_id, None, problem, record))
        else:
            found.append(InheritedRequest(request_id, measure(request_id, corpus, records[request_id]["corpus_sha256"]), record=record))
    return found


def rechecked_metrics() -> tuple[str, ...]:
    """The metric keys measured on an inherited request's forget set."""
    return tuple(metric.key for metric in inherited())
