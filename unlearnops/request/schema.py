"""The forget request: a pydantic model whose JSON Schema `unlearnops request schema` prints.

A request names the model to unlearn, the data to forget, the retain and holdout data that
the evaluation needs (PrivLeak compares forget texts with holdout texts), and the legal record
(who asked, on what basis, by when). Data sources are one of three shapes:

    {"bench": "default"}                       the embedded bench corpus in the workspace
    {"corpus": "data/muse-news"}               a MUSE-layout corpus directory
    {"texts": "forget.json", "verbmem": ..., "qa": ...}   explicit files (MUSE file shapes)

Every path is relative to the request file's directory and must stay inside it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ..errors import did_you_mean

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$"
MODEL_REF_PATTERN = r"^models:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}(@[A-Za-z][A-Za-z0-9_-]{0,63}|/[1-9][0-9]{0,8})$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
PATH_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no NUL or control characters: the OS refuses them mid-path
SOURCE_FIELDS = ("forget", "retain", "holdout")

RelativePath = Annotated[
    str,
    Field(
        min_length=1, max_length=1024, pattern=PATH_PATTERN, description="A path relative to the request file's directory, inside it."
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BenchSource(_Strict):
    """The embedded synthetic bench corpus (`unlearnops bench build`), built in the workspace if absent."""

    bench: Literal["default", "tiny", "smollm2-135m"] = Field(description="Bench size, or a pretrained base's bench (bench build --base).")


class CorpusSource(_Strict):
    """A corpus directory in MUSE's layout: raw/, verbmem/, knowmem/, privleak/."""

    corpus: RelativePath


class ForgetFiles(_Strict):
    """Explicit forget files, each in MUSE's file shape."""

    texts: RelativePath = Field(description="JSON list of strings: the texts to unlearn (MUSE raw/forget.json).")
    verbmem: RelativePath | None = Field(
        None, description='JSON list of {"prompt", "gt"}: verbatim-memorisation probes (MUSE verbmem/forget.json).'
    )
    qa: RelativePath | None = Field(
        None, description='JSON list of {"question", "answer"}: knowledge probes (MUSE knowmem/forget_qa.json).'
    )
    qa_icl: RelativePath | None = Field(
        None,
        description='JSON list of {"question", "answer"}: few-shot examples for the knowledge probes (MUSE '
        "knowmem/forget_qa_icl.json); default: the retain side's few-shot examples.",
    )


class RetainFiles(_Strict):
    """Explicit retain files: what the model must keep knowing."""

    texts: RelativePath = Field(description="JSON list of strings the model must retain (MUSE raw/retain.json).")
    qa: RelativePath | None = Field(
        None, description='JSON list of {"question", "answer"}: utility probes (MUSE knowmem/retain_qa.json).'
    )
    qa_icl: RelativePath | None = Field(
        None,
        description='JSON list of {"question", "answer"}: few-shot examples for the utility probes (MUSE '
        "knowmem/retain_qa_icl.json); default: the first 3 `qa` items (then not scored).",
    )


class HoldoutFiles(_Strict):
    """Explicit holdout texts: same distribution as the forget texts, never trained on (PrivLeak's reference)."""

    texts: RelativePath = Field(description="JSON list of strings (MUSE privleak/holdout.json).")


# A source is told apart by its key, so that an error names the field of the shape the user
# meant (forget.texts) instead of listing the failures of all three shapes.
SOURCE_TAGS = {"bench": "bench-source", "corpus": "corpus-source"}
FILES_TAG = "files-source"
FILE_MODELS = {"forget": ForgetFiles, "retain": RetainFiles, "holdout": HoldoutFiles}
TAG_MODELS = {"bench-source": BenchSource, "corpus-source": CorpusSource}


def _source_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return SOURCE_TAGS.get(next(iter(type(value).model_fields)), FILES_TAG)
    if not isinstance(value, dict):
        return None
    return next((tag for key, tag in SOURCE_TAGS.items() if key in value), FILES_TAG)


def _source(files_model: type[BaseModel], description: str) -> Any:
    return Annotated[
        Annotated[BenchSource, Tag("bench-source")] | Annotated[CorpusSource, Tag("corpus-source")] | Annotated[files_model, Tag(FILES_TAG)],
        Discriminator(
            _source_tag,
            custom_error_type="source_type",
            custom_error_message='expected an object: {"bench": "default"}, {"corpus": "DIR"} or {"texts": "FILE", ...}',
        ),
        Field(description=description),
    ]


ForgetSource = _source(ForgetFiles, "The data to unlearn: the bench, a MUSE corpus (raw/forget.json, verbmem/, knowmem/forget_qa.json), or files.")
RetainSource = _source(RetainFiles, "Data the model must keep: the bench, a MUSE corpus (raw/retain.json or privleak/retain.json), or files.")
HoldoutSource = _source(HoldoutFiles, "Never-trained texts like the forget texts, for PrivLeak: the bench, a MUSE corpus (privleak/holdout.json), or files.")


class Requester(_Strict):
    """Who asked. Stored in the request record; never sent to the model."""

    name: str = Field(min_length=1, max_length=200, description="Person or organisation that made the request.")
    contact: str | None = Field(None, max_length=200, description="How to reach them (e-mail, ticket queue).")


class LegalBasis(_Strict):
    basis: Literal["gdpr-art17", "ccpa-deletion", "copyright", "contract", "court-order", "other"] = Field(
        description="Why the data must be forgotten."
    )
    reference: str | None = Field(
        None,
        max_length=500,
        validate_default=True,
        description="Case number, ticket or clause; required when basis is 'other'."
    )

    @field_validator("reference")
    @classmethod
    def _reference_for_other(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("basis") == "other" and not (value or "").strip():
            raise ValueError("required when basis is 'other'; say which law, contract or decision applies")
        return value


class ForgetRequest(_Strict):
    """A request to make a deployed model forget data, with the record of who asked and why."""

    schema_version: Literal[1] = Field(1, description="Version of this request format.")
    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="Stable identifier: 3-64 characters, letters, digits, '.', '_', '-'; starts with a letter or digit.",
        examples=["dsr-2026-0042"],
    )
    received_at: AwareDatetime = Field(description="When the request was received (ISO 8601 with timezone).")
    deadline: AwareDatetime = Field(description="When it must be done (ISO 8601 with timezone); after received_at.")
    requester: Requester
    legal_basis: LegalBasis
    description: str | None = Field(None, max_length=4000, description="Free text for the record; never a forget text.")
    model: str = Field(
        min_length=1,
        max_length=1024,
        pattern=PATH_PATTERN,
        description="The model to unlearn: models:/NAME@alias, models:/NAME/VERSION, or a local model directory.",
        examples=["models:/unlearnops-bench@production"],
    )
    forget: ForgetSource
    retain: RetainSource
    holdout: HoldoutSource
    policy_overrides: dict[str, Annotated[float, Field(allow_inf_nan=False, strict=True)]] = Field(
        default_factory=dict,
        description="Gate thresholds for this request (see unlearnops.policy.Policy); may only tighten the configured ones.",
    )
    registered_model_name: str | None = Field(
        None, pattern=MODEL_NAME_PATTERN, description="Registry name for the unlearned model (default: the pipeline's)."
    )

    @field_validator("schema_version", mode="before")
    @classmethod
    def _integer_version(cls, value: Any) -> Any:
        # Lax mode would take true and 1.0 for 1: a reader and the tool must agree on what was written.
        if type(value) is not int:
            raise ValueError(f'must be the JSON integer 1, not {_json_type(value)}; write "schema_version": 1')
        return value

    @field_validator("model")
    @classmethod
    def _model_reference(cls, value: str) -> str:
        if value.startswith("models:") and not re.match(MODEL_REF_PATTERN, value):
            raise ValueError("registry reference must be models:/NAME@ALIAS or models:/NAME/VERSION, e.g. models:/unlearnops-bench@production")
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline_after_receipt(cls, value: datetime, info: ValidationInfo) -> datetime:
        received = info.data.get("received_at")
        if received is not None and value <= received:
            raise ValueError(f"{value.isoformat()} is not after received_at {received.isoformat()}; set a deadline after receipt")
        return value

    @property
    def is_registry_model(self) -> bool:
        return self.model.startswith("models:/")


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", float: "a number with a fraction or exponent", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def request_schema() -> dict:
    """The JSON Schema of a forget request (draft 2020-12, as pydantic writes it)."""
    schema = ForgetRequest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# ---- turning pydantic's errors into field + fix ------------------------------------------------

TIME_FIX = "write an ISO 8601 time with a timezone, e.g. 2026-11-20T09:30:00Z"
FIXES = {
    "missing": "add it",
    "timezone_aware": TIME_FIX,
    "datetime_from_date_parsing": TIME_FIX,
    "datetime_parsing": TIME_FIX,
    "datetime_type": TIME_FIX,
    "string_type": "use a JSON string",
    "float_type": "use a JSON number",
    "float_parsing": "use a JSON number",
    "finite_number": "use a finite JSON number",
    "dict_type": "use a JSON object",
    "model_type": "use a JSON object",
    "string_too_short": "fill it in",
    "string_too_long": "shorten it",
    "source_type": "use one of those shapes",
}


# Patterns get a fix in words; a regular expression alone is a poor instruction.
PATTERN_FIXES = {
    REQUEST_ID_PATTERN: "use 3-64 letters, digits, '.', '_' or '-', starting with a letter or digit, e.g. dsr-2026-0042",
    MODEL_NAME_PATTERN: "use letters, digits, '.', '_' or '-', starting with a letter or digit",
    PATH_PATTERN: "remove the control characters (NUL, newline, tab) from the path",
}


def schema_errors(error: ValidationError) -> list[tuple[str, str]]:
    """(field, message with the fix) for each schema error; never echoes a value except a mistyped choice.

    Unknown fields come first: a typo's "did you mean" explains the "missing" error it causes.
    """
    items = sorted(error.errors(include_url=False), key=lambda item: item["type"] != "extra_forbidden")
    return [_one_error(item) for item in items]


def _one_error(item: dict) -> tuple[str, str]:
    loc, model = _strip_tags(tuple(item["loc"]))
    field = ".".join(str(part) for part in loc) or "request"
    kind = item["type"]
    if kind == "extra_forbidden":
        return field, _unknown_field(str(loc[-1]), model)
    message = item["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        pattern = item["ctx"]["pattern"]
        return field, f"does not match {pattern}; {PATTERN_FIXES.get(pattern, 'fix the value')}"
    if kind == "literal_error":
        return field, message + _did_you_mean(item.get("input"), item["ctx"]["expected"])
    fix = FIXES.get(kind)
    return field, f"{message}; {fix}" if fix else message


def _strip_tags(loc: tuple) -> tuple[tuple, type[BaseModel]]:
    """Drop the union tag pydantic puts after a source field, and find the model the last key lives in."""
    model: type[BaseModel] = ForgetRequest
    if len(loc) >= 2 and loc[0] in SOURCE_FIELDS and isinstance(loc[1], str) and loc[1].endswith("-source"):
        model = TAG_MODELS.get(loc[1], FILE_MODELS[loc[0]])
        loc = (loc[0],) + loc[2:]
    elif len(loc) >= 2 and loc[0] in ("requester", "legal_basis"):
        model = {"requester": Requester, "legal_basis": LegalBasis}[loc[0]]
    return loc, model


def _did_you_mean(value: Any, expected: str) -> str:
    """'; did you mean X?' for a mistyped choice (a short string is safe to compare, never echoed)."""
    if not isinstance(value, str) or len(value) > 64:
        return ""
    choices = [choice.strip("'") for choice in expected.replace(" or ", ", ").split(", ")]
    hint = did_you_mean(value, choices, cutoff=0.5).rstrip()
    return f"; {hint}" if hint else ""


def _unknown_field(name: str, model: type[BaseModel]) -> str:
    allowed = sorted(model.model_fields)
    return f"unknown field; {did_you_mean(name, allowed)}remove it (allowed here: {', '.join(allowed)})"
