"""The compliance audit log: signed, hash-chained records of ids and hashes, anchored in a witness.

    records.py    what a record is: keys, events, required fields, field types (one home for the rules)
    storage.py    where records live: the seam (exclusive append section, read all, read the tail)
    signing.py    the operator's Ed25519 key, record signatures, C2SP signed-note checkpoints
    witness.py    the directory that keeps each log's latest signed checkpoint, away from the log
    log.py        AuditLog: append (signed, checkpointed) and verify (every record, then the checkpoints)
    queries.py    lineage, status, evidence bundles

The log never carries the forgotten text: a field value longer than 256 characters is refused.
The registry side of the evidence (versions, aliases, and their cross-check with this log) is
`unlearnops.evidence`, the layer above both: this package never imports the registry.
"""

from .log import AuditLog, VerifyResult
from .queries import EVIDENCE_FORMAT, Lineage, bundle_digest, live_deployments
from .records import (
    ALIAS_MOVED,
    DEPLOYMENT_STARTED,
    DEPLOYMENT_STOPPED,
    ENDPOINT_MISMATCH,
    ENDPOINT_VERIFIED,
    EVENTS,
    GATE_DECIDED,
    GENESIS,
    LOG_CREATED,
    MAX_LIST_ITEMS,
    MAX_VALUE_CHARS,
    REGISTRY_BOUND,
    REQUEST_CLOSED,
    REQUEST_RECEIVED,
    REQUEST_REJECTED,
    REQUEST_SUPERSEDED,
    REQUEST_VALIDATED,
    RUN_FINISHED,
    RUN_STARTED,
    VERSION_REGISTERED,
    record_hash,
    request_ids_of,
    utc_now,
)
from .signing import KEY_ENV, PUBLIC_KEY_ENV
from .witness import WITNESS_ENV

__all__ = [
    "ALIAS_MOVED", "DEPLOYMENT_STARTED", "DEPLOYMENT_STOPPED", "ENDPOINT_MISMATCH", "ENDPOINT_VERIFIED", "EVENTS",
    "EVIDENCE_FORMAT", "GATE_DECIDED", "GENESIS",
    "KEY_ENV", "LOG_CREATED", "MAX_LIST_ITEMS", "MAX_VALUE_CHARS", "PUBLIC_KEY_ENV", "REGISTRY_BOUND", "REQUEST_CLOSED",
    "REQUEST_RECEIVED", "REQUEST_REJECTED", "REQUEST_SUPERSEDED", "REQUEST_VALIDATED", "RUN_FINISHED", "RUN_STARTED",
    "VERSION_REGISTERED", "WITNESS_ENV", "AuditLog", "Lineage", "VerifyResult", "bundle_digest", "live_deployments",
    "record_hash", "request_ids_of", "utc_now",
]
