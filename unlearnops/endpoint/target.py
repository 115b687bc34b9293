"""What should be answering at a URL: the deployment the audit log records there, and the numbers
its registered evaluation measured.

- The deployment: `--deployment ID`, else the live `deployment.started` whose host and port are the
  URL's (a wildcard bind, 0.0.0.0 or ::, matches any host; loopback names match each other), else
  the one live deployment whose served name the server lists. The audit log is verified first: a
  log that does not verify cannot say what is deployed.
- The registered evaluation: the version's attested gate report (its quantized metrics) and the
  `evaluate:quantized` run's metrics.json (limit, context, sample sizes, the retrain AUC), which
  must agree; the data it was measured on (the version's own request): the validated data snapshot
  its signed registration record names, re-checked; the tokenizer and config from the registered
  artifact's small files (no weights are downloaded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import audit, provenance, registry
from ..errors import UnlearnopsError
from ..serve.command import is_loopback
from ..workspace import Workspace
from .measure import MEASURABLE

WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}
# Files of a model directory that a tokenizer and config need; weights are everything else.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")


@dataclass
class Target:
    deployment: dict[str, Any]  # the deployment.started record's fields (+ seq, timestamp, event)
    version: provenance.VersionEvidence
    registered: dict[str, Any]  # metric -> the registered (quantized) value
    limit: int | None
    retrain_auc: float | None
    counts: dict[str, int]
    corpus: Path  # the validated data snapshot's corpus, re-checked against the registration record's hash
    request_data: list[str]  # the registration record's "request id=snapshot sha256" entries
    evaluated_request: str

    @property
    def request_ids(self) -> list[str]:
        return sorted(set(self.deployment.get("request_ids") or []) | set(self.version.request_ids))


# ---- the deployment ------------------------------------------------------------------------------
def verified_records(workspace: Workspace) -> list[dict]:
    """The audit log's records, once the log, its witness and the registry agree (evidence.Evidence)."""
    from ..evidence import Evidence

    return Evidence(workspace).verified_records(action="say what is deployed")


def find_deployment(records: list[dict], url: str, served_ids: list[str], deployment_id: str | None) -> dict[str, Any]:
    started = {r["fields"]["deployment_id"]: r for r in records if r["event"] == audit.DEPLOYMENT_STARTED}
    stopped = {r["fields"]["deployment_id"]: r for r in records if r["event"] == audit.DEPLOYMENT_STOPPED}
    live = [record for key, record in started.items() if key not in stopped]
    if deployment_id:
        if deployment_id not in started:
            raise UnlearnopsError(f"--deployment {deployment_id}: no deployment.started record has this id; list them with `unlearnops audit status`")
        if deployment_id in stopped:
            stop = stopped[deployment_id]
            raise UnlearnopsError(
                f"--deployment {deployment_id}: stopped at {stop['timestamp']} ({stop['fields'].get('reason')}); the audit log "
                "says nothing of it is served now. Verify a live deployment (`unlearnops audit status`)"
            )
        return provenance.fields_of(started[deployment_id])
    at_url = [record for record in live if _same_endpoint(url, record["fields"])]
    if len(at_url) == 1:
        return provenance.fields_of(at_url[0])
    by_name = [record for record in live if record["fields"].get("served_model_name") in served_ids]
    if len(at_url) > 1 or len(by_name) > 1:
        ids = ", ".join(r["fields"]["deployment_id"] for r in (at_url or by_name))
        raise UnlearnopsError(f"--url {url}: several live deployments could be this endpoint ({ids}); pass --deployment ID")
    if by_name:
        return provenance.fields_of(by_name[0])
    raise UnlearnopsError(
        f"--url {url}: no live deployment in the audit log is served there or under a name it lists ({', '.join(served_ids) or 'none'}); "
        "pass --deployment ID (`unlearnops audit status` lists them)"
    )


def _same_endpoint(url: str, fields: dict[str, Any]) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if fields.get("port") != port:
        return False
    host, recorded = (parts.hostname or "").lower(), str(fields.get("host") or "").lower()
    return recorded in WILDCARD_HOSTS or host == recorded or (is_loopback(host) and is_loopback(recorded))


# ---- the registered evaluation -------------------------------------------------------------------
def resolve_target(workspace: Workspace, records: list[dict], deployment: dict[str, Any], *, skip: tuple[str, ...] = ()) -> Target:
    uri = provenance.tracking_uri(workspace)
    version = provenance.version_evidence(deployment["name"], str(deployment["version"]), uri=uri, records=records)
    if version.gate_report is None:
        raise UnlearnopsError(f"{version.ref}: no registered evaluation to compare with ({version.gate_problem})")
    values = provenance.quantized_values(version) or {}
    evaluation = version.evaluations.get("quantized") or {}
    _check_agreement(version, values, evaluation)
    evaluated = version.own_request
    if evaluated is None:
        raise UnlearnopsError(f"{version.ref}: satisfies no request; there is no forget set to verify it on")
    corpus, problem = provenance.forget_corpus(workspace, records, version.name, version.version, evaluated)
    if corpus is None:
        raise UnlearnopsError(
            f"{version.ref}: the data it was evaluated on (request {evaluated}) cannot be read here ({problem}); the validated "
            "data snapshot must be in this workspace's data/ folder (copy it from the workspace that ran the request)"
        )
    settings = evaluation.get("settings") or {}
    registered = {key: values[key] for key in (*MEASURABLE, "auc") if key not in skip and _finite(values.get(key))}
    if "privleak" in skip:
        registered.pop("auc", None)
    return Target(
        deployment, version, registered, settings.get("limit"), evaluation.get("retrain_auc"), evaluation.get("counts") or {},
        corpus, (version.registered or {}).get("request_data") or [], evaluated,
    )


def _check_agreement(version: provenance.VersionEvidence, values: dict[str, Any], evaluation: dict[str, Any]) -> None:
    if not evaluation:
        raise UnlearnopsError(
            f"{version.ref}: the registry has no evaluate:quantized run with metrics.json for run {version.run_id}; "
            "its sample sizes and settings are unknown, so the endpoint cannot be measured the same way"
        )
    for key in MEASURABLE:
        a, b = values.get(key), evaluation.get(key)
        if _finite(a) != _finite(b) or (_finite(a) and abs(a - b) > 1e-6):
            raise UnlearnopsError(
                f"{version.ref}: the registered evaluation's {key} ({b}) differs from the attested gate report's ({a}); "
                "the registry's run artifacts were altered"
            )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fetch_tokenizer(version: provenance.VersionEvidence, uri: str, into: Path) -> Path:
    """The registered artifact's files except the weights (config, tokenizer), into `into`."""
    registry.client(uri)
    import mlflow

    location = registry.client(uri).get_model_version_download_uri(version.name, version.version).rstrip("/")
    try:
        listed = mlflow.artifacts.list_artifacts(artifact_uri=location, tracking_uri=uri)
        for item in listed:
            name = Path(item.path).name
            if not item.is_dir and not name.endswith(WEIGHT_SUFFIXES):
                mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{name}", dst_path=str(into), tracking_uri=uri)
    except Exception as err:
        raise UnlearnopsError(f"{version.ref}: cannot read its tokenizer from the artifact store ({registry.error_summary(err)})") from None
    if not (into / "config.json").is_file():
        raise UnlearnopsError(f"{version.ref}: its artifact has no config.json; pass --tokenizer DIR")
    return into
