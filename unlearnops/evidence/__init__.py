"""The evidence layer: registry versions and signed audit records, written together, checked both ways.

`unlearnops.registry` (MLflow) and `unlearnops.audit` (the signed log) never import each other;
this package sits above both, so data flows one way. Everything that changes what is served, or
what a version claims to satisfy, goes through `Evidence`:

- `register(...)`: every check first (request ids recorded as validated, the gate report attested
  by a signed `gate.decided` record for this very model, tags the registry can hold, the
  registry being the one this log is bound to), then the MLflow version, its signed
  `version.registered` record (name, version, model hash, gate report hash, requests and the
  hashes of their validated data), the `audit_head` tag, the alias and its `alias.moved` record.
  Each step is idempotent: a rerun after a crash completes the registration, never repeats it.
- `registration(...)`: the signed record behind a version; `promote`, `serve` and
  `gate --lineage` decide from it (gate decision, model hash, requests), never from a tag.
- `verify()`: the log (records, signatures, witness checkpoint), then registry and log against
  each other (crosscheck.py), naming every record, version or alias that disagrees.
- The registry's identity: the log records which registry it was written with (`registry.bound`)
  and the registry records the log's id, public key, fingerprint and latest checkpoint
  (experiment tags); a tracking URI that points elsewhere is refused until the switch is
  recorded (`bind_registry`, `unlearnops audit bind-registry --reason ...`).
- Requests: one request id, one content (`receive_request`), the hashes of the validated data
  (`request_validated`, snapshot.py), `close_request` with a recorded reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import audit, registry
from ..audit import queries
from ..audit.backends import storage_for
from ..errors import UnlearnopsError
from ..fileio import canonical_json, sha256_bytes, sha256_file, sha256_tree
from ..workspace import Workspace
from . import snapshot
from .crosscheck import cross_check
from .tags import CHECKPOINT_TAG, FINGERPRINT_TAG, LOG_ID_TAG, PUBLIC_KEY_TAG, REGISTRY_ID_TAG

ROLE_SOURCE, ROLE_UNLEARNED = "source", "unlearned"


def policy_sha256(policy: dict) -> str:
    """The hash a signed registration record keeps of a request's accepted gate policy."""
    return sha256_bytes(canonical_json(policy))


@dataclass(frozen=True)
class Registration:
    """What a signed `version.registered` record says about a version: what decisions read."""

    name: str
    version: str
    seq: int
    record_hash: str
    model_sha256: str
    gate_passed: bool
    gate_report_sha256: str | None
    role: str
    request_ids: list[str]
    request_data: dict[str, str]  # request id -> sha256 of its validated data snapshot
    request_policies: dict[str, str]  # request id -> sha256 of the gate policy it was accepted with (canonical JSON)
    fp_model_sha256: str | None
    source_version: str | None

    @classmethod
    def of(cls, record: dict) -> "Registration":
        fields = record["fields"]
        pairs = [str(item).partition("=") for item in fields.get("request_data") or ()]
        policies = [str(item).partition("=") for item in fields.get("request_policies") or ()]
        return cls(
            name=str(fields["name"]),
            version=str(fields["version"]),
            seq=record["seq"],
            record_hash=record["hash"],
            model_sha256=fields["model_sha256"],
            gate_passed=fields["gate_passed"] is True,
            gate_report_sha256=fields.get("gate_report_sha256"),
            role=str(fields["role"]),
            request_ids=sorted(audit.request_ids_of(fields)),
            request_data={request_id: digest for request_id, _, digest in pairs if digest},
            request_policies={request_id: digest for request_id, _, digest in policies if digest},
            fp_model_sha256=fields.get("fp_model_sha256"),
            source_version=fields.get("source_version"),
        )


def _one_line(reason: str) -> str:
    """A --reason the log can hold: one line, 1 to 256 characters."""
    reason = reason.strip()
    if not reason or "\n" in reason or len(reason) > audit.MAX_VALUE_CHARS:
        raise UnlearnopsError(
            f"--reason: give one line of at most {audit.MAX_VALUE_CHARS} characters (an id or a short reason, never the forgotten text)",
            field="--reason",
        )
    return reason


def request_content_sha256(request) -> str:
    """The request's content (every field, as validated), hashed: what 'the same request' means."""
    return sha256_bytes(canonical_json(request.model_dump(mode="json")))


class Evidence:
    def __init__(self, workspace: Workspace, *, tracking_uri: str | None = None, log: audit.AuditLog | None = None):
        self.workspace = workspace
        self.tracking_uri = tracking_uri or registry.tracking_uri_for(workspace)
        self.log = log or audit.AuditLog(storage_for(workspace))  # the workspace file, or $UNLEARNOPS_AUDIT_URL

    # ---- reading the log -------------------------------------------------------------------------
    def verified_records(self, *, action: str = "decide") -> list[dict]:
        """The log's records, once the log verifies (records, signatures, witness); refused otherwise."""
        result = self.log.verify()
        if not result.ok:
            raise UnlearnopsError(
                f"the audit log {self.log.storage.location} does not verify ({result.reason}); refusing to {action} "
                "on it: run `unlearnops audit verify`"
            )
        return self.log.records()

    def registration(self, name: str, version: str | int, records: list[dict] | None = None) -> Registration:
        """The signed registration record of `name` version `version` (exactly one, or refused)."""
        records = self.verified_records() if records is None else records
        found = [
            r for r in records
            if r["event"] == audit.VERSION_REGISTERED and str(r["fields"]["name"]) == name and str(r["fields"]["version"]) == str(version)
        ]
        if not found:
            raise UnlearnopsError(
                f"models:/{name}/{version}: no signed registration record in the audit log; it was created outside "
                "unlearnops (or its record was removed), so nothing vouches for it: register it with `unlearnops register`"
            )
        if len(found) > 1:
            raise UnlearnopsError(f"models:/{name}/{version}: {len(found)} registration records (seq {', '.join(str(r['seq']) for r in found)}); run `unlearnops audit verify`")
        return Registration.of(found[0])

    def resolve(self, ref: str, records: list[dict] | None = None) -> tuple[registry.RegisteredVersion, Registration]:
        """The version a reference names and its signed registration record.

        An alias is followed only where its last signed `alias.moved` record says it points: an
        alias moved in the registry alone (a rollback of @production to a version that does not
        satisfy a newer request) or set there without a record is refused, never deployed.
        """
        records = self.verified_records() if records is None else records
        self.check_registry(bind=False, records=records)
        version = registry.resolve(ref, tracking_uri=self.tracking_uri)
        registration = self.registration(version.name, version.version, records)
        _, _, alias = registry.parse_ref(ref)
        if alias:
            self._check_alias(version, alias, records)
        return version, registration

    @staticmethod
    def _check_alias(version: registry.RegisteredVersion, alias: str, records: list[dict]) -> None:
        moves = [
            r for r in records
            if r["event"] == audit.ALIAS_MOVED and str(r["fields"]["name"]) == version.name and r["fields"]["alias"] == alias
        ]
        where = f"models:/{version.name}@{alias}"
        if not moves:
            raise UnlearnopsError(
                f"{where}: no signed alias.moved record set it (it points at version {version.version} in the registry): "
                f"it was set outside unlearnops, so nothing vouches for it; name the version ({version.name}/N) or move "
                "the alias with `unlearnops promote`"
            )
        logged = str(moves[-1]["fields"]["version"])
        if logged != version.version:
            raise UnlearnopsError(
                f"{where} points at version {version.version} in the registry, but its last signed alias.moved record "
                f"(seq {moves[-1]['seq']}) says version {logged}: it was moved outside unlearnops; run `unlearnops audit "
                f"verify`, and restore it with `unlearnops promote {version.name} {logged} --alias {alias}`"
            )

    # ---- the registry's identity -----------------------------------------------------------------
    def _bound_registry(self, records: list[dict]) -> dict | None:
        bound = [r["fields"] for r in records if r["event"] == audit.REGISTRY_BOUND]
        return bound[-1] if bound else None

    def check_registry(self, *, bind: bool, records: list[dict] | None = None) -> None:
        """Refuse a registry other than the one this log was written with; bind a fresh pair when `bind`."""
        records = self.log.records() if records is None else records
        bound = self._bound_registry(records)
        identity = registry.read_identity(self.tracking_uri)
        registry_id = identity.get(REGISTRY_ID_TAG)
        where = f"registry {registry.redact(self.tracking_uri)}"
        fix = "point $MLFLOW_TRACKING_URI (or --tracking-uri) back at it, or record the switch with `unlearnops audit bind-registry --reason ...`"
        if bound is not None:
            if registry_id != bound["registry_id"]:
                found = f"registry {registry_id}" if registry_id else "a registry unlearnops never used (new or replaced)"
                raise UnlearnopsError(f"{where}: is {found}, but this workspace's audit log was written with registry {bound['registry_id']}; {fix}")
            return
        self._check_log_of(identity)
        if bind:
            with self.log.exclusive():  # two first registrations at once bind one registry id, not two
                if self._bound_registry(self.log.records()) is not None:
                    return self.check_registry(bind=False)  # another writer bound it meanwhile
                self._bind(registry.read_identity(self.tracking_uri), reason=None)

    def _check_log_of(self, identity: dict[str, str]) -> None:
        """Refuse a registry that holds another log's evidence: binding it to this log (an empty one
        included: a workspace that forgot the team's $UNLEARNOPS_AUDIT_URL) would take its identity
        over, and every workspace writing the other log would stop verifying against it."""
        other_log, log_id = identity.get(LOG_ID_TAG), self.log.log_id()
        if other_log and other_log != log_id:
            this = f"this workspace's log {log_id}" if log_id else f"this workspace's empty log ({self.log.storage.location})"
            raise UnlearnopsError(
                f"registry {registry.redact(self.tracking_uri)}: holds the evidence of audit log {other_log}, not {this}; a "
                "registry has one audit log: point $UNLEARNOPS_AUDIT_URL at that log (the team's, docs/team.md), or use "
                "another registry"
            )

    def bind_registry(self, reason: str) -> dict[str, Any]:
        """Record, with a reason, that this log continues with the registry at the current tracking URI."""
        reason = _one_line(reason)
        records = self.verified_records(action="rebind the registry")
        identity = registry.read_identity(self.tracking_uri)
        self._check_log_of(identity)
        previous = self._bound_registry(records)
        return self._bind(identity, reason=reason, previous=previous["registry_id"] if previous else None)

    def _bind(self, identity: dict[str, str], *, reason: str | None, previous: str | None = None) -> dict[str, Any]:
        # The registry's identity is written before the record: a crash between the two leaves a
        # registry that names this log, which the next check accepts and binds again (same id).
        registry_id = identity.get(REGISTRY_ID_TAG) or uuid.uuid4().hex
        key = self.log.signing_key().public
        tags = {REGISTRY_ID_TAG: registry_id, PUBLIC_KEY_TAG: key.vkey, FINGERPRINT_TAG: key.fingerprint}
        if log_id := self.log.log_id():
            tags[LOG_ID_TAG] = log_id
        fields = dict(registry_id=registry_id, tracking_uri=registry.redact(self.tracking_uri)[:256], previous_registry_id=previous, reason=reason)
        self.log.check(audit.REGISTRY_BOUND, **fields)  # before the registry is written
        with self.log.exclusive():
            registry.write_identity(self.tracking_uri, self.workspace.artifact_root, tags)
            record = self.log.append(audit.REGISTRY_BOUND, **fields)
            self._anchor()
        return {"registry_id": registry_id, "previous_registry_id": previous, "seq": record["seq"]}

    def _anchor(self) -> None:
        """Copy the log's latest signed checkpoint (and its id) into the registry: a second witness, on other storage."""
        note = self.log.checkpoint_note()
        if note:
            tags = {CHECKPOINT_TAG: note}
            if log_id := self.log.log_id():
                tags[LOG_ID_TAG] = log_id
            registry.write_identity(self.tracking_uri, self.workspace.artifact_root, tags)

    # ---- registering -----------------------------------------------------------------------------
    def register(
        self,
        *,
        name: str,
        run_id: str | Callable[[], str],
        run_key: str,
        model_sha256: str,
        role: str = ROLE_UNLEARNED,
        gate_report_sha256: str | None = None,
        gate_passed: bool = True,
        request_ids: list[str] = (),
        request_data: dict[str, str] | None = None,
        request_policies: dict[str, dict] | None = None,
        source_version: str | None = None,
        fp_model_sha256: str | None = None,
        metrics: dict[str, float] | None = None,
        extra_tags: dict[str, str] | None = None,
        alias: str = registry.CANDIDATE,
    ) -> registry.RegisteredVersion:
        """Register the run's `model/` artifact with its signed record (idempotent on `run_key`).

        `request_data` maps each request id to the sha256 of its validated data snapshot;
        `request_policies` each request id to the gate policy it was accepted with (the tag holds
        the policy, the signed record its hash: a later gate re-checks the request under it).
        `run_id` may be a function that logs the model's run and returns its id: it is called after
        every check, so a refused registration leaves no run behind either.
        """
        request_ids = list(dict.fromkeys(request_ids))
        request_data = dict(request_data or {})
        request_policies = dict(request_policies or {})
        tag_records = {rid: {"corpus_sha256": digest, "location": f"data/{digest}"} for rid, digest in request_data.items()}
        for rid, policy in request_policies.items():
            tag_records.setdefault(rid, {})["policy"] = policy
        records = self.verified_records(action="register")
        self._check_requests_validated(request_ids, records)
        tags = registry.version_tags(
            role=role, model_sha256=model_sha256, gate_passed=gate_passed, request_ids=request_ids,
            request_data=tag_records, source_version=source_version, fp_model_sha256=fp_model_sha256, metrics=metrics, extra=extra_tags,
        )

        def registered_fields(number: int, run: str) -> dict[str, Any]:
            return dict(
                name=name, version=number, run_id=run, run_key=run_key, model_sha256=model_sha256, gate_passed=gate_passed,
                gate_report_sha256=gate_report_sha256, role=role, request_ids=request_ids,
                request_data=[f"{rid}={digest}" for rid, digest in sorted(request_data.items())],
                request_policies=[f"{rid}={policy_sha256(policy)}" for rid, policy in sorted(request_policies.items())],
                source_version=source_version, fp_model_sha256=fp_model_sha256,
            )

        # The records this registration will write obey the log's rules, checked before anything is
        # written: a refused record after the version exists would leave a version nothing vouches for.
        self.log.check(audit.VERSION_REGISTERED, **registered_fields(1, run_id if isinstance(run_id, str) else "0" * 32))
        self.log.check(audit.ALIAS_MOVED, name=name, alias=alias, version=1)
        self.check_registry(bind=True, records=records)
        # ---- the first write to the registry is below this line ----
        run_id = run_id if isinstance(run_id, str) else run_id()
        # One step under the log's append lock, which every writer of this log honours (processes, and
        # on a shared PostgreSQL log every machine): is this run key registered, create the version,
        # record it. Two registrations of one run key at once then make one version, not two.
        with self.log.exclusive():
            version = registry.create_version(name, run_id=run_id, tags=tags, run_key=run_key, tracking_uri=self.tracking_uri)
            existing = [
                r for r in self.log.records()
                if r["event"] == audit.VERSION_REGISTERED and str(r["fields"]["name"]) == name and str(r["fields"]["version"]) == version.version
            ]
            if existing:
                record = existing[0]
            else:
                record = self.log.append(audit.VERSION_REGISTERED, **registered_fields(int(version.version), run_id))
            if version.tags.get(registry.TAG_AUDIT_HEAD) != record["hash"]:
                registry.set_version_tag(name, version.version, registry.TAG_AUDIT_HEAD, record["hash"], tracking_uri=self.tracking_uri)
            # The alias is moved once, at registration: a rerun of the same request must not pull
            # @candidate back from a newer version. TAG_REGISTERED_ALIAS marks that step as done.
            if registry.TAG_REGISTERED_ALIAS not in version.tags:
                self._move_alias(name, version.version, alias)
                registry.set_version_tag(name, version.version, registry.TAG_REGISTERED_ALIAS, alias, tracking_uri=self.tracking_uri)
            self._anchor()
        return registry.resolve(f"{name}/{version.version}", tracking_uri=self.tracking_uri)

    def register_source(self, model_dir: Path | str, *, name: str = registry.SOURCE_MODEL_NAME, metrics: dict[str, float] | None = None) -> registry.RegisteredVersion:
        """Register a baseline (the bench target) as `name`@production, once.

        Its gate decision is "passed" by definition (it is the baseline unlearning starts from) and
        its role "source"; it satisfies no forget request.
        """
        model_dir = Path(model_dir)
        try:
            return registry.resolve(f"{name}@{registry.PRODUCTION}", tracking_uri=self.tracking_uri)
        except UnlearnopsError:
            pass
        model_sha = sha256_tree(model_dir)
        return self.register(
            name=name, run_id=lambda: registry.log_model_run(
                model_dir, tracking_uri=self.tracking_uri, artifact_root=self.workspace.artifact_root,
                run_name=f"register source {name}", params={"source_dir": str(model_dir)},
            ),
            run_key=f"source:{model_sha}", model_sha256=model_sha, role=ROLE_SOURCE, metrics=metrics, alias=registry.PRODUCTION,
        )

    def register_gated(self, model_dir: Path | str, *, name: str, gate_report: Path | str, request_ids: list[str] = ()) -> registry.RegisteredVersion:
        """`unlearnops register`: a model gated outside the pipeline, accepted only on signed evidence.

        Every check runs before the first write: the report's hash must be in a signed
        `gate.decided` record that passed for this very model directory, and each request id
        must have been recorded as validated.
        """
        from ..modeling import check_model_dir

        model_dir, gate_report = Path(model_dir), Path(gate_report)
        check_model_dir(model_dir)
        request_ids = list(dict.fromkeys(request_ids))
        for request_id in request_ids:
            registry.request_tag(request_id)
        records = self.verified_records(action="register")
        report_sha = sha256_file(gate_report) if gate_report.is_file() else None
        if report_sha is None:
            raise UnlearnopsError(f"--gate-report {gate_report}: file not found")
        model_sha = sha256_tree(model_dir)
        self._check_gate_attested(gate_report, report_sha, model_sha, records)
        self._check_requests_validated(request_ids, records)
        request_data = self._validated_data(request_ids, records)
        return self.register(
            name=name, run_id=lambda: registry.log_model_run(
                model_dir, tracking_uri=self.tracking_uri, artifact_root=self.workspace.artifact_root,
                run_name=f"register {name}", params={"gate_report_sha256": report_sha},
            ),
            run_key=f"manual:{model_sha}:{report_sha}", model_sha256=model_sha, gate_report_sha256=report_sha,
            request_ids=request_ids, request_data=request_data,
        )

    def _check_gate_attested(self, path: Path, report_sha: str, model_sha: str, records: list[dict]) -> None:
        gates = [r for r in records if r["event"] == audit.GATE_DECIDED and r["fields"]["gate_report_sha256"] == report_sha]
        if not gates:
            raise UnlearnopsError(
                f"--gate-report {path}: no signed gate.decided record in the audit log has this report's sha256 "
                f"({report_sha[:12]}…): only a report written by `unlearnops gate --model DIR --out DIR` (or `run`) is accepted; "
                "nothing registered"
            )
        record = gates[-1]
        if record["fields"]["passed"] is not True:
            raise UnlearnopsError(f"--gate-report {path}: the gate failed (record {record['seq']}); nothing registered")
        gated_model = record["fields"].get("model_sha256")
        if gated_model is None:
            raise UnlearnopsError(
                f"--gate-report {path}: the gate (record {record['seq']}) was run on metrics, not on a model directory, so it "
                "vouches for no model; gate the model with `unlearnops gate --model DIR --out DIR`; nothing registered"
            )
        if gated_model != model_sha:
            raise UnlearnopsError(
                f"--model: its files (sha256 {model_sha[:12]}…) are not the model this gate report passed "
                f"({gated_model[:12]}…, record {record['seq']}); nothing registered"
            )

    @staticmethod
    def _check_requests_validated(request_ids: list[str], records: list[dict]) -> None:
        validated = {r["fields"]["request_id"] for r in records if r["event"] == audit.REQUEST_VALIDATED}
        unknown = [request_id for request_id in request_ids if request_id not in validated]
        if unknown:
            raise UnlearnopsError(
                f"--request-id {unknown[0]}: no signed record says this request was validated (run it with `unlearnops run "
                "--request FILE`); a version can only claim requests the log shows were received and validated; nothing registered"
            )

    @staticmethod
    def _validated_data(request_ids: list[str], records: list[dict]) -> dict[str, str]:
        latest: dict[str, str] = {}
        for record in records:
            if record["event"] == audit.REQUEST_VALIDATED and record["fields"].get("data_sha256"):
                latest[record["fields"]["request_id"]] = record["fields"]["data_sha256"]
        return {request_id: latest[request_id] for request_id in request_ids if request_id in latest}

    # ---- aliases ---------------------------------------------------------------------------------
    def promote(self, ref: str, *, alias: str = registry.PRODUCTION) -> registry.RegisteredVersion:
        """Point `alias` at a version whose signed registration record says its gate passed."""
        records = self.verified_records(action="promote")
        target, registration = self.resolve(ref, records)
        if not registration.gate_passed:
            raise UnlearnopsError(
                f"{target.ref}: its signed registration record (seq {registration.seq}) says its gate did not pass; only a "
                "version that passed its release gate can be promoted (run the request again with a policy it meets)"
            )
        self._move_alias(target.name, target.version, alias)
        self._anchor()
        return registry.resolve(f"{target.name}/{target.version}", tracking_uri=self.tracking_uri)

    def _move_alias(self, name: str, version: str, alias: str) -> None:
        """Move the alias and record it; the record's previous_version is what the log last said."""
        with self.log.exclusive():  # two moves at once: the registry's alias and the last record agree
            moves = [r["fields"] for r in self.log.records() if r["event"] == audit.ALIAS_MOVED and r["fields"]["name"] == name and r["fields"]["alias"] == alias]
            logged = str(moves[-1]["version"]) if moves else None
            registry.set_alias(name, alias, version, tracking_uri=self.tracking_uri)
            if logged != str(version):
                self.log.append(
                    audit.ALIAS_MOVED, name=name, alias=alias, version=int(version),
                    previous_version=int(logged) if logged is not None else None,
                )

    # ---- requests --------------------------------------------------------------------------------
    def receive_request(self, request, *, request_sha256: str | None = None, supersede: bool = False) -> dict:
        """Record `request.received`; a request id already received with other content is refused.

        With `supersede`, the new content replaces the old and the log says so
        (`request.superseded`, both content hashes). A retry of the same content is the same request.
        """
        content = request_content_sha256(request)
        records = self.log.records()
        earlier = [
            r["fields"].get("request_content_sha256") for r in records
            if r["event"] == audit.REQUEST_RECEIVED and r["fields"]["request_id"] == request.request_id
        ]
        if earlier and earlier[-1] != content:
            if not supersede:
                raise UnlearnopsError(
                    f"request_id {request.request_id}: already received with different content (sha256 "
                    f"{str(earlier[-1])[:12]}…, now {content[:12]}…); give the new request its own request_id, or pass "
                    "--supersede to record that it replaces the earlier one; nothing recorded",
                    field="request_id",
                )
            self.log.append(
                audit.REQUEST_SUPERSEDED, request_id=request.request_id, previous_content_sha256=earlier[-1],
                request_content_sha256=content,
            )
        return self.log.append(
            audit.REQUEST_RECEIVED, request_id=request.request_id, request_sha256=request_sha256,
            request_content_sha256=content, received_at=request.received_at.isoformat(), deadline=request.deadline.isoformat(),
        )

    def request_validated(self, request, snapshot, *, data_files: dict[str, str], request_sha256: str | None = None) -> dict:
        """Record the validated data: the snapshot's hash and location, and each file validation read."""
        listed = [f"{label}={digest}" if len(label) < 190 else f"{sha256_bytes(label.encode())}={digest}" for label, digest in sorted(data_files.items())]
        return self.log.append(
            audit.REQUEST_VALIDATED, request_id=request.request_id, request_sha256=request_sha256,
            request_content_sha256=request_content_sha256(request), data_sha256=snapshot.sha256,
            data_location=snapshot.location, data_files=listed,
        )

    def close_request(self, request_id: str, reason: str) -> dict:
        """Close a received request that will not be satisfied (e.g. its runs failed), with a recorded reason."""
        reason = _one_line(reason)
        records = self.verified_records(action="close a request")
        entry = queries.requests(records).get(request_id)
        if entry is None:
            raise UnlearnopsError(f"--request {request_id}: no request.received record has this id; check it with `unlearnops audit status`")
        if entry.state == "closed":
            raise UnlearnopsError(f"--request {request_id}: already closed ({entry.reason})")
        return self.log.append(audit.REQUEST_CLOSED, request_id=request_id, reason=reason)

    def gate_decided(self, *, passed: bool, report: Path, model_sha256: str | None, run_id: str | None = None, request_id: str | None = None) -> dict:
        """Record a gate decision: the report's sha256 and the model it was measured on."""
        return self.log.append(
            audit.GATE_DECIDED, passed=passed, gate_report_sha256=sha256_file(report), model_sha256=model_sha256,
            run_id=run_id, request_id=request_id,
        )

    # ---- lineage ---------------------------------------------------------------------------------
    def forget_sets(self, ref: str) -> list[tuple[str, Path | None, str | None]]:
        """(request id, forget corpus, problem) for every request a version's signed record claims."""
        _, registration = self.resolve(ref)
        return [(rid, taken.corpus if taken else None, problem) for rid, taken, problem in self.validated_data(registration)]

    def accepted_policies(self, registration: Registration) -> dict[str, tuple[dict | None, str | None]]:
        """request id -> (its registry record holding the policy it was accepted with, problem).

        The policy is read from the version's tag and used only if its hash is the one the signed
        record holds: an edited or removed policy is a problem (the gate fails that request), never
        a looser bound. A request registered without a policy hash has (None, None).
        """
        version = registry.resolve(f"{registration.name}/{registration.version}", tracking_uri=self.tracking_uri)
        tags = version.request_records()
        found = {}
        for request_id in registration.request_ids:
            signed = registration.request_policies.get(request_id)
            record = tags.get(request_id)
            policy = (record or {}).get("policy")
            if signed is None:
                found[request_id] = (None, None)
            elif policy is None or policy_sha256(policy) != signed:
                found[request_id] = (None, (
                    f"request {request_id}: the policy it was accepted with is {'missing from' if policy is None else 'changed in'} "
                    f"the registry (models:/{registration.name}/{registration.version}, tag {registry.request_tag(request_id)}); "
                    "its signed registration record holds another hash"
                ))
            else:
                found[request_id] = (record, None)
        return found

    def validated_data(self, registration: Registration) -> list[tuple[str, Any, str | None]]:
        """(request id, its validated data snapshot, problem) for every request a registration claims.

        The snapshot is found in this workspace by the hash in the signed record and re-checked;
        the problem says why it cannot be re-checked (the gate fails such a request, never skips it).
        """
        found = []
        for request_id in registration.request_ids:
            digest = registration.request_data.get(request_id)
            if digest is None:
                found.append((request_id, None, f"models:/{registration.name}/{registration.version}'s registration record names no validated data for request {request_id}"))
                continue
            try:
                taken = snapshot.load(self.workspace, digest)
                taken.check()
            except UnlearnopsError as err:
                found.append((request_id, None, f"request {request_id}: {err}"))
                continue
            found.append((request_id, taken, None))
        return found

    # ---- verification ----------------------------------------------------------------------------
    def verify(self, *, check_registry: bool = True) -> audit.VerifyResult:
        """The log, its witness and the registry's checkpoint, then registry and log both ways.

        A registration in progress elsewhere (a team's other machine: version created, its record
        appended, its tags and alias not yet set) looks like tampering to a reader that does not
        wait for it. Every writer holds the log's append section for the whole registration
        (`AuditLog.exclusive`), so a disagreement is checked once more inside that section before
        it is reported: a real one stays, a half-finished registration has finished by then.
        """
        result = self._verify_once(check_registry)
        if result.ok:
            return result
        try:
            with self.log.settled():
                return self._verify_once(check_registry)
        except UnlearnopsError:  # the section cannot be taken (a read-only copy of a log): the first answer stands
            return result

    def _verify_once(self, check_registry: bool) -> audit.VerifyResult:
        use_registry = check_registry and self._registry_in_play()
        identity = registry.read_identity(self.tracking_uri) if use_registry else {}
        note = identity.get(CHECKPOINT_TAG)
        result = self.log.verify([(f"checkpoint in registry {registry.redact(self.tracking_uri)}", note)] if note else [])
        if use_registry and result.ok:
            cross_check(self, self.log.records(), identity, result)
        return result

    def _registry_in_play(self) -> bool:
        """A registry to cross-check: one that exists, or one the log says it was written with."""
        if registry.store_exists(self.tracking_uri):
            return True
        try:
            return self._bound_registry(self.log.records()) is not None
        except UnlearnopsError:
            return False

    def bundle(self, request_id: str, *, check_registry: bool = True) -> dict[str, Any]:
        """One request's sealed evidence bundle (audit.queries.bundle) with the full verification.

        A log that does not verify still gets a bundle: it records the failure.
        """
        verification = self.verify(check_registry=check_registry)
        try:
            records = self.log.records()
        except UnlearnopsError:
            records = []  # a line that is not a record: the bundle carries the failed verification
        if records and not queries.lineage(records, request_id).records:
            raise UnlearnopsError(f"--request {request_id}: no record in {self.log.storage.location} names this request; check the id")
        return queries.bundle(
            records, request_id, location=self.log.storage.location, verification=verification.to_dict(),
            checkpoint_note=self.log.checkpoint_note(),
        )
