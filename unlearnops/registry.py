"""The MLflow model registry: versions, tags, aliases and the lineage of forget requests.

Aliases and version tags only, never stages (deprecated in MLflow). A version is the quantized
model that passed (or failed) its gate, logged as the artifact directory `model/` of the
pipeline's parent run and registered with `MlflowClient.create_model_version(source="runs:/...")`.
`mlflow.register_model("runs:/<run>/model")` does not work in MLflow 3.17 for plain artifacts:
it looks for a LoggedModel, fails, and leaves an empty registered model behind (measured).

Tags on every version (one home: the TAG_* constants and `version_tags`, the one builder):
  unlearnops.request_ids        JSON list, cumulative over the lineage (source's ids + this one)
  unlearnops.request.<id>       JSON {"corpus_sha256", "location", "policy"}: the content hash of the
                                request's validated data, where a workspace keeps it (workspace-
                                relative, meaningful in a shared registry) and the gate policy it was
                                accepted with (its hash is in the signed registration record)
  unlearnops.source_version     "NAME/VERSION" of the model that was unlearned
  unlearnops.gate               "passed" / "failed"; unlearnops.metric.<key> the gated metrics
  unlearnops.gate_skipped       JSON list of the checks that passed unmeasured (the policy's may_skip)
  unlearnops.model_sha256       fileio.sha256_tree of the quantized directory (checked on download)
  unlearnops.fp_model_sha256    the same for the run's `fp_model/` artifact: the merged full-precision
                                weights a later request unlearns from
  unlearnops.run_key            the content key of what was registered: registering twice is a no-op
  unlearnops.audit_head         hash of this version's signed `version.registered` audit record
  unlearnops.role               "source" for a registered baseline, "unlearned" otherwise
  unlearnops.registered_alias   the alias it got at registration (set last: registration complete)

Tags are for people and tools browsing MLflow; they are editable by anyone with write access to
the registry, so no decision reads them. `unlearnops.evidence` takes the gate decision, the model
hash and the requests from the signed registration record, and its `verify` names every tag,
version or alias that disagrees with the log. This module is MLflow only: it never writes the
audit log (data flows one way: evidence -> registry, evidence -> audit).

The registry's identity (tags of the `unlearnops` experiment: a random registry id, the audit
log's id, public key and fingerprint, and its latest signed checkpoint) lets the evidence layer
refuse a tracking URI that points at another registry than the one the log was written with.
"""

from __future__ import annotations

import json
import logging
import math
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


def tracking_uri_for(workspace, *, create: bool = True) -> str:
    """$MLFLOW_TRACKING_URI if set (a team server), else the workspace's sqlite database.

    create=False names the workspace's store without creating it: commands that only read (audit
    verify/show/status/export) must not leave a new, empty registry behind.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return workspace.tracking_uri if create else f"sqlite:///{workspace.tracking_db}"


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
        """What the gate TAG says (display only: decisions read the signed record, evidence.registration)."""
        return self.tags.get(TAG_GATE) == "passed"

    @property
    def request_ids(self) -> list[str]:
        """The request-ids tag, or [] when it is malformed (tag_problems() says so)."""
        value = _json_tag(self.tags.get(TAG_REQUEST_IDS) or "[]")
        return value if isinstance(value, list) and all(isinstance(item, str) for item in value) else []

    @property
    def ref(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def request_records(self) -> dict[str, dict[str, Any]]:
        """request id -> {"corpus_sha256", "location"} from the per-request tags (malformed ones left out)."""
        records = {}
        for key, value in self.tags.items():
            if key.startswith(TAG_REQUEST_PREFIX) and isinstance(parsed := _json_tag(value), dict):
                records[key[len(TAG_REQUEST_PREFIX) :]] = parsed
        return records

    def metrics(self) -> dict[str, float]:
        """The metric tags that are numbers (tag_problems() names the others)."""
        found = {}
        for key, value in self.tags.items():
            if key.startswith(TAG_METRIC_PREFIX) and (number := _number_tag(value)) is not None:
                found[key[len(TAG_METRIC_PREFIX) :]] = number
        return found

    def tag_problems(self) -> list[str]:
        """Tags that cannot be read: a registry inconsistency to report, never a crash."""
        problems = []
        ids = _json_tag(self.tags.get(TAG_REQUEST_IDS) or "[]")
        if not (isinstance(ids, list) and all(isinstance(item, str) for item in ids)):
            problems.append(f"tag {TAG_REQUEST_IDS} is not a JSON list of request ids")
        for key, value in sorted(self.tags.items()):
            if key.startswith(TAG_METRIC_PREFIX) and _number_tag(value) is None:
                problems.append(f"tag {key} is not a number")
            elif key.startswith(TAG_REQUEST_PREFIX) and not isinstance(_json_tag(value), dict):
                problems.append(f"tag {key} is not a JSON object")
        return problems

    def download(self, dst: Path | str, expected_sha256: str | None = None) -> Path:
        """Download the quantized model directory into `dst`; verify it against `expected_sha256`
        (the signed registration record's model hash; the tag when not given)."""
        location = client(self.tracking_uri).get_model_version_download_uri(self.name, self.version)
        return self._fetch(location, dst, expected_sha256 or self.tags.get(TAG_MODEL_SHA))

    def download_full_precision(self, dst: Path | str, expected_sha256: str | None = None) -> Path:
        """The full-precision weights to unlearn from: the `fp_model/` artifact, or the model itself
        for a baseline; checked against `expected_sha256` (the signed record's; the tags when not given)."""
        if TAG_FP_SHA not in self.tags:
            return self.download(dst, expected_sha256)
        run_id = self.source.split("/")[1] if self.source.startswith("runs:/") else None
        if run_id is None:
            raise UnlearnopsError(f"{self.ref}: its source {self.source} is not a run; cannot find its full-precision weights")
        return self._fetch(f"runs:/{run_id}/{FULL_PRECISION_ARTIFACT}", dst, expected_sha256 or self.tags[TAG_FP_SHA])

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
        if expected and (found := sha256_tree(path)) != expected:
            raise UnlearnopsError(
                f"{self.ref}: the registry's files hash to {found[:12]}..., not the registered {expected[:12]}...; "
                "refusing them (the artifact store was altered); restore the artifact or register the model again"
            )
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
            "problems": self.tag_problems(),
        }


def _json_tag(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:  # invalid JSON, or an integer beyond 4,300 digits
        return None


def _number_tag(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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
    found = _search_all(mlflow_client, f"name = '{_quote(name)}'" if name else None)
    if name and not found:
        raise UnlearnopsError(f"model '{name}': no versions in the registry at {redact(tracking_uri)}; list all with `unlearnops models`")
    alias_maps = {model: mlflow_client.get_registered_model(model).aliases or {} for model in {v.name for v in found}}
    versions = [
        _from_mlflow(v, tracking_uri, [a for a, t in alias_maps[v.name].items() if str(t) == str(v.version)]) for v in found
    ]
    return sorted(versions, key=lambda v: (v.name, -int(v.version)))


def _search_all(mlflow_client, filter_string: str | None) -> list:
    """Every matching model version, page after page (a registry can hold more than one page)."""
    found, page_token = [], None
    while True:
        page = mlflow_client.search_model_versions(filter_string, max_results=1000, page_token=page_token)
        found.extend(page)
        page_token = page.token
        if not page_token:
            return found


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


def version_tags(
    *,
    role: str,
    model_sha256: str,
    gate_passed: bool,
    request_ids: list[str],
    request_data: dict[str, dict[str, str]] | None = None,
    source_version: str | None = None,
    fp_model_sha256: str | None = None,
    metrics: dict[str, float] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The tags of a new version: the one place they are built (pipeline, `register`, baselines).

    Refuses a request id the registry cannot hold before anything is written.
    """
    tags = {
        TAG_ROLE: role,
        TAG_GATE: "passed" if gate_passed else "failed",
        TAG_MODEL_SHA: model_sha256,
        TAG_REQUEST_IDS: json.dumps(list(request_ids)),
        **{request_tag(rid): json.dumps(record, sort_keys=True) for rid, record in (request_data or {}).items()},
        **{TAG_METRIC_PREFIX + key: f"{float(value):.4f}" for key, value in (metrics or {}).items()},
        **(extra or {}),
    }
    for request_id in request_ids:
        request_tag(request_id)
    if source_version:
        tags[TAG_SOURCE_VERSION] = source_version
    if fp_model_sha256:
        tags[TAG_FP_SHA] = fp_model_sha256
    return tags


def create_version(name: str, *, run_id: str, tags: dict[str, str], run_key: str, tracking_uri: str) -> RegisteredVersion:
    """The version registered for `run_key`, created (with `tags`) if there is none yet."""
    existing = find_by_run_key(name, run_key, tracking_uri=tracking_uri)
    if existing is not None:
        return existing
    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.get_registered_model(name)
    except Exception:
        try:
            mlflow_client.create_registered_model(name, description="Quantized models produced by unlearnops, one version per forget request.")
        except Exception:  # on a shared server another engineer's run may have created it first
            mlflow_client.get_registered_model(name)
    created = mlflow_client.create_model_version(
        name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id, tags={**tags, TAG_RUN_KEY: run_key}
    )
    return _from_mlflow(created, tracking_uri, [])


def set_version_tag(name: str, version: str, key: str, value: str, *, tracking_uri: str) -> None:
    client(tracking_uri).set_model_version_tag(name, str(version), key, value)


def model_aliases(name: str, *, tracking_uri: str) -> dict[str, str]:
    """alias -> version of a registered model ({} when the model does not exist)."""
    try:
        registered = client(tracking_uri).get_registered_model(name)
    except Exception:
        return {}
    return {alias: str(version) for alias, version in (registered.aliases or {}).items()}


def set_alias(name: str, alias: str, version: str, *, tracking_uri: str) -> str | None:
    """Point `alias` at `version`; returns the version it pointed at before (None if unset)."""
    previous = model_aliases(name, tracking_uri=tracking_uri).get(alias)
    if previous != str(version):
        client(tracking_uri).set_registered_model_alias(name, alias, str(version))
    return previous


# ---- the registry's identity ----------------------------------------------------------------
IDENTITY_PREFIX = "unlearnops."


def store_exists(tracking_uri: str) -> bool:
    """False for a workspace sqlite store never created (nothing to read, and reading would create it)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).is_file()
    return True


def read_identity(tracking_uri: str) -> dict[str, str]:
    """The unlearnops tags of the registry's `unlearnops` experiment ({} for a registry without them)."""
    if not store_exists(tracking_uri):
        return {}
    experiment = client(tracking_uri).get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return {}
    return {key: value for key, value in (experiment.tags or {}).items() if key.startswith(IDENTITY_PREFIX)}


def write_identity(tracking_uri: str, artifact_root: Path | None, tags: dict[str, str]) -> None:
    mlflow_client = client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, artifact_root)
    for key, value in tags.items():
        mlflow_client.set_experiment_tag(experiment_id, key, value)


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
