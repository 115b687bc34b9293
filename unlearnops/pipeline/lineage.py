"""Sustainability: a model must keep satisfying every request its source version satisfies.

One re-check for `unlearnops run` (pipeline/evaluation.py) and `unlearnops gate --lineage`: the
requests a version satisfies are those its signed registration record claims, and each one's
forget set is its validated data snapshot, found by the hash in that record
(evidence.Evidence.validated_data); it is measured again with the inherited metrics of the
registry (metrics.inherited()). A snapshot that is gone or changed cannot be re-checked, and the
gate fails that request. The registry record of each request goes to the gate with the
measurement: it holds the policy the request was accepted with, used only where its hash is the
one the signed record holds (evidence.Evidence.accepted_policies); an edited one fails the request.
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
    policies = evidence.accepted_policies(registration)
    for request_id, snapshot, problem in evidence.validated_data(registration):
        record, policy_problem = policies.get(request_id, (None, None))
        problem = problem or policy_problem
        if problem:
            found.append(InheritedRequest(request_id, None, problem, record))
        else:
            found.append(InheritedRequest(request_id, measure(request_id, snapshot.corpus, snapshot.sha256), record=record))
    return found


def rechecked_metrics() -> tuple[str, ...]:
    """The metric keys measured on an inherited request's forget set."""
    return tuple(metric.key for metric in inherited())
