"""Reading a log: a request's lineage, what is live and pending, and evidence bundles.

Pure functions over a list of records (AuditLog.records()); the callers verify the log first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..fileio import canonical_json, sha256_bytes
from .records import (
    ALIAS_MOVED,
    DEPLOYMENT_STARTED,
    DEPLOYMENT_STOPPED,
    GATE_DECIDED,
    REQUEST_CLOSED,
    REQUEST_RECEIVED,
    REQUEST_REJECTED,
    REQUEST_SUPERSEDED,
    REQUEST_VALIDATED,
    RUN_FINISHED,
    RUN_STARTED,
    VERSION_REGISTERED,
    parse_time,
    request_ids_of,
    utc_now,
)

EVIDENCE_FORMAT = "unlearnops.audit-evidence/2"


@dataclass
class Lineage:
    """Everything the log says about one request, in chronological order."""

    request_id: str
    records: list[dict] = field(default_factory=list)

    def of(self, event: str) -> list[dict]:
        return [record for record in self.records if record["event"] == event]

    def summary(self) -> dict[str, Any]:
        def fields_of(event: str) -> list[dict]:
            return [{"seq": r["seq"], "timestamp": r["timestamp"], **r["fields"]} for r in self.of(event)]

        return {
            "request_id": self.request_id,
            "received": fields_of(REQUEST_RECEIVED),
            "superseded": fields_of(REQUEST_SUPERSEDED),
            "validated": fields_of(REQUEST_VALIDATED),
            "rejected": fields_of(REQUEST_REJECTED),
            "closed": fields_of(REQUEST_CLOSED),
            "runs": _runs(self.records),
            "gates": fields_of(GATE_DECIDED),
            "versions": fields_of(VERSION_REGISTERED),
            "aliases": fields_of(ALIAS_MOVED),
            "deployments": fields_of(DEPLOYMENT_STARTED),
            "stops": fields_of(DEPLOYMENT_STOPPED),
        }


def lineage(records: Iterable[dict], request_id: str) -> Lineage:
    """The request's records and every record linked to them by run id, version or deployment.

    One chronological pass is enough: a record is always written after the one it links to.
    """
    found = Lineage(request_id)
    run_ids: set[str] = set()
    versions: set[tuple[str, str]] = set()
    deployment_ids: set[str] = set()
    for record in records:
        fields = record["fields"]
        version = (str(fields.get("name")), str(fields.get("version")))
        linked = (
            request_id in request_ids_of(fields)
            or fields.get("run_id") in run_ids
            or (record["event"] in (ALIAS_MOVED, DEPLOYMENT_STARTED) and version in versions)
            or fields.get("deployment_id") in deployment_ids
        )
        if not linked:
            continue
        found.records.append(record)
        if fields.get("run_id"):
            run_ids.add(fields["run_id"])
        if record["event"] == VERSION_REGISTERED:
            versions.add(version)
        if record["event"] == DEPLOYMENT_STARTED:
            deployment_ids.add(fields["deployment_id"])
    return found


def _runs(records: list[dict]) -> list[dict]:
    runs: dict[str, dict] = {}
    for record in records:
        if record["event"] == RUN_STARTED:
            runs[record["fields"]["run_id"]] = {"run_id": record["fields"]["run_id"], "started": record["timestamp"], "finished": None}
        elif record["event"] == RUN_FINISHED and record["fields"]["run_id"] in runs:
            runs[record["fields"]["run_id"]].update(finished=record["timestamp"], status=record["fields"].get("status"))
    return list(runs.values())


def live_deployments(records: Iterable[dict]) -> list[dict]:
    """deployment.started records with no deployment.stopped for the same deployment_id."""
    started: dict[str, dict] = {}
    for record in records:
        if record["event"] == DEPLOYMENT_STARTED:
            started[record["fields"]["deployment_id"]] = record
        elif record["event"] == DEPLOYMENT_STOPPED:
            started.pop(record["fields"]["deployment_id"], None)
    return list(started.values())


def satisfied_requests(records: list[dict], live: list[dict]) -> set[str]:
    """Requests a live deployment satisfies: those its version's registration record claims (the
    deployment's own ids for a version without one), each for the request's current content.

    A request superseded with other content (`run --supersede`) is satisfied only by a version whose
    registration names data validated for the new content: a version measured on the old content's
    data (registered before, or inheriting that claim) does not satisfy what the request now asks.
    """
    live_versions = {(str(r["fields"]["name"]), str(r["fields"]["version"])) for r in live}
    registered: dict[tuple[str, str], dict] = {}
    for record in records:
        fields = record["fields"]
        if record["event"] == VERSION_REGISTERED and (str(fields["name"]), str(fields["version"])) in live_versions:
            registered[(str(fields["name"]), str(fields["version"]))] = fields
    current = _current_data(records)
    satisfied: set[str] = set()
    for record in live:
        fields = record["fields"]
        claims = registered.get((str(fields["name"]), str(fields["version"])), fields)
        data = dict(str(item).partition("=")[::2] for item in claims.get("request_data") or ())
        satisfied |= {rid for rid in request_ids_of(claims) if rid not in current or data.get(rid) in current[rid]}
    return satisfied


def _current_data(records: Iterable[dict]) -> dict[str, set[str]]:
    """For each superseded request: the data snapshots validated for its current content."""
    content: dict[str, str | None] = {}
    validated: dict[str, list[tuple[str | None, str]]] = {}
    superseded: set[str] = set()
    for record in records:
        event, fields = record["event"], record["fields"]
        if event == REQUEST_RECEIVED:
            content[fields["request_id"]] = fields.get("request_content_sha256")
        elif event == REQUEST_SUPERSEDED:
            superseded.add(fields["request_id"])
        elif event == REQUEST_VALIDATED and fields.get("data_sha256"):
            validated.setdefault(fields["request_id"], []).append((fields.get("request_content_sha256"), fields["data_sha256"]))
    return {
        rid: {data for validated_content, data in validated.get(rid, []) if validated_content == content.get(rid)}
        for rid in superseded
    }


@dataclass
class _Request:
    """One request id's state, folded over its lifecycle records (retries and all)."""

    request_id: str
    state: str = "pending"  # pending | rejected | closed
    received: dict | None = None  # the latest request.received record
    first_seen: str | None = None
    attempts: int = 0
    reason: str | None = None
    closed_at: str | None = None


def requests(records: Iterable[dict]) -> dict[str, _Request]:
    """request id -> its state; a retried request is one entry, however many attempts it took."""
    found: dict[str, _Request] = {}
    for record in records:
        event, fields = record["event"], record["fields"]
        if event not in (REQUEST_RECEIVED, REQUEST_REJECTED, REQUEST_CLOSED):
            continue
        entry = found.setdefault(fields["request_id"], _Request(fields["request_id"]))
        if event == REQUEST_RECEIVED:
            entry.state, entry.received, entry.attempts = "pending", record, entry.attempts + 1
            entry.first_seen = entry.first_seen or record["timestamp"]
        elif event == REQUEST_REJECTED:
            entry.state, entry.reason = "rejected", ",".join(map(str, fields.get("fields") or [])) or fields.get("reason_code")
        else:
            entry.state, entry.reason, entry.closed_at = "closed", fields["reason"], record["timestamp"]
    return found


def status(records: list[dict], now: datetime | None = None) -> dict[str, Any]:
    """Live deployments, the requests they satisfy, and each received request's state, once per id."""
    live = live_deployments(records)
    satisfied = satisfied_requests(records, live)
    now = now or datetime.now(timezone.utc)
    entries = requests(records)
    return {
        "live": [{"seq": r["seq"], "timestamp": r["timestamp"], **r["fields"]} for r in live],
        "satisfied": sorted(satisfied),
        "pending": [_pending(entry, now) for entry in entries.values() if entry.state == "pending" and entry.request_id not in satisfied],
        "rejected": sorted(rid for rid, entry in entries.items() if entry.state == "rejected" and rid not in satisfied),
        "closed": [
            {"request_id": rid, "reason": entry.reason, "closed": entry.closed_at}
            for rid, entry in entries.items()
            if entry.state == "closed"
        ],
        "records": len(records),
    }


def _pending(entry: _Request, now: datetime) -> dict[str, Any]:
    fields = entry.received["fields"] if entry.received else {}
    # The request's own receipt time (its received_at) is what its deadline counts from; the
    # time unlearnops first saw it is kept beside it.
    received = fields.get("received_at") or entry.first_seen
    deadline = fields.get("deadline")
    item = {
        "request_id": entry.request_id,
        "received": received,
        "first_seen": entry.first_seen,
        "attempts": entry.attempts,
        "age_hours": round((now - parse_time(received)).total_seconds() / 3600, 2),
        "deadline": deadline,
        "hours_left": None,
        "overdue": False,
    }
    if deadline:
        hours_left = (parse_time(deadline) - now).total_seconds() / 3600
        item.update(hours_left=round(hours_left, 2), overdue=hours_left < 0)
    return item


def bundle(records: list[dict], request_id: str, *, location: str, verification: dict, checkpoint_note: str | None) -> dict[str, Any]:
    """One request's evidence: its records and lineage, the verification result, the signed
    checkpoint the log was compared with, sealed by `bundle_sha256`."""
    found = lineage(records, request_id)
    created = records[0]["fields"] if records else {}
    document = {
        "format": EVIDENCE_FORMAT,
        "request_id": request_id,
        "generated": utc_now(),
        "log": location,
        "log_id": created.get("log_id"),
        "public_key": created.get("public_key"),
        "key_fingerprint": created.get("key_fingerprint"),
        # The last record verify checked and its hash; the witness's signed note commits to them.
        "chain_head": {"seq": verification["checked"], "hash": verification["head_hash"]},
        "checkpoint": checkpoint_note,
        "verification": verification,
        "lineage": found.summary(),
        "records": found.records,
    }
    document["bundle_sha256"] = bundle_digest(document)
    return document


def bundle_digest(document: dict) -> str:
    """What `bundle_sha256` must equal: SHA-256 of the canonical JSON of the rest of the bundle."""
    return sha256_bytes(canonical_json({key: value for key, value in document.items() if key != "bundle_sha256"}))
