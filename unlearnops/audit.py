"""The compliance audit log: append-only, hash-chained JSON Lines of ids and hashes.

Each line is one record::

    {"seq": 7, "timestamp": "2026-11-27T22:55:01.123456Z", "event": "gate.decided",
     "fields": {"run_id": "...", "passed": true, "gate_report_sha256": "..."},
     "prev": "<hash of record 6>", "hash": "<sha256 of this record without 'hash'>"}

`hash` is SHA-256 over the record's canonical JSON (fileio.canonical_json: sorted keys, no
whitespace, UTF-8) without the `hash` key; `prev` is the previous record's `hash` (64 zeros for
the first). Editing, deleting, inserting or reordering any record breaks the chain at that
record, and `verify` names it. Field values are restricted to ids, hashes, integers, booleans
and lists of ids, so the canonical form coincides with RFC 8785 (JCS) output: the two differ only
on floats (JCS prints ECMAScript numbers, 1.0 -> 1) and on non-ASCII keys (JCS sorts by UTF-16
code units), and neither can occur here.

The log never carries the forgotten text: a field value longer than 256 characters is refused.
Appends from several processes are serialised by a file lock around read-head + append + fsync.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UnlearnopsError, did_you_mean
from .fileio import canonical_json, parse_json, sha256_bytes

GENESIS = "0" * 64
MAX_VALUE_CHARS = 256
MAX_LIST_ITEMS = 1024
LOCK_TIMEOUT_S = 60.0
AUDIT_HEAD_TAG = "unlearnops.audit_head"
EVIDENCE_FORMAT = "unlearnops.audit-evidence/1"

REQUEST_RECEIVED = "request.received"
REQUEST_VALIDATED = "request.validated"
REQUEST_REJECTED = "request.rejected"
RUN_STARTED = "run.started"
RUN_FINISHED = "run.finished"
GATE_DECIDED = "gate.decided"
VERSION_REGISTERED = "version.registered"
ALIAS_MOVED = "alias.moved"
DEPLOYMENT_STARTED = "deployment.started"
DEPLOYMENT_STOPPED = "deployment.stopped"
ENDPOINT_VERIFIED = "endpoint.verified"  # unlearnops verify-endpoint: the live endpoint measured as registered
ENDPOINT_MISMATCH = "endpoint.mismatch"  # ... or not (the record names the failed checks)

# The one list of events: name -> the fields every record of it must carry (others are allowed).
# status/show link records through these ids, so a record without them would be invisible there.
EVENTS: dict[str, tuple[str, ...]] = {
    REQUEST_RECEIVED: ("request_id",),
    REQUEST_VALIDATED: ("request_id",),
    REQUEST_REJECTED: ("request_id",),
    RUN_STARTED: ("run_id",),
    RUN_FINISHED: ("run_id",),
    GATE_DECIDED: ("passed", "gate_report_sha256"),
    VERSION_REGISTERED: ("name", "version"),
    ALIAS_MOVED: ("name", "alias", "version"),
    DEPLOYMENT_STARTED: ("deployment_id", "name", "version"),
    DEPLOYMENT_STOPPED: ("deployment_id",),
    ENDPOINT_VERIFIED: ("deployment_id", "name", "version", "verification_sha256"),
    ENDPOINT_MISMATCH: ("deployment_id", "name", "version", "verification_sha256"),
}

RECORD_KEYS = frozenset({"seq", "timestamp", "event", "fields", "prev", "hash"})
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    first_bad_seq: int | None = None
    reason: str | None = None
    checked: int = 0
    head_hash: str | None = None
    versions_checked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _ChainError(Exception):
    seq: int
    reason: str


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
            "validated": fields_of(REQUEST_VALIDATED),
            "rejected": fields_of(REQUEST_REJECTED),
            "runs": _runs(self.records),
            "gates": fields_of(GATE_DECIDED),
            "versions": fields_of(VERSION_REGISTERED),
            "aliases": fields_of(ALIAS_MOVED),
            "deployments": fields_of(DEPLOYMENT_STARTED),
            "stops": fields_of(DEPLOYMENT_STOPPED),
        }


def _runs(records: list[dict]) -> list[dict]:
    runs: dict[str, dict] = {}
    for record in records:
        if record["event"] == RUN_STARTED:
            runs[record["fields"]["run_id"]] = {"run_id": record["fields"]["run_id"], "started": record["timestamp"], "finished": None}
        elif record["event"] == RUN_FINISHED and record["fields"]["run_id"] in runs:
            runs[record["fields"]["run_id"]].update(finished=record["timestamp"], status=record["fields"].get("status"))
    return list(runs.values())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def record_hash(record: dict) -> str:
    return sha256_bytes(canonical_json({key: value for key, value in record.items() if key != "hash"}))


def request_ids_of(fields: dict) -> set[str]:
    """The request ids a record names, whether as `request_id` or as a `request_ids` list."""
    ids = set(fields.get("request_ids") or ())
    if fields.get("request_id"):
        ids.add(fields["request_id"])
    return ids


class AuditLog:
    """An append-only, hash-chained JSON Lines file; safe for concurrent writers (file lock)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    # ---- writing -----------------------------------------------------------------------------
    def append(self, event: str, **fields: Any) -> dict:
        """Append one record and return it (with seq, prev and hash); durable when this returns."""
        from filelock import FileLock, Timeout

        _check_event(event, fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.lock_path), timeout=LOCK_TIMEOUT_S):
                last = self._last_record()
                record = {
                    "seq": last["seq"] + 1 if last else 1,
                    "timestamp": utc_now(),
                    "event": event,
                    "fields": fields,
                    "prev": last["hash"] if last else GENESIS,
                }
                record["hash"] = record_hash(record)
                self._write_line(canonical_json(record) + b"\n")
        except Timeout:
            raise UnlearnopsError(
                f"{self.lock_path}: another process has held the audit lock for {LOCK_TIMEOUT_S:.0f} s; "
                "retry, or remove the lock file if no unlearnops process is running"
            ) from None
        return record

    def _write_line(self, line: bytes) -> None:
        # O_APPEND + one write + fsync: the line is on disk, whole, before the lock is released.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _last_record(self) -> dict | None:
        """The tail record, checked to be whole: appending after a torn line would hide it."""
        tail = _tail_line(self.path)
        if tail is None:
            return None
        text, complete = tail
        try:
            record = _parse_record(text, seq_hint=0)
        except _ChainError:
            complete = False
        if not complete or record_hash(record) != record["hash"]:
            raise UnlearnopsError(
                f"{self.path}: the last record is damaged (truncated or edited); run `unlearnops audit verify` "
                "and restore the log from a backup before appending"
            )
        return record

    # ---- reading -----------------------------------------------------------------------------
    def records(self) -> list[dict]:
        """Every record, parsed; raises if a line is not a record (use verify() to locate damage)."""
        result = []
        for number, text in enumerate(self._lines(), start=1):
            try:
                result.append(_parse_record(text, seq_hint=number))
            except _ChainError as err:
                raise UnlearnopsError(f"{self.path}: line {number}: {err.reason}; run `unlearnops audit verify`") from None
        return result

    def _lines(self) -> Iterator[str]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip("\n")

    def head_hash(self) -> str:
        """The hash of the last record (GENESIS for an empty log): the value stamped on versions."""
        last = self._last_record()
        return last["hash"] if last else GENESIS

    # ---- verification ------------------------------------------------------------------------
    def verify(self, tracking_uri: str | None = None) -> VerifyResult:
        """Walk the chain; name the first record that was edited, deleted, inserted or reordered.

        With a tracking URI, also check that every registered model version's
        `unlearnops.audit_head` tag names a record of this chain (catches a truncated or
        replaced log, which the chain alone cannot show).
        """
        hashes: set[str] = set()
        previous_hash, checked = GENESIS, 0
        try:
            for position, text in enumerate(self._lines(), start=1):
                record = _parse_record(text, seq_hint=position)
                _check_link(record, position, previous_hash)
                hashes.add(record["hash"])
                previous_hash, checked = record["hash"], position
        except _ChainError as err:
            return VerifyResult(False, err.seq, err.reason, checked, previous_hash if checked else None)
        head = previous_hash if checked else GENESIS
        if tracking_uri is None:
            return VerifyResult(True, None, None, checked, head)
        bad_version, versions_checked = _check_registry_anchors(tracking_uri, hashes | {GENESIS})
        if bad_version:
            return VerifyResult(False, None, bad_version, checked, head, versions_checked)
        return VerifyResult(True, None, None, checked, head, versions_checked)

    # ---- queries -----------------------------------------------------------------------------
    def lineage(self, request_id: str) -> Lineage:
        """The request's records and every record linked to them by run id, version or deployment.

        One chronological pass is enough: a record is always written after the one it links to.
        """
        lineage = Lineage(request_id)
        run_ids: set[str] = set()
        versions: set[tuple[str, str]] = set()
        deployment_ids: set[str] = set()
        for record in self.records():
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
            lineage.records.append(record)
            if fields.get("run_id"):
                run_ids.add(fields["run_id"])
            if record["event"] == VERSION_REGISTERED:
                versions.add(version)
            if record["event"] == DEPLOYMENT_STARTED:
                deployment_ids.add(fields["deployment_id"])
        return lineage

    def evidence_bundle(self, request_id: str, tracking_uri: str | None = None) -> dict[str, Any]:
        """One request's records, the lineage, the verification result and the chain head, sealed
        by `bundle_sha256` (SHA-256 of the bundle's canonical JSON without that key)."""
        lineage = self.lineage(request_id)
        if not lineage.records:
            raise UnlearnopsError(f"--request {request_id}: no record in {self.path} names this request; check the id")
        verification = self.verify(tracking_uri)
        bundle = {
            "format": EVIDENCE_FORMAT,
            "request_id": request_id,
            "generated": utc_now(),
            "log": str(self.path),
            # The last record verify checked and its hash: the anchor a reviewer compares later.
            "chain_head": {"seq": verification.checked, "hash": verification.head_hash},
            "verification": verification.to_dict(),
            "lineage": lineage.summary(),
            "records": lineage.records,
        }
        bundle["bundle_sha256"] = bundle_digest(bundle)
        return bundle

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """Live deployments, the requests they satisfy, and received requests still pending."""
        records = self.records()
        live = live_deployments(records)
        satisfied = _satisfied_requests(records, live)
        closed = {rid for r in records if r["event"] == REQUEST_REJECTED for rid in request_ids_of(r["fields"])}
        now = now or datetime.now(timezone.utc)
        pending = [
            _pending_entry(record, now)
            for record in records
            if record["event"] == REQUEST_RECEIVED
            and record["fields"]["request_id"] not in satisfied | closed
        ]
        return {
            "live": [{"seq": r["seq"], "timestamp": r["timestamp"], **r["fields"]} for r in live],
            "satisfied": sorted(satisfied),
            "pending": pending,
            "rejected": sorted(closed - satisfied),
            "records": len(records),
        }


def bundle_digest(bundle: dict) -> str:
    """What `bundle_sha256` must equal: SHA-256 of the canonical JSON of the rest of the bundle."""
    return sha256_bytes(canonical_json({key: value for key, value in bundle.items() if key != "bundle_sha256"}))


def live_deployments(records: Iterable[dict]) -> list[dict]:
    """deployment.started records with no deployment.stopped for the same deployment_id."""
    started: dict[str, dict] = {}
    for record in records:
        if record["event"] == DEPLOYMENT_STARTED:
            started[record["fields"]["deployment_id"]] = record
        elif record["event"] == DEPLOYMENT_STOPPED:
            started.pop(record["fields"]["deployment_id"], None)
    return list(started.values())


def _satisfied_requests(records: list[dict], live: list[dict]) -> set[str]:
    live_versions = {(str(r["fields"]["name"]), str(r["fields"]["version"])) for r in live}
    satisfied: set[str] = set()
    for record in live:
        satisfied |= request_ids_of(record["fields"])
    for record in records:
        fields = record["fields"]
        if record["event"] == VERSION_REGISTERED and (str(fields["name"]), str(fields["version"])) in live_versions:
            satisfied |= request_ids_of(fields)
    return satisfied


def _pending_entry(record: dict, now: datetime) -> dict[str, Any]:
    received = _parse_time(record["timestamp"])
    deadline = record["fields"].get("deadline")
    entry = {
        "request_id": record["fields"]["request_id"],
        "received": record["timestamp"],
        "age_hours": round((now - received).total_seconds() / 3600, 2),
        "deadline": deadline,
        "hours_left": None,
        "overdue": False,
    }
    if deadline:
        hours_left = (_parse_time(deadline) - now).total_seconds() / 3600
        entry.update(hours_left=round(hours_left, 2), overdue=hours_left < 0)
    return entry


def _parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; a naive value is taken as UTC, a bare date as its start."""
    try:
        parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise UnlearnopsError(f"audit time '{text}': not an ISO 8601 date or date-time (e.g. 2026-12-31T00:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# ---- validation of what goes in -------------------------------------------------------------
def _check_event(event: str, fields: dict[str, Any]) -> None:
    if event not in EVENTS:
        hint = did_you_mean(event, EVENTS).rstrip() or f"use one of: {', '.join(EVENTS)}"
        raise UnlearnopsError(f"audit event '{event}': unknown; {hint}")
    missing = [name for name in EVENTS[event] if fields.get(name) in (None, "")]
    if missing:
        raise UnlearnopsError(f"audit event '{event}': missing field(s) {', '.join(missing)}; pass them to append()")
    for name, value in fields.items():
        if not _FIELD_NAME.match(name):
            raise UnlearnopsError(f"audit field '{name}': names are lower_snake_case (a-z, 0-9, _), at most 64 characters")
        _check_value(name, value)
    if fields.get("deadline") is not None:
        _parse_time(fields["deadline"])  # refused now rather than breaking `audit status` later


def _check_value(name: str, value: Any) -> None:
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise UnlearnopsError(f"audit field '{name}': {len(value)} items exceeds {MAX_LIST_ITEMS}; log ids in several records")
        for item in value:
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                raise UnlearnopsError(f"audit field '{name}': list items must be ids (strings or integers)")
            _check_value(name, item)
        return
    # No floats: they are where canonical JSON and RFC 8785 disagree, and ids/hashes need none.
    if value is not None and not isinstance(value, (str, int, bool)):
        raise UnlearnopsError(
            f"audit field '{name}': {type(value).__name__} is not allowed; the log holds ids, hashes, "
            "integers, booleans and lists of ids"
        )
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise UnlearnopsError(
            f"audit field '{name}': {len(value)} characters exceeds {MAX_VALUE_CHARS}; the audit log holds ids "
            "and hashes, never texts (log a sha256 of the text instead)"
        )


# ---- reading what came out ------------------------------------------------------------------
def _parse_record(text: str, *, seq_hint: int) -> dict:
    try:
        record = parse_json(text, source="audit record")
    except UnlearnopsError:
        raise _ChainError(seq_hint, f"record {seq_hint} is not valid JSON (truncated or edited)") from None
    if not isinstance(record, dict) or set(record) != RECORD_KEYS:
        raise _ChainError(seq_hint, f"record {seq_hint} does not have the record keys {sorted(RECORD_KEYS)} (edited)")
    if not isinstance(record["fields"], dict) or not isinstance(record["seq"], int):
        raise _ChainError(seq_hint, f"record {seq_hint} has a malformed seq or fields (edited)")
    return record


def _check_link(record: dict, position: int, previous_hash: str) -> None:
    """The checks run in an order that names the record that was actually touched."""
    if record_hash(record) != record["hash"]:
        raise _ChainError(position, f"record {position}'s content does not match its hash (edited)")
    if record["seq"] != position:
        raise _ChainError(
            position,
            f"position {position} holds seq {record['seq']}: a record was deleted, inserted or reordered here",
        )
    if record["prev"] != previous_hash:
        # Both records hash correctly, so the earlier one was rewritten and re-hashed after this
        # one had linked to it.
        raise _ChainError(
            position - 1,
            f"record {position - 1} was changed and re-hashed: record {position}'s prev no longer matches it",
        )
    if record["event"] not in EVENTS:
        raise _ChainError(position, f"record {position} has unknown event '{record['event']}' (edited)")


def _tail_line(path: Path) -> tuple[str, bool] | None:
    """The last non-empty line and whether it ends with a newline, reading from the end only."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block, data = 4096, b""
        while size > 0 and data.rstrip(b"\n").count(b"\n") < 1:
            step = min(block, size)
            size -= step
            handle.seek(size)
            data = handle.read(step) + data
    complete = data.endswith(b"\n")
    stripped = data.rstrip(b"\n")
    if not stripped:
        return None
    return stripped.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace"), complete


def _check_registry_anchors(tracking_uri: str, chain_hashes: set[str]) -> tuple[str | None, int]:
    """(reason naming the first bad version or None, number of versions with an audit head tag)."""
    from .registry import error_summary, client, redact

    mlflow_client = client(tracking_uri)
    checked, page_token = 0, None
    while True:
        try:
            page = mlflow_client.search_model_versions(max_results=1000, page_token=page_token)
        except Exception as err:  # an unreachable server or a foreign database: say which, not a traceback
            raise UnlearnopsError(
                f"registry {redact(tracking_uri)}: cannot list model versions ({error_summary(err)}); "
                "fix the tracking URI or verify the chain alone with --no-registry"
            ) from None
        for version in page:
            head = (version.tags or {}).get(AUDIT_HEAD_TAG)
            if head is None:
                continue
            checked += 1
            if head not in chain_hashes:
                return (
                    f"model {version.name} version {version.version}: its {AUDIT_HEAD_TAG} tag {head[:12]}... names no "
                    "record of this log (records were removed from the end, or the log was replaced)",
                    checked,
                )
        page_token = page.token
        if not page_token:
            return None, checked
