"""The MLflow model registry: versions, tags, aliases and the lineage of forget requests.

Aliases and version tags only, never stages (deprecated in MLflow). A version is the quantized
model that passed (or failed) its gate, logged as the artifact directory `model/` of the
pipeline's parent run and registered with `MlflowClient.create_model_version(source="runs:/...")`.
`mlflow.register_model("runs:/<run>/model")` does not work in MLflow 3.17 for plain artifacts:
it looks for a LoggedModel, fails, and leaves an empty registered model behind (measured).

Tags on every version (one home: the TAG_* constants below):
  unlearnops.request_ids        JSON list, cumulative over the lineage (source's ids + this one)
  unlearnops.request.<id>       JSON {"forget_corpus": dir, "corpus_sha256": hash, "policy": {...}}:
                                where each inherited request's forget set lives and the gate
                                policy it was accepted with (policy.policy_record), so the gate
                                can re-check it under that policy
  unlearnops.source_version     "NAME/VERSION" of the model that was unlearned
  unlearnops.gate               "passed" / "failed"; unlearnops.metric.<key> the gated metrics
  unlearnops.gate_skipped       JSON list of the checks that passed unmeasured (the policy's may_skip)
  unlearnops.model_sha256       fileio.sha256_tree of the quantized directory (checked on download)
  unlearnops.fp_model_sha256    the same for the run's `fp_model/` artifact: the merged full-precision
                                weights a later request unlearns from (a 4-bit model cannot be
                                trained precisely; the baseline source has none, it is full precision)
  unlearnops.run_key            the pipeline's content key: registering twice is a no-op
  unlearnops.audit_head         hash of this version's `version.registered` audit record
  unlearnops.role               "source" for a registered baseline, "unlearned" otherwise
  unlearnops.registered_alias   the alias it got at registration (set last: registration complete)

Order of a registration (each step idempotent, so a rerun after a crash completes it):
create the version with every tag above except audit_head -> append `version.registered` to the
audit log -> tag audit_head with that record's hash -> move the alias -> append `alias.moved`
-> tag registered_alias.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import UnlearnopsError
from .fileio import sha256_tree

EXPERIMENT = "unlearnops"
MODEL_ARTIFACT = "model"
FULL_PRECISION_ARTIFACT = "fp_model"  # the merged full-precision weights: what a later request unlearns from
CANDIDATE = "candidate"
PRODUCTION = "production"
SOURCE_MODEL_NAME = "unlearnops-bench"

TAG_REQUEST_IDS = "unlearnops.request_ids"
TAG_REQUEST_PREFIX = "unlearnops.request."
TAG_SOURCE_VERSION = "unlearnops.source_version"
TAG_GATE = "unlearnops.gate"
TAG_GATE_SKIPPED = "unlearnops.gate_skipped"
TAG_METRIC_PREFIX = "unlearnops.metric."
TAG_MODEL_SHA = "unlearnops.model_sha256"
TAG_FP_SHA = "unlearnops.fp_model_sha256"
TAG_RUN_KEY = "unlearnops.run_key"
TAG_AUDIT_HEAD = "unlearnops.audit_head"
TAG_ROLE = "unlearnops.role"
TAG_REGISTERED_ALIAS = "unlearnops.registered_alias"
TAG_QUANT_SCHEME = "unlearnops.quant_scheme"
TAG_METHOD = "unlearnops.method"

_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key|auth|cred", re.IGNORECASE)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]+@")
_REF = re.compile(r"^(?:models:/)?(?P<name>[^@/]+(?:/[^@/]+)*?)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>\d+))$")


# ---- tracking URI -------------------------------------------------------------------------


def redact(uri: str) -> str:
    """The URI with its credentials masked: user:password@host -> ***@host, ?token=... -> ***.

    The one place a tracking URI is turned into something printable (logs, params, output).
    """
    parts = urlsplit(uri)
    if parts.scheme in ("", "file") or not (parts.netloc or parts.query):
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode(
        [(key, "***" if _SECRET_QUERY_KEYS.search(key) else value) for key, value in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def tracking_uri_for(workspace) -> str:
    """$MLFLOW_TRACKING_URI if set (a team server), else the workspace's sqlite database."""
    return os.environ.get("MLFLOW_TRACKING_URI") or workspace.tracking_uri


def _quiet_mlflow() -> None:
    # MLflow prints "View run ... at: <tracking uri>" on stdout (would leak credentials and break
    # --json) and draws download progress bars; the schema migration logs at INFO.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # It logs every SQL error with a traceback, then raises it: the CLI reports that in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def client(tracking_uri: str):
    _quiet_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, artifact_root: Path | None, name: str = EXPERIMENT) -> str:
    """The experiment id; a sqlite/local store keeps its artifacts under the workspace."""
    mlflow_client = client(tracking_uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A remote server decides its own artifact store (e.g. MinIO); only a local store gets ours.
    local = tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:")
    location = artifact_root.resolve().as_uri() if (local and artifact_root is not None) else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception as err:  # a concurrent creator won the race
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise UnlearnopsError(f"MLflow at {redact(tracking_uri)}: cannot create experiment '{name}' ({error_summary(err)})") from None
        return experiment.experiment_id


def error_summary(err: Exception) -> str:
    """The first line of an MLflow error, with any credentials in URLs it quotes masked."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return _USERINFO.sub(r"\1***@", text)


# ---- versions -----------------------------------------------------------------------------


@dataclass
class RegisteredVersion:
    name: str
    version: str
    tags: dict[str, str]
    aliases: list[str]
    tracking_uri: str = field(repr=False)
    source: str = ""

    @property
    def gate_passed(self) -> bool:
        return self.tags.get(TAG_GATE) == "passed"

    @property
    def request_ids(self) -> list[str]:
        return json.loads(self.tags.get(TAG_REQUEST_IDS) or "[]")

    @property
    def ref(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def request_records(self) -> dict[str, dict[str, Any]]:
        """request id -> {"forget_corpus", "corpus_sha256"} for every request this version satisfies."""
        return {
            key[len(TAG_REQUEST_PREFIX) :]: json.loads(value)
            for key, value in self.tags.items()
            if key.startswith(TAG_REQUEST_PREFIX)
        }

    def forget_sets(self) -> list[tuple[str, Path | None, str | None]]:
        """(request id, forget corpus dir, problem) for every request this version satisfies.

        The problem names why the set cannot be re-checked (not recorded, gone, or changed since
        registration, by its sha256); the gate fails such a request rather than skip it.
        """
        records = self.request_records()
        found = []
        for request_id in self.request_ids:
            record = records.get(request_id)
            corpus = Path(record["forget_corpus"]) if record else None
            problem = None
            if corpus is None:
                problem = f"{self.ref} records no forget corpus for request {request_id}"
            elif not corpus.is_dir():
                problem = f"forget corpus {corpus} of request {request_id} is gone; restore it to re-check the request"
            elif (digest := sha256_tree(corpus)) != record.get("corpus_sha256"):
                problem = f"forget corpus {corpus} of request {request_id} changed since registration (sha256 {digest[:12]}...)"
            found.append((request_id, None if problem else corpus, problem))
        return found

    def metrics(self) -> dict[str, float]:
        return {key[len(TAG_METRIC_PREFIX) :]: float(value) for key, value in self.tags.items() if key.startswith(TAG_METRIC_PREFIX)}

    def download(self, dst: Path | str) -> Path:
        """Download the quantized model directory into `dst`; verify it against its sha256 tag."""
        location = client(self.tracking_uri).get_model_version_download_uri(self.name, self.version)
        return self._fetch(location, dst, self.tags.get(TAG_MODEL_SHA))

    def download_full_precision(self, dst: Path | str) -> Path:
        """The full-precision weights to unlearn from: the `fp_model/` artifact, or the model itself for a baseline."""
        if TAG_FP_SHA not in self.tags:
            return self.download(dst)
        run_id = self.source.split("/")[1] if self.source.startswith("runs:/") else None
        if run_id is None:
            raise UnlearnopsError(f"{self.ref}: its source {self.source} is not a run; cannot find its full-precision weights")
        return self._fetch(f"runs:/{run_id}/{FULL_PRECISION_ARTIFACT}", dst, self.tags[TAG_FP_SHA])

    def _fetch(self, location: str, dst: Path | str, expected: str | None) -> Path:
        # The version's own location (runs:/... or a store URI): models:/ would need the
        # process-global registry URI, which a library must not set behind its caller's back.
        _quiet_mlflow()
        import mlflow

        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        try:
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst), tracking_uri=self.tracking_uri))
        except Exception as err:
            raise UnlearnopsError(f"{self.ref}: cannot download its artifacts ({error_summary(err)})") from None
        if expected and sha256_tree(path) != expected:
            raise UnlearnopsError(f"{self.ref}: downloaded files do not match the registered sha256 tag; the artifact store was altered")
        return path

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "aliases": self.aliases,
            "gate": self.tags.get(TAG_GATE, "unknown"),
            "gate_passed": self.gate_passed,
            "request_ids": self.request_ids,
            "source_version": self.tags.get(TAG_SOURCE_VERSION),
            "role": self.tags.get(TAG_ROLE),
            "metrics": self.metrics(),
            "tags": self.tags,
        }


def _from_mlflow(model_version, tracking_uri: str, aliases: list[str] | None = None) -> RegisteredVersion:
    return RegisteredVersion(
        name=model_version.name,
        version=str(model_version.version),
        tags=dict(model_version.tags or {}),
        aliases=sorted(aliases if aliases is not None else (model_version.aliases or [])),
        tracking_uri=tracking_uri,
        source=model_version.source or "",
    )


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias) of `models:/NAME@alias`, `NAME@alias`, `models:/NAME/VERSION` or `NAME/VERSION`."""
    match = _REF.match(ref.strip())
    if not match:
        raise UnlearnopsError(
            f"model reference '{ref}': not understood; use models:/NAME@alias, NAME@alias, models:/NAME/VERSION or NAME/VERSION"
        )
    return match["name"], match["version"], match["alias"]


def resolve(ref: str, *, tracking_uri: str) -> RegisteredVersion:
    """The registered version a reference names (alias or number)."""
    name, version, alias = parse_ref(ref)
    mlflow_client = client(tracking_uri)
    try:
        if alias:
            found = mlflow_client.get_model_version_by_alias(name, alias)
        else:
            found = mlflow_client.get_model_version(name, version)
        found = mlflow_client.get_model_version(found.name, found.version)  # by-alias omits some aliases
    except Exception as err:
        raise UnlearnopsError(
            f"model reference '{ref}': not found in the registry at {redact(tracking_uri)} ({error_summary(err)}); "
            "list what exists with `unlearnops models`"
        ) from None
    return _from_mlflow(found, tracking_uri, _aliases_of(mlflow_client, found.name, str(found.version)))


def _aliases_of(mlflow_client, name: str, version: str) -> list[str]:
    registered = mlflow_client.get_registered_model(name)
    return [alias for alias, target in (registered.aliases or {}).items() if str(target) == version]


def list_versions(name: str | None = None, *, tracking_uri: str) -> list[RegisteredVersion]:
    """Every version (of `name`, or of every model), newest first within a model."""
    mlflow_client = client(tracking_uri)
    filter_string = f"name = '{_quote(name)}'" if name else None
    found = list(mlflow_client.search_model_versions(filter_string, max_results=1000))
    if name and not found:
        raise UnlearnopsError(f"model '{name}': no versions in the registry at {redact(tracking_uri)}; list all with `unlearnops models`")
    alias_maps = {model: mlflow_client.get_registered_model(model).aliases or {} for model in {v.name for v in found}}
    versions = [
        _from_mlflow(v, tracking_uri, [a for a, t in alias_maps[v.name].items() if str(t) == str(v.version)]) for v in found
    ]
    return sorted(versions, key=lambda v: (v.name, -int(v.version)))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def find_by_run_key(name: str, run_key: str, *, tracking_uri: str) -> RegisteredVersion | None:
    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.get_registered_model(name)
    except Exception:
        return None
    matches = mlflow_client.search_model_versions(f"name = '{_quote(name)}' and tags.`{TAG_RUN_KEY}` = '{_quote(run_key)}'")
    return _from_mlflow(matches[0], tracking_uri, []) if matches else None


def request_tag(request_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,200}", request_id):
        raise UnlearnopsError(f"request id '{request_id}': only letters, digits, '.', '_' and '-' can be recorded in the registry")
    return TAG_REQUEST_PREFIX + request_id


def register_version(
    *,
    name: str,
    run_id: str,
    tags: dict[str, str],
    run_key: str,
    tracking_uri: str,
    audit=None,
    alias: str = CANDIDATE,
) -> RegisteredVersion:
    """Register the run's `model/` artifact as a new version of `name` (idempotent on `run_key`).

    A rerun with the same run_key finds the version it created and completes whatever step a
    crash interrupted (audit record, audit head tag, alias) instead of registering twice.
    """
    from . import audit as audit_module

    mlflow_client = client(tracking_uri)
    existing = find_by_run_key(name, run_key, tracking_uri=tracking_uri)
    if existing is None:
        try:
            mlflow_client.get_registered_model(name)
        except Exception:
            mlflow_client.create_registered_model(name, description="Quantized models produced by unlearnops, one version per forget request.")
        created = mlflow_client.create_model_version(
            name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id, tags={**tags, TAG_RUN_KEY: run_key}
        )
        existing = _from_mlflow(created, tracking_uri, [])
    if audit is not None and TAG_AUDIT_HEAD not in existing.tags:
        record = audit.append(
            audit_module.VERSION_REGISTERED,
            name=name,
            version=int(existing.version),
            run_id=run_id,
            request_ids=existing.request_ids,
            gate_passed=existing.gate_passed,
            model_sha256=existing.tags.get(TAG_MODEL_SHA),
        )
        mlflow_client.set_model_version_tag(name, existing.version, TAG_AUDIT_HEAD, record["hash"])
    # The alias is moved once, when the version is registered; a rerun of the same request must
    # not pull @candidate back from a newer version. TAG_REGISTERED_ALIAS marks that step as done.
    if TAG_REGISTERED_ALIAS not in existing.tags:
        move_alias(name, existing.version, alias, tracking_uri=tracking_uri, audit=audit)
        mlflow_client.set_model_version_tag(name, existing.version, TAG_REGISTERED_ALIAS, alias)
    return resolve(f"{name}/{existing.version}", tracking_uri=tracking_uri)


def move_alias(name: str, version: str, alias: str, *, tracking_uri: str, audit=None) -> None:
    from . import audit as audit_module

    mlflow_client = client(tracking_uri)
    current = mlflow_client.get_registered_model(name).aliases or {}
    if str(current.get(alias)) == str(version):
        return
    mlflow_client.set_registered_model_alias(name, alias, str(version))
    if audit is not None:
        previous = current.get(alias)
        audit.append(
            audit_module.ALIAS_MOVED,
            name=name,
            alias=alias,
            version=int(version),
            previous_version=int(previous) if previous is not None else None,
        )


def promote(ref: str, *, tracking_uri: str, audit=None, alias: str = PRODUCTION) -> RegisteredVersion:
    """Point `alias` (production) at a version; refuse one that did not pass its gate."""
    target = resolve(ref, tracking_uri=tracking_uri)
    if not target.gate_passed:
        raise UnlearnopsError(
            f"{target.ref}: its gate is '{target.tags.get(TAG_GATE, 'unknown')}', not 'passed'; only a version that "
            "passed its release gate can be promoted (run the request again with a policy it meets)"
        )
    move_alias(target.name, target.version, alias, tracking_uri=tracking_uri, audit=audit)
    return resolve(f"{target.name}/{target.version}", tracking_uri=tracking_uri)


def log_model_run(model_dir: Path, *, tracking_uri: str, artifact_root: Path | None, run_name: str, params: dict[str, Any]) -> str:
    """A run whose `model/` artifact is `model_dir`; returns its run id."""
    _quiet_mlflow()
    mlflow_client = client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, artifact_root)
    run = mlflow_client.create_run(experiment_id, run_name=run_name)
    for key, value in params.items():
        mlflow_client.log_param(run.info.run_id, key, value)
    mlflow_client.log_artifacts(run.info.run_id, str(model_dir), MODEL_ARTIFACT)
    mlflow_client.set_terminated(run.info.run_id)
    return run.info.run_id


def register_source_model(
    model_dir: Path | str,
    *,
    tracking_uri: str,
    artifact_root: Path | None,
    name: str = SOURCE_MODEL_NAME,
    audit=None,
    metrics: dict[str, float] | None = None,
) -> RegisteredVersion:
    """Register a baseline model (the bench target) as `name`@production, once.

    Its gate tag is "passed" by definition (it is the baseline that unlearning starts from) and
    its role tag is "source"; it satisfies no forget request yet.
    """
    model_dir = Path(model_dir)
    try:
        return resolve(f"{name}@{PRODUCTION}", tracking_uri=tracking_uri)
    except UnlearnopsError:
        pass
    model_sha = sha256_tree(model_dir)
    run_id = log_model_run(model_dir, tracking_uri=tracking_uri, artifact_root=artifact_root, run_name=f"register source {name}", params={"source_dir": str(model_dir)})
    tags = {
        TAG_ROLE: "source",
        TAG_GATE: "passed",
        TAG_REQUEST_IDS: "[]",
        TAG_MODEL_SHA: model_sha,
        **{TAG_METRIC_PREFIX + key: str(value) for key, value in (metrics or {}).items()},
    }
    registered = register_version(
        name=name, run_id=run_id, tags=tags, run_key=f"source:{model_sha}", tracking_uri=tracking_uri, audit=audit, alias=PRODUCTION
    )
    return registered
