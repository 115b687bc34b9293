"""Everything the request report shows, gathered from the audit log and the registry (provenance.py).

`collect(workspace, request_id)` returns a `RequestReport`: plain data (JSON-serialisable, what
`unlearnops report --json` prints), built only from records and attested documents:

- the request: its id, dates and legal basis (the run's request digest, checked against the
  `request.received` hash), its requester (only from a request file whose sha256 is that hash),
  and its status (live, registered, pending, rejected, overdue);
- the lineage: source version -> the version made for this request -> its deployments, with dates;
- whether the audit log and its registry anchors verify;
- the evidence: the MUSE metrics of the source, the retrain reference, the unlearned model at full
  precision and the model that ships, against the gate's thresholds (the attested gate report),
  the quantization gap, the sample sizes, and every later version that still satisfies the request;
- the endpoint verifications (`endpoint.verified` / `endpoint.mismatch` and their documents).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import audit, provenance
from .. import metrics as metric_registry
from ..errors import UnlearnopsError
from ..fileio import read_json, sha256_file
from ..workspace import Workspace

# The four models the evidence table compares, in reading order.
ROLES = ("source", "retrain", "full_precision", "quantized")
ROLE_LABELS = {
    "source": "Original model (before unlearning)",
    "retrain": "Reference: a model never trained on the data",
    "full_precision": "Unlearned model, full precision",
    "quantized": "Unlearned model as shipped (4-bit)",
}
METRICS = tuple(metric_registry.METRICS)  # every metric the tool measures and gates, in the registry's order
ENDPOINT_EVENTS = (audit.ENDPOINT_VERIFIED, audit.ENDPOINT_MISMATCH)


@dataclass
class RequestReport:
    request: dict[str, Any]
    audit: dict[str, Any]
    lineage: dict[str, Any]
    evidence: dict[str, Any] | None
    later_versions: list[dict[str, Any]]
    endpoint_checks: list[dict[str, Any]]
    generated_at: str
    workspace: str
    problems: list[str] = field(default_factory=list)  # what could not be shown, and why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def gate_passed(self) -> bool | None:
        return None if self.evidence is None else self.evidence["gate"]["passed"]


def collect(workspace: Workspace, request_id: str, *, request_file: Path | None = None,
            now: datetime | None = None) -> RequestReport:
    log = provenance.audit_log(workspace)
    if not log.path.exists():
        raise UnlearnopsError(f"audit log {log.path}: not found; run a request first (`unlearnops run --request FILE`) or pass --workspace")
    verification = provenance.verify_log(workspace)
    records = _readable_records(log)
    received = [r for r in records if r["event"] == audit.REQUEST_RECEIVED and r["fields"].get("request_id") == request_id]
    if not received:
        raise UnlearnopsError(f"--request {request_id}: no request.received record in {log.path}; check the id (`unlearnops audit status`)")
    uri = provenance.tracking_uri(workspace)
    problems: list[str] = []
    own = _own_version(records, request_id, uri)
    # Nothing registered: the last gate that decided on this request (a failed one) is still the evidence.
    gated = own or _last_gated_run(records, request_id, uri)
    request = _request(records, received, request_id, gated, uri, request_file, now or datetime.now(timezone.utc), problems)
    lineage = _lineage(records, own, uri) if own else {"source": None, "version": None, "deployments": []}
    evidence = _evidence(gated, workspace, records, request.get("forget_source"), problems) if gated else None
    later = _later_versions(records, request_id, own, uri) if own else []
    if own is None:
        problems.append("no version has been registered for this request" + (
            ": its release gate did not pass" if evidence and not evidence["gate"]["passed"] else " yet"))
    return RequestReport(
        request=request, audit=_audit_summary(verification), lineage=lineage, evidence=evidence, later_versions=later,
        endpoint_checks=_endpoint_checks(records, request_id, workspace, problems), generated_at=audit.utc_now(),
        workspace=str(workspace.root), problems=problems,
    )


def _readable_records(log: audit.AuditLog) -> list[dict]:
    """The records up to the first damaged line: a report on a damaged log shows what it can, and says so."""
    try:
        return log.records()
    except UnlearnopsError:
        good = []
        for line in log.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                break
            if not (isinstance(record, dict) and isinstance(record.get("fields"), dict) and isinstance(record.get("event"), str)):
                break
            good.append(record)
        return good


# ---- the request ---------------------------------------------------------------------------------
def _request(records: list[dict], received: list[dict], request_id: str, own: provenance.VersionEvidence | None, uri: str,
             request_file: Path | None, now: datetime, problems: list[str]) -> dict[str, Any]:
    first = received[-1]
    digest = provenance.request_digest(uri, own.run_id, request_id, records) if own and own.run_id else None
    info: dict[str, Any] = {
        "request_id": request_id,
        "request_sha256": first["fields"].get("request_sha256"),
        "recorded": first["timestamp"],
        "received_at": first["fields"].get("received_at") or (digest or {}).get("received_at"),
        "deadline": first["fields"].get("deadline") or (digest or {}).get("deadline"),
        "legal_basis": (digest or {}).get("legal_basis"),
        "legal_reference": None,
        "requester": None,
        "requester_contact": None,
        "request_file_checked": False,
        "forget_source": ((digest or {}).get("sources") or {}).get("forget"),  # e.g. "bench:tiny", "corpus", "files"
    }
    if request_file is not None:
        info.update(_from_request_file(request_file, info["request_sha256"], request_id))
    info.update(_status(records, request_id, info["deadline"], now))
    return info


def _from_request_file(path: Path, expected_sha: str | None, request_id: str) -> dict[str, Any]:
    from ..request import load_request

    digest = sha256_file(path) if Path(path).is_file() else None
    if digest is None:
        raise UnlearnopsError(f"--request-file {path}: not a file")
    if digest != expected_sha:
        raise UnlearnopsError(
            f"--request-file {path}: sha256 {digest[:12]}... is not the {str(expected_sha)[:12]}... the audit log recorded when "
            f"request {request_id} was received; pass the request file as it was received"
        )
    request = load_request(path)
    return {
        "requester": request.requester.name, "requester_contact": request.requester.contact,
        "legal_basis": request.legal_basis.basis, "legal_reference": request.legal_basis.reference,
        "received_at": request.received_at.isoformat(), "deadline": request.deadline.isoformat(), "request_file_checked": True,
    }


def _status(records: list[dict], request_id: str, deadline: str | None, now: datetime) -> dict[str, Any]:
    live = audit.live_deployments(records)
    satisfying_versions = {
        (str(r["fields"]["name"]), str(r["fields"]["version"]))
        for r in records if r["event"] == audit.VERSION_REGISTERED and request_id in audit.request_ids_of(r["fields"])
    }
    live_here = [r for r in live if (str(r["fields"]["name"]), str(r["fields"]["version"])) in satisfying_versions
                 or request_id in audit.request_ids_of(r["fields"])]
    rejected = any(r["event"] == audit.REQUEST_REJECTED and request_id in audit.request_ids_of(r["fields"]) for r in records)
    first_served = next((r["timestamp"] for r in records if r["event"] == audit.DEPLOYMENT_STARTED and (
        (str(r["fields"]["name"]), str(r["fields"]["version"])) in satisfying_versions)), None)
    if live_here:
        status, text = "satisfied", "satisfied: a model that meets it is being served"
    elif rejected and not satisfying_versions:
        status, text = "rejected", "rejected at validation"
    elif satisfying_versions:
        status, text = "registered", "a model that meets it is registered but not being served now"
    else:
        status, text = "pending", "pending: no model that meets it has been registered"
    overdue = False
    if deadline and status not in ("satisfied", "rejected"):
        overdue = parse_time(deadline) < now
    met_deadline = None
    if deadline and first_served:
        met_deadline = parse_time(first_served) <= parse_time(deadline)
    return {"status": status, "status_text": text, "overdue": overdue, "first_served": first_served, "deadline_met": met_deadline,
            "live_deployments": [r["fields"]["deployment_id"] for r in live_here]}


# ---- the lineage -----------------------------------------------------------------------------------
def _own_version(records: list[dict], request_id: str, uri: str) -> provenance.VersionEvidence | None:
    """The latest version registered by a run of this request (the one made for it)."""
    runs = {r["fields"]["run_id"] for r in records if r["event"] == audit.RUN_STARTED and r["fields"].get("request_id") == request_id}
    made = [r for r in records if r["event"] == audit.VERSION_REGISTERED and r["fields"].get("run_id") in runs]
    if not made:
        return None
    fields = made[-1]["fields"]
    return provenance.version_evidence(str(fields["name"]), str(fields["version"]), uri=uri, records=records)


def _last_gated_run(records: list[dict], request_id: str, uri: str) -> provenance.VersionEvidence | None:
    gates = [r for r in records if r["event"] == audit.GATE_DECIDED and request_id in audit.request_ids_of(r["fields"])
             and r["fields"].get("run_id")]
    return provenance.run_evidence(gates[-1]["fields"]["run_id"], uri=uri, records=records) if gates else None


def _lineage(records: list[dict], own: provenance.VersionEvidence, uri: str) -> dict[str, Any]:
    registered = provenance.registrations(records)
    source = own.source_version
    source_info = None
    if source and "/" in source:
        name, version = source.rsplit("/", 1)
        found = registered.get((name.removeprefix("models:/"), version)) or {}
        source_info = {"ref": source.removeprefix("models:/"), "registered": found.get("timestamp"),
                       "model_sha256": found.get("model_sha256")}
    aliases = [provenance.fields_of(r) for r in records if r["event"] == audit.ALIAS_MOVED
               and (str(r["fields"]["name"]), str(r["fields"]["version"])) == (own.name, own.version)]
    return {
        "source": source_info,
        "version": {
            "ref": own.ref, "registered": (own.registered or {}).get("timestamp"), "model_sha256": (own.registered or {}).get("model_sha256"),
            "aliases_now": own.aliases, "alias_moves": [{"alias": a["alias"], "at": a["timestamp"]} for a in aliases],
            "method": own.tags.get("unlearnops.method"), "quant_scheme": own.tags.get("unlearnops.quant_scheme"),
            "pipeline": own.tags.get("unlearnops.pipeline"), "run_id": own.run_id,
        },
        "deployments": provenance.deployments_of(records, own.name, own.version),
    }


# ---- the evidence ----------------------------------------------------------------------------------
def _evidence(own: provenance.VersionEvidence, workspace: Workspace, records: list[dict], forget_source: str | None,
              problems: list[str]) -> dict[str, Any] | None:
    report = own.gate_report
    if report is None:
        problems.append(f"the gate report of {own.ref} cannot be shown: {own.gate_problem}")
        return None
    metrics = report.get("metrics") or {}
    rows = {role: _row(metrics.get(role)) for role in ("source", "full_precision", "quantized")}
    rows["retrain"] = _retrain_row(own, workspace, records, forget_source, problems)
    evaluation = own.evaluations.get("quantized") or {}
    checks = report.get("checks") or []
    return {
        "version": own.ref,
        "registered": bool(own.name),
        "gate": {"passed": bool(report.get("passed")), "decision": report.get("decision"), "checks": checks,
                 "report_sha256": own.gate_report_sha256},
        "policy": report.get("policy") or {},
        "rows": {role: rows[role] for role in ROLES},
        "quantization_gap": {key: _gap(rows, key) for key in METRICS},
        "counts": evaluation.get("counts") or {},
        "settings": evaluation.get("settings") or {},
        "retrain_auc": evaluation.get("retrain_auc"),
        "privleak_reference": report.get("privleak_reference"),  # the gate's: retrain AUC, its uncertainty, too_small
        "precision": {role: (metrics.get(role) or {}).get("precision") for role in ("source", "full_precision", "quantized")},
    }


def _row(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(values, dict):
        return None
    return {key: values.get(key) for key in (*METRICS, "auc")}


def _retrain_row(own: provenance.VersionEvidence, workspace: Workspace, records: list[dict], forget_source: str | None,
                 problems: list[str]) -> dict[str, Any] | None:
    """The never-trained reference: the bench's retrain model, recorded in its bench.json beside the corpus."""
    from ..bench import recorded_metrics

    request_id = own.own_request
    corpus = provenance.forget_corpus(workspace, records, own.name, own.version, request_id)[0] if request_id and own.name else None
    if corpus is not None:
        bench = corpus.parent  # a bench's snapshot keeps its bench.json beside its corpus
    elif (forget_source or "").startswith("bench:"):  # not registered: the request digest names the bench
        bench = workspace.bench_dir(forget_source.split(":", 1)[1])
    else:
        bench = None
    recorded = recorded_metrics(bench, "retrain") if bench is not None and bench.is_dir() else {}
    if not recorded:
        problems.append("no retrain reference model is recorded for this corpus (only the embedded bench has one): "
                        "the 'never trained' row shows only the reference AUC PrivLeak is measured against")
        auc = (own.evaluations.get("quantized") or {}).get("retrain_auc")
        return {"verbmem_f": None, "knowmem_f": None, "knowmem_r": None, "privleak": 0.0 if auc else None, "auc": auc}
    return {"verbmem_f": recorded.get("verbmem_f"), "knowmem_f": recorded.get("knowmem_f"), "knowmem_r": recorded.get("knowmem_r"),
            "privleak": 0.0 if recorded.get("auc") else None, "auc": recorded.get("auc")}


def _gap(rows: dict[str, dict | None], key: str) -> float | None:
    quantized, full = (rows.get("quantized") or {}).get(key), (rows.get("full_precision") or {}).get(key)
    return quantized - full if isinstance(quantized, (int, float)) and isinstance(full, (int, float)) else None


def _later_versions(records: list[dict], request_id: str, own: provenance.VersionEvidence, uri: str) -> list[dict[str, Any]]:
    """Every version registered after the request's own that still lists it, with its re-check of this request."""
    later = []
    seen_own = False
    for record in records:
        if record["event"] != audit.VERSION_REGISTERED:
            continue
        fields = record["fields"]
        key = (str(fields["name"]), str(fields["version"]))
        if key == (own.name, own.version):
            seen_own = True
            continue
        if not seen_own or request_id not in audit.request_ids_of(fields):
            continue
        version = provenance.version_evidence(*key, uri=uri, records=records)
        inherited = [c for c in ((version.gate_report or {}).get("checks") or []) if c.get("name", "").startswith(f"inherited.{request_id}.")]
        later.append({
            "ref": version.ref, "registered": record["timestamp"], "gate_passed": (version.gate_report or {}).get("passed"),
            "made_for": version.own_request, "aliases_now": version.aliases, "checks": inherited,
            "problem": version.gate_problem,
            "deployments": provenance.deployments_of(records, *key),
        })
    return later


# ---- the endpoint -------------------------------------------------------------------------------
def _endpoint_checks(records: list[dict], request_id: str, workspace: Workspace, problems: list[str]) -> list[dict[str, Any]]:
    """The latest verification of each endpoint that serves a version satisfying the request, newest first."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record["event"] not in ENDPOINT_EVENTS or request_id not in audit.request_ids_of(record["fields"]):
            continue
        fields = record["fields"]
        entry = {**provenance.fields_of(record), "passed": record["event"] == audit.ENDPOINT_VERIFIED, "document": None}
        path = workspace.root / "endpoint" / "verifications" / f"{fields.get('verification_id')}.json"
        if path.is_file() and sha256_file(path) == fields.get("verification_sha256"):
            entry["document"] = read_json(path)
        elif path.is_file():
            problems.append(f"endpoint verification {fields.get('verification_id')}: its document {path} changed after it was recorded")
        latest[(str(fields.get("endpoint")), str(fields.get("deployment_id")))] = entry
    return sorted(latest.values(), key=lambda entry: entry["timestamp"], reverse=True)


def parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _audit_summary(verification: dict[str, Any]) -> dict[str, Any]:
    summary = {"key_fingerprint": None, "checkpoint": None, **verification, "anchored": bool(verification.get("versions_checked"))}
    return summary
