"""The validation report: every check with pass/fail, the field, and offending items by index.

Neither the report nor the digest ever holds a forget text: checks name items by their index,
and the digest holds ids and SHA-256 hashes of files, which is what the pipeline logs to MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UnlearnopsError
from ..fileio import sha256_file

if TYPE_CHECKING:
    from ..policy import Policy
    from .loading import Origin, ResolvedData
    from .schema import ForgetRequest


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "schema", "readable", "no_forget_overlap"
    field: str  # e.g. "forget.texts", "policy_overrides.max_verbmem_f", "retain.corpus:raw/retain.json"
    passed: bool
    message: str  # what passed, or what is wrong and the fix
    offending_indices: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "field": self.field,
            "passed": self.passed,
            "message": self.message,
            "offending_indices": self.offending_indices,
        }


@dataclass
class ValidationReport:
    path: Path
    checks: list[Check]
    request: ForgetRequest | None = None
    data: ResolvedData | None = None
    policy: Policy | None = None  # the configured policy tightened by the request's overrides
    loaded: list[Origin] = field(default_factory=list)  # every data file that was read
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def raise_for_failures(self) -> None:
        """For callers that need a valid request: raise naming the first failing field and its fix."""
        if failures := self.failures:
            first = failures[0]
            more = f" (and {len(failures) - 1} more; run `unlearnops validate --request {self.path}`)" if len(failures) > 1 else ""
            raise UnlearnopsError(f"{self.path}: {first.field}: {first.message}{more}", field=first.field)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "request_file": str(self.path),
            "request_id": self.request.request_id if self.request else None,
            "checks": [check.to_json() for check in self.checks],
            "counts": self.data.counts() if self.data else {},
            "policy": self.policy.model_dump() if self.policy else None,
            "seconds": round(self.seconds, 3),
        }


def request_digest(report: ValidationReport) -> dict[str, Any]:
    """Ids and SHA-256 hashes of the request file and each data file: what the pipeline logs.

    No texts and no requester details (the request file itself is the record of those).
    """
    request = report.request
    if request is None:
        raise UnlearnopsError(f"{report.path}: the request did not pass the schema check; no digest")
    return {
        "request_id": request.request_id,
        "request_sha256": sha256_file(report.path),
        "received_at": request.received_at.isoformat(),
        "deadline": request.deadline.isoformat(),
        "legal_basis": request.legal_basis.basis,
        "model": request.model,
        "registered_model_name": request.registered_model_name,
        "sources": {role: _source_kind(getattr(request, role)) for role in ("forget", "retain", "holdout")},
        "policy_overrides": dict(request.policy_overrides),
        "files": {
            origin.field: {"sha256": sha256_file(origin.path), "items": _items(report, origin)} for origin in report.loaded
        },
        "valid": report.ok,
    }


def _source_kind(source: Any) -> str:
    if hasattr(source, "bench"):
        return f"bench:{source.bench}"
    return "corpus" if hasattr(source, "corpus") else "files"


def _items(report: ValidationReport, origin: Origin) -> int | None:
    if report.data is None:
        return None
    return next((len(getattr(report.data, name)) for name, where in report.data.origins.items() if where == origin), None)
