"""What a record is: its keys, its events, the fields each event carries and their types.

One home for the rules: `append` refuses a record that breaks them and `verify` fails a log that
holds one, so whatever verifies could have been written by the tool.

    {"seq": 7, "timestamp": "2026-11-27T22:55:01.123456Z", "event": "gate.decided",
     "fields": {...}, "prev": "<hash of record 6>", "hash": "<sha256>", "sig": "<base64 Ed25519>"}

`hash` is SHA-256 over the canonical JSON of the record without `hash` and `sig`; `sig` signs
that hash (signing.sign_record). Field values are ids, hashes, integers within ±(2^53 - 1),
booleans, null and lists of ids, so the canonical form coincides with RFC 8785 (JCS): the two
differ only on floats, non-ASCII keys and integers beyond 2^53, and none can occur here.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from ..errors import did_you_mean
from ..fileio import canonical_json, sha256_bytes

GENESIS = "0" * 64
MAX_VALUE_CHARS = 256
MAX_LIST_ITEMS = 1024
MAX_LINE_BYTES = 256 * 1024
MAX_SAFE_INT = 2**53 - 1  # JCS prints numbers as IEEE doubles: beyond this, hashes would differ

LOG_CREATED = "log.created"
REGISTRY_BOUND = "registry.bound"
REQUEST_RECEIVED = "request.received"
REQUEST_SUPERSEDED = "request.superseded"
REQUEST_VALIDATED = "request.validated"
REQUEST_REJECTED = "request.rejected"
REQUEST_CLOSED = "request.closed"
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
# status/show link records through these ids; decisions (serve, promote, register) read the
# registration and gate fields, so a record without them could not back a decision.
EVENTS: dict[str, tuple[str, ...]] = {
    LOG_CREATED: ("log_id", "public_key", "key_fingerprint"),
    REGISTRY_BOUND: ("registry_id",),
    REQUEST_RECEIVED: ("request_id",),
    REQUEST_SUPERSEDED: ("request_id", "previous_content_sha256", "request_content_sha256"),
    REQUEST_VALIDATED: ("request_id",),
    REQUEST_REJECTED: ("request_id",),
    REQUEST_CLOSED: ("request_id", "reason"),
    RUN_STARTED: ("run_id",),
    RUN_FINISHED: ("run_id",),
    GATE_DECIDED: ("passed", "gate_report_sha256"),
    VERSION_REGISTERED: ("name", "version", "model_sha256", "gate_passed", "role"),
    ALIAS_MOVED: ("name", "alias", "version"),
    DEPLOYMENT_STARTED: ("deployment_id", "name", "version"),
    DEPLOYMENT_STOPPED: ("deployment_id",),
    ENDPOINT_VERIFIED: ("deployment_id", "name", "version", "verification_sha256"),
    ENDPOINT_MISMATCH: ("deployment_id", "name", "version", "verification_sha256"),
}

RECORD_KEYS = frozenset({"seq", "timestamp", "event", "fields", "prev", "hash", "sig"})
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_BOOL_FIELDS = frozenset({"passed", "gate_passed", "api_key_required"})
_INT_FIELDS = frozenset({"previous_version", "replaces_size", "port", "exit_code", "requests"})
_TIME_FIELDS = frozenset({"deadline", "received_at"})
_LIST_FIELDS = frozenset({"request_ids", "request_data", "request_policies", "data_files", "fields", "failed_checks", "skipped_checks"})


class RecordError(Exception):
    """A line that is not a valid record; `seq` is its position in the log (1-based)."""

    def __init__(self, seq: int, reason: str):
        super().__init__(reason)
        self.seq, self.reason = seq, reason


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def record_hash(record: dict) -> str:
    return sha256_bytes(canonical_json({key: value for key, value in record.items() if key not in ("hash", "sig")}))


def parse_time(text: object) -> datetime | None:
    """ISO 8601 date or date-time (a naive value is UTC, a bare date its start); None if not one."""
    try:
        parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def request_ids_of(fields: dict) -> set[str]:
    """The request ids a record names, whether as `request_id` or as a `request_ids` list."""
    ids = {item for item in fields.get("request_ids") or () if isinstance(item, str)}
    if isinstance(fields.get("request_id"), str) and fields["request_id"]:
        ids.add(fields["request_id"])
    return ids


# ---- what may be written --------------------------------------------------------------------
def event_problem(event: object, fields: object) -> str | None:
    """Why this event and fields cannot be a record, or None. The rule both append and verify apply."""
    if event not in EVENTS:
        hint = did_you_mean(event, EVENTS).rstrip() or f"use one of: {', '.join(EVENTS)}"
        return f"audit event '{event}': unknown; {hint}"
    if not isinstance(fields, dict):
        return f"audit event '{event}': fields must be an object"
    missing = [name for name in EVENTS[event] if fields.get(name) in (None, "")]
    if missing:
        return f"audit event '{event}': missing field(s) {', '.join(missing)}; pass them to append()"
    for name, value in fields.items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            return f"audit field '{name}': names are lower_snake_case (a-z, 0-9, _), at most 64 characters"
        if problem := _value_problem(name, value):
            return problem
    return None


def _value_problem(name: str, value: Any) -> str | None:
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            return f"audit field '{name}': {len(value)} items exceeds {MAX_LIST_ITEMS}; log ids in several records"
        for item in value:
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                return f"audit field '{name}': list items must be ids (strings or integers)"
            if problem := _scalar_problem(name, item):
                return problem
        return None
    if name in _LIST_FIELDS and value is not None:
        return f"audit field '{name}': must be a list of ids"
    if value is not None and not isinstance(value, (str, int, bool)):
        # No floats: they are where canonical JSON and RFC 8785 disagree, and ids/hashes need none.
        return (
            f"audit field '{name}': {type(value).__name__} is not allowed; the log holds ids, hashes, "
            "integers, booleans and lists of ids"
        )
    if problem := _scalar_problem(name, value):
        return problem
    return _kind_problem(name, value)


def _scalar_problem(name: str, value: Any) -> str | None:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return (
            f"audit field '{name}': {len(value)} characters exceeds {MAX_VALUE_CHARS}; the audit log holds ids "
            "and hashes, never texts (log a sha256 of the text instead)"
        )
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INT:
        return f"audit field '{name}': integer beyond ±(2^53 - 1), which JSON readers cannot hold exactly"
    return None


def _kind_problem(name: str, value: Any) -> str | None:
    """Field types by name, so e.g. a gate decision is a boolean wherever it appears."""
    if value is None:
        return None
    if name.endswith("_sha256") and not (isinstance(value, str) and _HEX64.match(value)):
        return f"audit field '{name}': must be a SHA-256 (64 lowercase hex digits)"
    if name in _BOOL_FIELDS and not isinstance(value, bool):
        return f"audit field '{name}': must be true or false"
    if name in _INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
        return f"audit field '{name}': must be an integer"
    if name == "version" and not (
        (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (isinstance(value, str) and value.isdecimal())
    ):
        return f"audit field 'version': must be a positive version number, got {value!r}"
    if name in _TIME_FIELDS and parse_time(value) is None:
        return f"audit field '{name}': '{value}' is not an ISO 8601 date or date-time (e.g. 2026-12-31T00:00:00Z)"
    return None


# ---- what was read --------------------------------------------------------------------------
def parse_line(line: bytes, position: int) -> dict:
    """One line as a record with the right keys and types; RecordError naming the position if not.

    Never raises anything else: a stray byte, a 5,000-digit integer or deep nesting is a
    damaged record, named, not a traceback.
    """
    if len(line) > MAX_LINE_BYTES:
        raise RecordError(position, f"record {position} is {len(line)} bytes, more than a record can be (edited)")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(position, f"record {position} is not valid UTF-8 (byte {err.start}; edited or corrupted)") from None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, and int() beyond 4,300 digits
        detail = "an integer too long to read" if "digits" in str(err) else "not valid JSON"
        raise RecordError(position, f"record {position} is {detail} (truncated or edited)") from None
    if not isinstance(record, dict) or set(record) != RECORD_KEYS:
        raise RecordError(position, f"record {position} does not have the record keys {sorted(RECORD_KEYS)} (edited)")
    if (
        not isinstance(record["fields"], dict)
        or isinstance(record["seq"], bool)
        or not isinstance(record["seq"], int)
        or not all(isinstance(record[key], str) for key in ("timestamp", "event", "prev", "hash", "sig"))
    ):
        raise RecordError(position, f"record {position} has a malformed seq, timestamp, event, fields, prev, hash or sig (edited)")
    return record


def timestamp_problem(record: dict, previous: str | None) -> str | None:
    if not _TIMESTAMP.match(record["timestamp"]) or parse_time(record["timestamp"]) is None:
        return f"timestamp '{record['timestamp'][:40]}' is not the log's UTC format (edited)"
    if previous is not None and record["timestamp"] < previous:
        return f"timestamp {record['timestamp']} is earlier than the record before it ({previous}): records were reordered or edited"
    return None
