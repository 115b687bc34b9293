"""AuditLog: append signed records under the storage's lock, and verify a log end to end.

An append, inside the storage's exclusive section (storage.py):

1. reads the tail record and checks it is whole, correctly hashed and signed by our key;
2. checks that the log still extends the checkpoint the witness holds (not cut, not rolled back,
   not replaced), so damage is never buried under new records;
3. writes the record (seq, timestamp never earlier than the tail's, prev, hash, Ed25519 sig);
4. writes the new signed checkpoint (size, head hash) to the witness.

A new log starts with a `log.created` record carrying the log id, the public key and its
fingerprint; if the witness held a checkpoint for a log at the same location, the new log says
which log it replaces and at what size, so a deleted log cannot vanish silently.

`verify` walks every record (format, event and field rules, hash, seq, prev, signature by the
configured key, timestamps) and then compares the log with the witness's checkpoint and any
other checkpoints the caller holds (the registry's): the first record or checkpoint that
disagrees is named.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnlearnopsError
from ..fileio import canonical_json
from . import queries
from . import records as rec
from .records import GENESIS, LOG_CREATED, RecordError, parse_line, record_hash
from .signing import (
    Checkpoint,
    PublicKey,
    SigningKey,
    load_signing_key,
    open_checkpoint,
    record_signature_valid,
    sign_record,
    trusted_public_key,
)
from .storage import AuditStorage, FileStorage
from .witness import WitnessDir

FORMAT = "unlearnops.audit/2"


@dataclass
class VerifyResult:
    ok: bool
    first_bad_seq: int | None = None
    reason: str | None = None
    checked: int = 0
    head_hash: str | None = None
    versions_checked: int = 0
    log_id: str | None = None
    key_fingerprint: str | None = None
    checkpoint: dict | None = None  # the witness checkpoint compared: {"source", "size", "head_hash"}
    problems: list[dict] = field(default_factory=list)  # every disagreement: {"where", "reason"}
    notices: list[str] = field(default_factory=list)  # true and signed, but worth a reader's eye

    def add(self, where: str, reason: str, seq: int | None = None) -> None:
        self.problems.append({"where": where, "reason": reason})
        if self.ok:
            self.ok, self.first_bad_seq = False, seq
            self.reason = reason if where.startswith("record ") else f"{where}: {reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Head:
    last: dict | None
    log_id: str | None
    replaces: Checkpoint | None = None  # a checkpoint of a log that was at this location before


class AuditLog:
    """A signed, hash-chained log of records, kept by a storage backend (storage.py)."""

    def __init__(
        self,
        storage: AuditStorage | Path | str,
        *,
        witness: WitnessDir | Path | str | None = None,
        signing_key: SigningKey | None = None,
        public_key: PublicKey | None = None,
    ):
        self.storage = storage if isinstance(storage, AuditStorage) else FileStorage(storage)
        self.path: Path | None = getattr(self.storage, "path", None)  # None on non-file backends
        self._witness = witness if isinstance(witness, WitnessDir) or witness is None else WitnessDir(witness)
        self._signing_key, self._public_key = signing_key, public_key
        self._held = None  # the append session exclusive() holds, if any

    # ---- configuration ---------------------------------------------------------------------------
    @property
    def home(self) -> Path | None:
        """The directory holding the log: the key and the witness must live outside it."""
        return self.path.parent if self.path is not None else None

    @property
    def witness(self) -> WitnessDir:
        if self._witness is None:
            self._witness = WitnessDir()
        if self.home is not None:
            resolved, home = self._witness.path.resolve(), self.home.resolve()
            if resolved == home or home in resolved.parents:
                raise UnlearnopsError(
                    f"audit witness {self._witness.path}: inside {home}, which holds the log it witnesses; "
                    "set $UNLEARNOPS_AUDIT_WITNESS to a directory elsewhere (ideally other storage)"
                )
        return self._witness

    def signing_key(self) -> SigningKey:
        if self._signing_key is None:
            self._signing_key = load_signing_key(forbidden_dir=self.home)
        return self._signing_key

    def trusted_key(self) -> PublicKey | None:
        if self._public_key is None:
            self._public_key = self._signing_key.public if self._signing_key else trusted_public_key(forbidden_dir=self.home)
        return self._public_key

    # ---- writing -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the log's append section across several steps; appends inside it use the held section.

        Every writer of the log waits meanwhile (other processes, and on a shared backend other
        machines), so a check and the writes it decides (is this run key registered? create the
        version, record it) cannot interleave with another writer's. Re-entrant.
        """
        if self._held is not None:
            yield
            return
        self.signing_key()
        self.witness.prepare()
        with self.storage.appending() as session:
            self._held = session
            try:
                yield
            finally:
                self._held = None

    @contextlib.contextmanager
    def settled(self) -> Iterator[None]:
        """Wait until no writer is inside the append section, and keep them out while the block
        reads: the log and what writers record beside it (registry tags, aliases) are then read
        between two writers' steps. Needs no signing key (readers use it)."""
        if self._held is not None:
            yield
            return
        try:
            with self.storage.appending():
                yield
        except OSError as err:
            raise UnlearnopsError(f"{self.storage.location}: cannot take the append lock ({err.strerror or err})") from err

    @staticmethod
    def check(event: str, **fields: Any) -> None:
        """Refuse a record append() would refuse, without writing: for callers that must check every
        record they will write before their first write elsewhere (the registry)."""
        if event == LOG_CREATED:
            raise UnlearnopsError(f"audit event '{LOG_CREATED}': written by the log itself when it starts")
        if problem := rec.event_problem(event, fields):
            raise UnlearnopsError(problem)

    def append(self, event: str, **fields: Any) -> dict:
        """Append one signed record and checkpoint it in the witness; durable when this returns."""
        self.check(event, **fields)
        key, witness = self.signing_key(), self.witness
        witness.prepare()
        with self._section() as session:
            head = self._checked_head(session, key)
            last, log_id = head.last, head.log_id
            if last is None:
                log_id = uuid.uuid4().hex
                created = {"log_id": log_id, "public_key": key.public.vkey, "key_fingerprint": key.public.fingerprint, "format": FORMAT}
                if head.replaces is not None:
                    created.update(replaces_log_id=head.replaces.log_id, replaces_size=head.replaces.size)
                last = self._signed(key, 1, LOG_CREATED, created, GENESIS, None)
                session.append_line(canonical_json(last))
            record = self._signed(key, last["seq"] + 1, event, fields, last["hash"], last["timestamp"])
            session.append_line(canonical_json(record))
            witness.write(self.storage.location, Checkpoint(log_id, record["seq"], record["hash"]).sign(key))
        return record

    @contextlib.contextmanager
    def _section(self) -> Iterator:
        if self._held is not None:
            yield self._held
        else:
            with self.storage.appending() as session:
                yield session

    @staticmethod
    def _signed(key: SigningKey, seq: int, event: str, fields: dict, prev: str, previous_time: str | None) -> dict:
        # A clock stepped back must not make the log look reordered: time never runs backwards here.
        now = rec.utc_now()
        record = {
            "seq": seq,
            "timestamp": max(now, previous_time) if previous_time else now,
            "event": event,
            "fields": fields,
            "prev": prev,
        }
        record["hash"] = record_hash(record)
        record["sig"] = sign_record(key, record["hash"])
        return record

    def _checked_head(self, session, key: SigningKey) -> _Head:
        """The tail record and log id, refused unless the tail is ours and the log extends its checkpoint.

        A tail that is exactly the witness's checkpoint is authenticated by its signature; only a
        tail beyond it (a crash between the two writes) or a log without a checkpoint costs the
        records' own signature checks.
        """
        note = self.witness.read(self.storage.location)
        checkpoint = self._open(note, key.public) if note is not None else None
        line = session.last_line()
        if line is None:
            return _Head(None, None, checkpoint)
        last = self._whole_record(line, "last")
        first = self._whole_record(next(iter(session.lines())), "first")
        if first["event"] != LOG_CREATED or first["seq"] != 1:
            raise UnlearnopsError(
                f"{self.storage.location}: record 1 is not `{LOG_CREATED}`: the log is unsigned (written before unlearnops "
                "signed its records) or damaged; move it aside (keep it as evidence) and let a new log start"
            )
        log_id = str(first["fields"]["log_id"])
        anchored = checkpoint is not None and checkpoint.size == last["seq"] and checkpoint.head_hash == last["hash"]
        if checkpoint is not None and not anchored:
            self._check_extends(session, checkpoint, last, log_id)
        if checkpoint is None or checkpoint.log_id != log_id:
            self._own(first, key.public, "first")
        if not anchored:
            self._own(last, key.public, "last")
        return _Head(last, log_id)

    def _open(self, note: str, key: PublicKey) -> Checkpoint:
        try:
            return open_checkpoint(note, key)
        except UnlearnopsError as err:
            raise UnlearnopsError(
                f"audit witness {self.witness}: the {err} for {self.storage.location}; run `unlearnops audit verify`"
            ) from None

    def _whole_record(self, line: bytes, which: str) -> dict:
        try:
            record = parse_line(line, 0)
            if record_hash(record) == record["hash"]:
                return record
        except RecordError:
            pass
        raise UnlearnopsError(
            f"{self.storage.location}: the {which} record is damaged (truncated or edited); run `unlearnops audit verify` "
            "and restore the log from a backup before appending"
        )

    def _own(self, record: dict, key: PublicKey, which: str) -> None:
        if not record_signature_valid(key, record["hash"], record["sig"]):
            raise UnlearnopsError(
                f"{self.storage.location}: the {which} record is not signed by this key (forged, or another operator's log); "
                "run `unlearnops audit verify` and restore the log from a backup before appending"
            )

    def _check_extends(self, session, checkpoint: Checkpoint, last: dict, log_id: str) -> None:
        where = f"{self.storage.location} and the witness's checkpoint ({self.witness})"
        if checkpoint.log_id != log_id:
            raise UnlearnopsError(f"{where}: the witness holds log {checkpoint.log_id} here, not {log_id}: the log was replaced")
        if checkpoint.size > last["seq"]:
            raise UnlearnopsError(
                f"{where}: the log has {last['seq']} records, its checkpoint {checkpoint.size}: records were cut or the log "
                "was rolled back; restore it before appending (`unlearnops audit verify` names what is missing)"
            )
        head = last["hash"] if checkpoint.size == last["seq"] else self._hash_at(session.lines(), checkpoint.size)
        if head != checkpoint.head_hash:
            raise UnlearnopsError(f"{where}: record {checkpoint.size} differs from the checkpoint: the log was rewritten")

    @staticmethod
    def _hash_at(lines: Iterator[bytes], seq: int) -> str | None:
        for position, line in enumerate(lines, start=1):
            if position == seq:
                try:
                    return parse_line(line, position)["hash"]
                except RecordError:
                    return None
        return None

    # ---- reading -----------------------------------------------------------------------------------
    def records(self) -> list[dict]:
        """Every record, parsed; raises naming the first line that is not a record (verify() says more)."""
        result = []
        for position, line in enumerate(self.storage.lines(), start=1):
            try:
                result.append(parse_line(line, position))
            except RecordError as err:
                raise UnlearnopsError(f"{self.storage.location}: {err.reason}; run `unlearnops audit verify`") from None
        return result

    def log_id(self) -> str | None:
        """The log's id, from record 1 (None for an empty or unsigned log); reads one line."""
        first = next(iter(self.storage.lines()), None)
        try:
            record = parse_line(first, 1) if first is not None else None
        except RecordError:
            return None
        return str(record["fields"].get("log_id")) if record and record["event"] == LOG_CREATED else None

    def head_hash(self) -> str:
        """The hash of the last record (GENESIS for an empty log)."""
        line = self.storage.last_line()
        if line is None:
            return GENESIS
        try:
            return parse_line(line, 0)["hash"]
        except RecordError:
            raise UnlearnopsError(f"{self.storage.location}: the last record is damaged; run `unlearnops audit verify`") from None

    def lineage(self, request_id: str) -> queries.Lineage:
        return queries.lineage(self.records(), request_id)

    def status(self, now=None) -> dict[str, Any]:
        return queries.status(self.records(), now)

    def checkpoint_note(self) -> str | None:
        """The witness's signed checkpoint for this log (what a bundle carries for an outside reviewer)."""
        return self.witness.read(self.storage.location)

    # ---- verification ------------------------------------------------------------------------------
    def verify(self, checkpoints: list[tuple[str, str]] = ()) -> VerifyResult:
        """Every record, then the witness's checkpoint and `checkpoints` ((source, signed note) pairs).

        Checks run in an order that names the record actually touched: the line parses as a
        record; its content hashes to its `hash` (an edited field); its seq is its position (a
        record deleted, inserted or moved); its prev is the previous hash (the previous record
        was rewritten and re-hashed); its event and fields obey the append rules; its time is
        not before the previous one; its signature is by the configured key (a record forged
        with a recomputed chain). Then the checkpoints: a log shorter than a checkpoint was cut
        (its last records, the very last included); a record that differs from a checkpoint's
        head means a rollback to another copy or a rewrite.

        Signatures: a signed checkpoint whose head is record N's hash authenticates records
        1..N through the chain, so only the records after the newest matching checkpoint have
        their own signature checked; when a checkpoint disagrees, every signature is checked,
        so the first forged record is the one named.
        """
        result = VerifyResult(True)
        try:
            key = self.trusted_key()
        except UnlearnopsError as err:
            result.add("signing key", str(err))
            return result
        result.key_fingerprint = key.fingerprint if key else None
        walked, broken = self._walk(key, result)
        result.checked = len(walked)
        result.head_hash = walked[-1]["hash"] if walked else GENESIS
        problems = [broken] if broken else []
        covered = 0
        if key is not None and not broken:
            found = [self._witness_problem(key, walked, result)]
            found += [self._checkpoint_problem(source, note, key, walked, result.log_id) for source, note in checkpoints]
            problems = [problem for problem, _ in found if problem]
            covered = 0 if problems else max((size for _, size in found), default=0)
        if key is not None:
            # Any disagreement: every signature is checked, so an earlier forged record is named first.
            for record in walked[covered:]:
                if not record_signature_valid(key, record["hash"], record["sig"]):
                    seq = record["seq"]
                    result.add(f"record {seq}", f"record {seq}'s signature does not verify with the configured key (forged or edited)", seq)
                    break
        for where, reason, seq in problems:
            result.add(where, reason, seq)
        if walked and key is None and result.ok:
            result.add(
                "signing key",
                "no key to verify the signatures against: set $UNLEARNOPS_AUDIT_KEY to the signing key, or "
                "$UNLEARNOPS_AUDIT_PUBLIC_KEY to its public key (the log's own claim is not trusted)",
            )
        return result

    def _walk(self, key: PublicKey | None, result: VerifyResult) -> tuple[list[dict], tuple | None]:
        """(every record that holds together: format, rules, chain, time; the first problem or None).

        Signatures are checked by verify(), which knows which records a checkpoint already covers.
        """
        walked: list[dict] = []
        previous_hash, previous_time = GENESIS, None
        try:
            for position, line in enumerate(self.storage.lines(), start=1):
                record = parse_line(line, position)
                _check_link(record, position, previous_hash)
                if problem := rec.event_problem(record["event"], record["fields"]):
                    raise RecordError(position, f"record {position} breaks the append rules ({problem})")
                if problem := rec.timestamp_problem(record, previous_time):
                    raise RecordError(position, f"record {position}: {problem}")
                if position == 1:
                    result.log_id = self._check_created(record, key, result)
                elif record["event"] == LOG_CREATED:
                    raise RecordError(position, f"record {position} starts another log inside this one (inserted)")
                walked.append({"seq": position, "hash": record["hash"], "sig": record["sig"]})
                previous_hash, previous_time = record["hash"], record["timestamp"]
        except RecordError as err:
            return walked, (f"record {err.seq}", err.reason, err.seq)
        return walked, None

    @staticmethod
    def _check_created(record: dict, key: PublicKey | None, result: VerifyResult) -> str:
        if record["event"] != LOG_CREATED:
            raise RecordError(1, f"record 1 is '{record['event']}', not '{LOG_CREATED}': records were cut from the start, or the log is unsigned")
        fields = record["fields"]
        if key is not None and fields["public_key"] != key.vkey:
            raise RecordError(
                1,
                f"record 1 names key {str(fields['key_fingerprint'])[:16]}…, not the configured key {key.fingerprint[:16]}…: "
                "the log was re-signed with another key or belongs to another operator",
            )
        if fields.get("replaces_log_id"):
            result.notices.append(
                f"this log replaced log {fields['replaces_log_id']} ({fields.get('replaces_size')} records) at the same location"
            )
        return str(fields["log_id"])

    def _witness_problem(self, key: PublicKey, walked: list[dict], result: VerifyResult):
        """(problem or None, records the witness's checkpoint authenticates)."""
        witness = self.witness
        note = witness.read(self.storage.location)
        if note is None and result.log_id:
            note = witness.find(result.log_id)
        source = f"checkpoint in witness {witness}"
        if note is None:
            if not walked:
                return None, 0
            if self.storage.shared:
                # A machine that joined the team: every signature is checked (nothing covers them),
                # and its first append pins a checkpoint its later verifications compare with.
                result.notices.append(
                    f"witness {witness} holds no checkpoint of this shared log yet (this machine has not appended to it): "
                    f"all {len(walked)} records' signatures were checked; this machine's next append records one"
                )
                return None, 0
            reason = (
                f"none for log {result.log_id}: the witness was removed, or is not the one this log writes to "
                "(set $UNLEARNOPS_AUDIT_WITNESS to it)"
            )
            return (source, reason, None), 0
        problem, size = self._checkpoint_problem(source, note, key, walked, result.log_id)
        try:
            opened = open_checkpoint(note, key)
            result.checkpoint = {"source": source, "size": opened.size, "head_hash": opened.head_hash}
        except UnlearnopsError:
            pass  # the problem above says why
        return problem, size

    @staticmethod
    def _checkpoint_problem(source: str, note: str, key: PublicKey, walked: list[dict], log_id: str | None):
        """((where, reason, seq) or None, how many records the checkpoint authenticates)."""
        try:
            checkpoint = open_checkpoint(note, key)
        except UnlearnopsError as err:
            return (source, str(err), None), 0
        if not walked:
            return (source, f"log {checkpoint.log_id} had {checkpoint.size} records here and is gone (deleted or replaced by an empty file)", None), 0
        if checkpoint.log_id != log_id:
            return (source, f"it is for log {checkpoint.log_id}, but this is log {log_id}: the log was replaced", None), 0
        if checkpoint.size > len(walked):
            first = len(walked) + 1
            missing = f"record {first}" if first == checkpoint.size else f"records {first}-{checkpoint.size}"
            reason = (
                f"{missing} missing: the log has {len(walked)} records, its signed checkpoint {checkpoint.size} "
                "(the end was cut, or the log rolled back to an older copy)"
            )
            return (source, reason, first), 0
        if walked[checkpoint.size - 1]["hash"] != checkpoint.head_hash:
            reason = f"record {checkpoint.size} is not the record the signed checkpoint names (the log was rolled back to another copy or rewritten)"
            return (source, reason, checkpoint.size), 0
        return None, checkpoint.size


def _check_link(record: dict, position: int, previous_hash: str) -> None:
    if record_hash(record) != record["hash"]:
        raise RecordError(position, f"record {position}'s content does not match its hash (edited)")
    if record["seq"] != position:
        raise RecordError(position, f"record {position}: this position holds seq {record['seq']}: a record was deleted, inserted or reordered here")
    if record["prev"] != previous_hash:
        # Both records hash correctly, so the earlier one was rewritten and re-hashed after this
        # one had linked to it.
        raise RecordError(position - 1, f"record {position - 1} was changed and re-hashed: record {position}'s prev no longer matches it")
