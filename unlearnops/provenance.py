"""What the audit log and the registry say about a request and the versions that satisfy it.

The one reader that the request report and the endpoint verification share. Every number comes
from data the pipeline already keeps, and every document is checked against the signed record
that attests it before it is believed:

- the gate report: the parent run's `gate/gate.json` artifact, whose sha256 must be the
  `gate_report_sha256` of the version's signed registration record (for a run that registered
  nothing, of a `gate.decided` record of that run);
- the registered evaluations: the `metrics.json` artifact of each `evaluate:<role>` child run
  (settings, sample sizes, notes), whose values must equal the attested gate report's;
- the request's legal record: the parent run's `requests/<id>.json` digest (ids and hashes), whose
  `request_sha256` must be the audit log's `request.received` hash;
- the lineage: `version.registered`, `alias.moved`, `deployment.*` records, and the registry
  versions they name.

- the forget corpus a version was evaluated on: the validated data snapshot its registration
  record names by hash (`evidence.Evidence.validated_data`, re-checked).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import audit, registry
from .errors import UnlearnopsError
from .fileio import read_json, sha256_file
from .workspace import Workspace

GATE_REPORT_ARTIFACT = "gate/gate.json"
REQUEST_DIGESTS = "requests"
EVALUATION_ARTIFACT = "metrics.json"
# The pipeline's child runs for the evaluations of one request (pipeline/evaluation.py labels).
EVALUATION_RUNS = {"source": "evaluate:source", "full_precision": "evaluate:full precision", "quantized": "evaluate:quantized"}


@dataclass
class VersionEvidence:
    """One registered version and the attested documents behind it."""

    name: str
    version: str
    run_id: str | None
    registered: dict[str, Any] | None  # the version.registered record's fields (+ seq, timestamp)
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    gate_report: dict[str, Any] | None = None
    gate_report_sha256: str | None = None
    gate_problem: str | None = None  # why the gate report is not shown (missing, not attested)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> metrics.json

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}" if self.name else f"pipeline run {self.run_id} (not registered)"

    @property
    def request_ids(self) -> list[str]:
        ids = set((self.registered or {}).get("request_ids") or [])
        if not self.registered:
            ids |= set(registry.RegisteredVersion(self.name, self.version, self.tags, [], "").request_ids)
        return sorted(ids)

    @property
    def own_request(self) -> str | None:
        """The request this version was made for: the last it lists (the others it inherits from its source)."""
        ids = (self.registered or {}).get("request_ids") or registry.RegisteredVersion(self.name, self.version, self.tags, [], "").request_ids
        return ids[-1] if ids else None

    @property
    def source_version(self) -> str | None:
        return self.tags.get(registry.TAG_SOURCE_VERSION)


# ---- the audit log -------------------------------------------------------------------------------
def audit_log(workspace: Workspace) -> audit.AuditLog:
    return audit.AuditLog(workspace.audit_log)


def tracking_uri(workspace: Workspace) -> str:
    return registry.tracking_uri_for(workspace)


def verify_log(workspace: Workspace) -> dict[str, Any]:
    """Whether the audit log verifies (records, signatures, witness) and agrees with the registry, as a document."""
    from .evidence import Evidence

    try:
        result = Evidence(workspace).verify()
    except UnlearnopsError as err:
        return {"ok": False, "first_bad_seq": None, "reason": str(err), "checked": 0, "head_hash": None, "versions_checked": 0}
    return result.to_dict()


def fields_of(record: dict) -> dict[str, Any]:
    return {"seq": record["seq"], "timestamp": record["timestamp"], "event": record["event"], **record["fields"]}


def registrations(records: list[dict]) -> dict[tuple[str, str], dict[str, Any]]:
    """(name, version) -> its version.registered record's fields."""
    return {
        (str(r["fields"]["name"]), str(r["fields"]["version"])): fields_of(r)
        for r in records
        if r["event"] == audit.VERSION_REGISTERED
    }


def deployments_of(records: list[dict], name: str, version: str) -> list[dict[str, Any]]:
    """Each deployment of a version: started fields, plus `stopped` (timestamp) and `reason` once stopped."""
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        fields = record["fields"]
        if record["event"] == audit.DEPLOYMENT_STARTED and (str(fields["name"]), str(fields["version"])) == (name, version):
            found[fields["deployment_id"]] = {**fields_of(record), "stopped": None, "stop_reason": None}
        elif record["event"] == audit.DEPLOYMENT_STOPPED and fields["deployment_id"] in found:
            found[fields["deployment_id"]].update(stopped=record["timestamp"], stop_reason=fields.get("reason"))
    return list(found.values())


def gate_records(records: list[dict], run_id: str) -> list[dict[str, Any]]:
    return [fields_of(r) for r in records if r["event"] == audit.GATE_DECIDED and r["fields"].get("run_id") == run_id]


# ---- the registry --------------------------------------------------------------------------------
def version_evidence(name: str, version: str, *, uri: str, records: list[dict]) -> VersionEvidence:
    """A version, its registration record, its attested gate report and its registered evaluations."""
    registered = registrations(records).get((name, str(version)))
    try:
        found = registry.resolve(f"{name}/{version}", tracking_uri=uri)
        tags, aliases = found.tags, found.aliases
    except UnlearnopsError:
        tags, aliases = {}, []
    run_id = tags.get("unlearnops.run_id") or (registered or {}).get("run_id")
    evidence = VersionEvidence(name, str(version), run_id, registered, tags, aliases)
    if run_id:
        attach_gate_report(evidence, uri=uri, records=records)
        evidence.evaluations = registered_evaluations(run_id, uri=uri)
    else:
        evidence.gate_problem = "no pipeline run is recorded for this version (a registered baseline has no gate report)"
    return evidence


def run_evidence(run_id: str, *, uri: str, records: list[dict]) -> VersionEvidence:
    """A pipeline run that registered nothing (its gate failed): its attested gate report and evaluations."""
    evidence = VersionEvidence("", "", run_id, None)
    attach_gate_report(evidence, uri=uri, records=records)
    evidence.evaluations = registered_evaluations(run_id, uri=uri)
    return evidence


def attach_gate_report(evidence: VersionEvidence, *, uri: str, records: list[dict]) -> None:
    """The run's gate.json, believed only when a gate.decided record of that run carries its sha256."""
    found = download_json(uri, evidence.run_id, GATE_REPORT_ARTIFACT)
    if found is None:
        evidence.gate_problem = f"run {evidence.run_id} has no {GATE_REPORT_ARTIFACT} artifact"
        return
    document, digest = found
    # The registration record binds the version to its gate report; a run that registered nothing
    # has only its gate.decided records.
    registered = (evidence.registered or {}).get("gate_report_sha256")
    attested = [registered] if registered else [r.get("gate_report_sha256") for r in gate_records(records, evidence.run_id)]
    if digest not in attested:
        evidence.gate_problem = (
            f"the registry's {GATE_REPORT_ARTIFACT} of run {evidence.run_id} (sha256 {digest[:12]}...) is not the one the audit "
            "log's gate.decided record attests: it was altered or replaced"
        )
        return
    evidence.gate_report, evidence.gate_report_sha256 = document, digest


def registered_evaluations(run_id: str, *, uri: str) -> dict[str, dict[str, Any]]:
    """role -> the evaluate:<role> child run's metrics.json (settings, counts, notes)."""
    mlflow_client = registry.client(uri)
    try:
        parent = mlflow_client.get_run(run_id)
        children = mlflow_client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=200
        )
    except Exception:  # a run deleted from the store: the report says what is missing
        return {}
    names = {run.info.run_name: run.info.run_id for run in children}
    found = {}
    for role, run_name in EVALUATION_RUNS.items():
        if run_name in names and (loaded := download_json(uri, names[run_name], EVALUATION_ARTIFACT)) is not None:
            if isinstance(loaded[0], dict):
                found[role] = loaded[0]
    return found


def request_digest(uri: str, run_id: str, request_id: str, records: list[dict]) -> dict[str, Any] | None:
    """The run's request digest (ids, hashes, dates, legal basis), if it matches the received request's hash."""
    loaded = download_json(uri, run_id, f"{REQUEST_DIGESTS}/{request_id}.json")
    if loaded is None:
        return None
    digest = loaded[0]
    received = {r["fields"].get("request_sha256") for r in records if r["event"] == audit.REQUEST_RECEIVED
                and r["fields"].get("request_id") == request_id}
    if not isinstance(digest, dict) or digest.get("request_sha256") not in received:
        return None
    return digest


def forget_corpus(workspace: Workspace, records: list[dict], name: str, version: str, request_id: str) -> tuple[Path | None, str | None]:
    """(the forget corpus of a request a version satisfies, or None; why not): the validated data snapshot
    its signed registration record names, re-checked against that hash (evidence.snapshot)."""
    from .evidence import Evidence, Registration

    found = [r for r in records if r["event"] == audit.VERSION_REGISTERED and (str(r["fields"]["name"]), str(r["fields"]["version"])) == (name, str(version))]
    if not found:
        return None, f"{name}/{version} has no registration record"
    for found_id, taken, problem in Evidence(workspace).validated_data(Registration.of(found[-1])):
        if found_id == request_id:
            return (taken.corpus if taken else None), problem
    return None, f"{name}/{version} does not satisfy request {request_id}"


def download_json(uri: str, run_id: str, artifact: str) -> tuple[Any, str] | None:
    """(the parsed JSON, the file's sha256) of one artifact of a run, or None when it is absent."""
    registry.client(uri)  # quiets MLflow's output before it is imported
    import mlflow

    with tempfile.TemporaryDirectory(prefix="unlearnops-provenance-") as scratch:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=scratch, tracking_uri=uri)
        except Exception:  # absent, or a run deleted from the store: the caller says what is missing
            return None
        return read_json(path), sha256_file(path)


def quantized_values(evidence: VersionEvidence) -> dict[str, Any] | None:
    """The shipped model's registered metrics: the attested gate report's, else None."""
    report = evidence.gate_report
    return (report.get("metrics") or {}).get("quantized") if isinstance(report, dict) else None
