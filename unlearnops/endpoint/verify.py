"""Is the model people talk to the one that was measured? Measure the live endpoint, compare, record.

`verify_endpoint(workspace, url, ...)`:
1. the audit log verifies, and names the live deployment at the URL (target.find_deployment);
2. the server lists that deployment's served name (`/v1/models`);
3. the MUSE metrics measured through the API (measure.py) agree with the version's registered
   evaluation within the tolerance (below);
4. a verification document (numbers, settings, per-item scores and hashes, never text) is written
   to `<workspace>/endpoint/verifications/<id>.json`, and an `endpoint.verified` or
   `endpoint.mismatch` record carrying its sha256 is appended to the audit log.

Tolerance. The same weights decoded greedily give the same tokens unless two candidates are within
the kernels' rounding of each other: vLLM's float32 CPU kernels and attention add in another order
than torch's, and a near-tie can flip one token, which changes one item's ROUGE-L. The defaults
(TOLERANCE) allow that, and nothing near what a different model does (docs/report.md has the
measurements).
"""

from __future__ import annotations

import math
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import audit, progress, provenance
from ..errors import UnlearnopsError, did_you_mean
from ..fileio import sha256_file, write_json
from ..workspace import Workspace
from . import measure, target
from .client import DEFAULT_CONCURRENCY, OpenAIEndpoint

FORMAT = "unlearnops.endpoint-verification/1"
VERIFICATIONS = Path("endpoint") / "verifications"
# metric -> the largest |measured - registered| that still counts as the same model (its scale).
TOLERANCE = {"verbmem_f": 2.0, "knowmem_f": 2.0, "knowmem_r": 2.0, "auc": 0.02}
SKIPPABLE = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")


@dataclass
class Check:
    name: str
    status: str  # passed | failed
    detail: str
    registered: float | str | None = None
    measured: float | str | None = None
    difference: float | None = None
    tolerance: float | None = None


@dataclass
class Verification:
    verification_id: str
    endpoint: str
    served_model: str | None
    deployment: dict[str, Any]
    checks: list[Check]
    measurement: measure.Measurement | None
    skipped: list[str]
    document_path: Path | None = None
    record: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(check.status == "passed" for check in self.checks)

    @property
    def event(self) -> str:
        return audit.ENDPOINT_VERIFIED if self.passed else audit.ENDPOINT_MISMATCH

    def to_dict(self) -> dict[str, Any]:
        measured = self.measurement
        return {
            "format": FORMAT,
            "verification_id": self.verification_id,
            "verified_at": audit.utc_now(),
            "endpoint": self.endpoint,
            "served_model": self.served_model,
            "passed": self.passed,
            "deployment": {key: self.deployment.get(key) for key in (
                "deployment_id", "name", "version", "served_model_name", "host", "port", "route", "dtype", "artifact_sha256",
                "served_sha256", "timestamp")},
            "checks": [asdict(check) for check in self.checks],
            "skipped": self.skipped,
            "tolerance": self.extra.get("tolerance", TOLERANCE),
            "measured": None if measured is None else {
                "values": measured.values, "counts": measured.counts, "seconds": measured.seconds, "requests": measured.requests,
                "concurrency": measured.concurrency,
            },
            "items": [] if measured is None else measured.items,
            **self.extra,
        }


def verify_endpoint(
    workspace: Workspace,
    url: str,
    *,
    api_key: str | None = None,
    request_id: str | None = None,
    deployment_id: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    skip: tuple[str, ...] = (),
    tokenizer: Path | None = None,
    tolerance: dict[str, float] | None = None,
    show_progress: bool = False,
) -> Verification:
    """Measure the endpoint, compare with the registered evaluation, record the result (see module doc)."""
    tolerances = tolerance_of(tolerance)
    for name in skip:
        if name not in SKIPPABLE:
            raise UnlearnopsError(f"--skip {name}: not a metric; choose from {', '.join(SKIPPABLE)}", exit_code=2)
    records = target.verified_records(workspace)
    if deployment_id:  # the log alone answers: refuse a stopped or unknown deployment before calling the server
        target.find_deployment(records, url, [], deployment_id)
    with OpenAIEndpoint(url, api_key=api_key, concurrency=concurrency) as endpoint:
        listed = endpoint.models()
        deployment = target.find_deployment(records, endpoint.url, [str(item.get("id")) for item in listed], deployment_id)
        _check_request(deployment, records, request_id)
        verification = Verification(uuid.uuid4().hex, endpoint.url, None, deployment, [], None, sorted(skip))
        verification.extra["tolerance"] = tolerances
        server = _identify(verification, listed)
        if server is not None:  # the served name matches: measure what answers under it
            goal = target.resolve_target(workspace, records, deployment, skip=skip)
            _measure(verification, goal, endpoint, server, tokenizer, workspace, show_progress)
            verification.checks += compare(goal, verification.measurement, tolerances)
    return record(workspace, verification, deployment)


def _identify(verification: Verification, listed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The served-name check: the server must list the name the deployment was recorded under."""
    deployment = verification.deployment
    name = deployment.get("served_model_name") or f"{deployment['name']}/{deployment['version']}"
    server = next((item for item in listed if item.get("id") == name), None)
    verification.extra["server"] = _server_facts(server)
    served = [str(item.get("id")) for item in listed]
    if server is None:
        verification.checks.append(Check("served_model", "failed", f"the endpoint lists {served}, not {name}, which deployment "
                                         f"{deployment['deployment_id']} recorded", registered=name, measured=", ".join(served)))
        return None
    verification.served_model = name
    verification.checks.append(Check("served_model", "passed", f"the endpoint serves {name}", registered=name, measured=name))
    return server


def _measure(verification: Verification, goal: target.Target, endpoint: OpenAIEndpoint, server: dict[str, Any],
             tokenizer: Path | None, workspace: Workspace, show_progress: bool) -> None:
    """Build the registered evaluation's requests, send them, score them (verification.measurement)."""
    from ..corpus import Corpus

    name = verification.served_model
    progress.note(f"{goal.version.ref} at {endpoint.url}: measuring {', '.join(k for k in goal.registered if k != 'auc')} on request "
                  f"{goal.evaluated_request}'s forget set (limit {goal.limit or 'none'}), {endpoint.concurrency} requests in flight",
                  label="verify-endpoint", enabled=show_progress)
    with tempfile.TemporaryDirectory(prefix="unlearnops-tokenizer-") as scratch:
        model_dir = tokenizer or target.fetch_tokenizer(goal.version, provenance.tracking_uri(workspace), Path(scratch))
        tok, model = measure.load_tokenizer(model_dir)
        metrics = [key for key in measure.MEASURABLE if key in goal.registered or (key == "privleak" and "auc" in goal.registered)]
        jobs = measure.plan_jobs(Corpus.load(goal.corpus), metrics, tok, model, goal.limit)
    measure.check_fits(jobs, server.get("max_model_len"), endpoint.url)
    with progress.task(f"endpoint {name}", len(jobs), enabled=show_progress) as bar:
        verification.measurement = measure.measure(endpoint, name, jobs, retrain_auc=goal.retrain_auc,
                                                   max_model_len=server.get("max_model_len"), on_done=bar.advance)
    verification.extra["registered"] = {
        "version": goal.version.ref, "run_id": goal.version.run_id, "gate_report_sha256": goal.version.gate_report_sha256,
        "values": goal.registered, "counts": goal.counts, "limit": goal.limit, "retrain_auc": goal.retrain_auc,
        "evaluated_request": goal.evaluated_request, "request_data": goal.request_data,
    }


def tolerance_of(overrides: dict[str, float] | None) -> dict[str, float]:
    """The default tolerances with the operator's overrides (each named metric, a non-negative number)."""
    chosen = dict(TOLERANCE)
    for key, value in (overrides or {}).items():
        if key not in TOLERANCE:
            raise UnlearnopsError(f"--tolerance {key}: not a checked metric; {did_you_mean(key, TOLERANCE)}choose from {', '.join(TOLERANCE)}",
                                  exit_code=2)
        if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            raise UnlearnopsError(f"--tolerance {key}={value}: must be a number >= 0", exit_code=2)
        chosen[key] = float(value)
    return chosen


def compare(goal: target.Target, measured: measure.Measurement, tolerances: dict[str, float] = TOLERANCE) -> list[Check]:
    checks = []
    for key, registered in goal.registered.items():
        if key == "privleak":
            continue  # PrivLeak is a fixed function of the AUC and the retrain AUC: its check is the AUC's
        value = measured.values.get(key)
        tolerance = tolerances[key]
        if value is None:
            checks.append(Check(key, "failed", "not measured at the endpoint", registered=registered, tolerance=tolerance))
            continue
        difference = value - registered
        ok = abs(difference) <= tolerance
        counts = measured.counts.get(key) or measured.counts.get("privleak_forget")
        detail = (f"{'within' if ok else 'beyond'} ±{tolerance:g} of the registered evaluation "
                  f"({counts} item{'s' if counts != 1 else ''}{' per split' if key == 'auc' else ''})")
        checks.append(Check(key, "passed" if ok else "failed", detail, registered, value, difference, tolerance))
    return checks


def record(workspace: Workspace, verification: Verification, deployment: dict[str, Any]) -> Verification:
    """Write the verification document, then the audit record carrying its hash."""
    path = workspace.root / VERIFICATIONS / f"{verification.verification_id}.json"
    write_json(path, verification.to_dict())
    verification.document_path = path
    verification.record = audit.AuditLog(workspace.audit_log).append(
        verification.event,
        verification_id=verification.verification_id,
        verification_sha256=sha256_file(path),
        deployment_id=deployment["deployment_id"],
        name=deployment["name"],
        version=str(deployment["version"]),
        request_ids=sorted(deployment.get("request_ids") or []),
        endpoint=verification.endpoint,
        served_model_name=deployment.get("served_model_name"),
        failed_checks=[check.name for check in verification.checks if check.status == "failed"],
        skipped_checks=verification.skipped,
        requests=verification.measurement.requests if verification.measurement else 0,
    )
    return verification


def _check_request(deployment: dict[str, Any], records: list[dict], request_id: str | None) -> None:
    if request_id is None:
        return
    registered = provenance.registrations(records).get((str(deployment["name"]), str(deployment["version"]))) or {}
    satisfied = set(deployment.get("request_ids") or []) | set(registered.get("request_ids") or [])
    if request_id not in satisfied:
        raise UnlearnopsError(
            f"--request {request_id}: the version deployed there ({deployment['name']}/{deployment['version']}) does not satisfy "
            f"it (it satisfies {', '.join(sorted(satisfied)) or 'no request'})"
        )


def _server_facts(server: dict[str, Any] | None) -> dict[str, Any] | None:
    if server is None:
        return None
    return {key: server.get(key) for key in ("id", "owned_by", "root", "max_model_len") if key in server}
