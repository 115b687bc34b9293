"""What the registry says about a version, and its files on disk, checked against it.

Two questions have exactly one answer each here, so that where the answer comes from can change
in one line (today: the version's registry tags; later: a signed registration record):
`expected_sha256(version)` and `passed_gate(version)`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import audit
from ..errors import UnlearnopsError
from ..fileio import atomic_dir, read_json, sha256_tree
from ..registry import TAG_GATE, TAG_MODEL_SHA, RegisteredVersion, client, error_summary
from .deployment import records_or_empty

# Files that carry a chat template in a Hugging Face directory (transformers 5 writes the .jinja one).
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def expected_sha256(version: RegisteredVersion) -> str:
    """The hash the version's files must have: the one answer `serve` trusts."""
    expected = version.tags.get(TAG_MODEL_SHA)
    if not expected:
        raise UnlearnopsError(
            f"{version.ref}: records no model hash (tag {TAG_MODEL_SHA}), so its files cannot be checked before "
            "serving; register it again with `unlearnops register`"
        )
    return expected


def passed_gate(version: RegisteredVersion) -> bool:
    """Whether the version passed its gate: the one answer `serve` trusts."""
    return version.gate_passed


def gate_refusal(ref: str, version: RegisteredVersion) -> str:
    return (
        f"{ref}: model {version.name} version {version.version} did not pass the gate "
        f"(tag {TAG_GATE}={version.tags.get(TAG_GATE)!r}); serve a version that passed, or rerun the pipeline"
    )


@dataclass(frozen=True)
class ModelFacts:
    """What the route decision and the command need from a model directory's small files."""

    config: dict
    has_chat_template: bool

    @classmethod
    def of_dir(cls, model_dir: Path) -> ModelFacts:
        config = read_json(model_dir / "config.json")
        if not isinstance(config, dict):
            raise UnlearnopsError(f"{model_dir / 'config.json'}: expected a JSON object; this is not a model directory")
        tokenizer_path = model_dir / "tokenizer_config.json"
        tokenizer_config = read_json(tokenizer_path) if tokenizer_path.is_file() else {}
        in_config = isinstance(tokenizer_config, dict) and bool(tokenizer_config.get("chat_template"))
        return cls(config, in_config or any((model_dir / f).is_file() for f in CHAT_TEMPLATE_FILES))


def registered_facts(version: RegisteredVersion) -> ModelFacts:
    """config.json and whether a chat template ships, read from the artifact store alone (no download)."""
    import mlflow

    location = client(version.tracking_uri).get_model_version_download_uri(version.name, version.version).rstrip("/")
    with tempfile.TemporaryDirectory() as scratch:
        try:
            names = {Path(item.path).name for item in mlflow.artifacts.list_artifacts(artifact_uri=location, tracking_uri=version.tracking_uri)}
            for name in ("config.json", "tokenizer_config.json", *CHAT_TEMPLATE_FILES):
                if name in names:
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=f"{location}/{name}", dst_path=scratch, tracking_uri=version.tracking_uri
                    )
        except Exception as err:
            raise UnlearnopsError(f"{version.ref}: cannot read its config.json from the artifact store ({error_summary(err)})") from None
        if "config.json" not in names:
            raise UnlearnopsError(f"{version.ref}: its artifact has no config.json; it is not a model directory")
        return ModelFacts.of_dir(Path(scratch))


def fetch_verified(version: RegisteredVersion, model_dir: Path, *, notify: Callable[[str], None] | None = None) -> str:
    """Make `model_dir` hold exactly the registered files; return their sha256.

    The directory vLLM will be handed is hashed every time: a cached copy that no longer matches
    the registered hash is downloaded again; a download that does not match is refused.
    """
    notify = notify or (lambda _line: None)
    expected = expected_sha256(version)
    if model_dir.is_dir():
        if sha256_tree(model_dir) == expected:
            return expected
        notify(f"{model_dir} does not hash to the registered sha256 {expected[:12]}...; downloading it again")
    else:
        notify(f"downloading {version.ref} into {model_dir}")
    with atomic_dir(model_dir) as staging:
        fetch_root = (staging / ".fetch").resolve()
        fetched = Path(version.download(fetch_root)).resolve()
        if fetched != fetch_root and fetch_root not in fetched.parents:
            raise UnlearnopsError(f"{version.ref}: download landed outside {fetch_root}; report this bug")
        for child in list(fetched.iterdir()):  # the model's files at the top, where vLLM looks
            child.rename(staging / child.name)
        shutil.rmtree(fetch_root)
        if (found := sha256_tree(staging)) != expected:
            raise UnlearnopsError(
                f"{version.ref}: the registry's files hash to {found[:12]}..., not the registered {expected[:12]}...; "
                "refusing to serve them (the artifact store was altered); restore the artifact or register the model again"
            )
    return expected


def request_ids(version: RegisteredVersion, audit_log: audit.AuditLog) -> list[str]:
    """The requests a version satisfies: its request-ids tag plus its version.registered records."""
    ids = set(version.request_ids)
    for record in records_or_empty(audit_log):
        fields = record["fields"]
        if (
            record["event"] == audit.VERSION_REGISTERED
            and str(fields.get("name")) == str(version.name)
            and str(fields.get("version")) == str(version.version)
        ):
            ids |= audit.request_ids_of(fields)
    return sorted(ids)

