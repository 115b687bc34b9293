"""The release policy: thresholds the gate applies to the quantized model that will ship.

One threshold per gated metric, named, bounded and defaulted by its `Bound` in the metric
registry (unlearnops.metrics), plus `max_quant_gap`, the bound on every metric whose quantization
gap is checked, and `may_skip`, the checks that may pass without a measurement. Pipelines set
them in YAML (`gate:` section of pipelines/*.yaml); a forget request may override a threshold,
but only to tighten it (a lower upper bound, a higher lower bound), never to loosen.

The policy a request was accepted with is part of its registration record (`accepted_policy`
reads it; evidence.Evidence.accepted_policies checks it against the signed record): a later version re-checks that request under it (gate, inherited checks).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from . import metrics
from .errors import UnlearnopsError, did_you_mean, first_validation_error

QUANT_GAP = "max_quant_gap"
MAY_SKIP = "may_skip"
# Unmeasured checks that may pass by default (reported as skipped): utility without a source model,
# quantization gaps without full-precision metrics. PrivLeak may not: a privacy bound that was not
# measured is not met. Forgetting that was not measured cannot be shown either.
SKIPPABLE_BY_DEFAULT = ("utility_ratio", "quantization_gap.*")


def gap_check(metric_key: str) -> str:
    """The name of a metric's quantization-gap check."""
    return f"quantization_gap.{metric_key}"


def inherited_check(request_id: str, metric_key: str) -> str:
    """The name of a metric's re-check on an earlier request's forget set."""
    return f"inherited.{request_id}.{metric_key}"


def check_names() -> list[str]:
    """Every check the gate reports, an inherited one as inherited.<request>.<metric>."""
    return [
        *(metric.check for metric in metrics.gated()),
        *(gap_check(metric.key) for metric in metrics.with_gap()),
        *(inherited_check("<request>", metric.key) for metric in metrics.inherited()),
    ]


class _PolicyBase(BaseModel):
    """Gate thresholds, on the metrics' scales (a ratio to the source is a fraction)."""

    model_config = ConfigDict(extra="forbid")

    def tightened(self, overrides: dict[str, float] | None) -> "Policy":
        """Apply request overrides; refuse any that would loosen a threshold."""
        if not overrides:
            return self
        for name, value in overrides.items():
            if name not in DIRECTIONS:
                raise UnlearnopsError(f"policy_overrides.{name}: unknown threshold; {did_you_mean(name, DIRECTIONS)}use one of {sorted(DIRECTIONS)}")
            current = getattr(self, name)
            looser = value > current if DIRECTIONS[name] == "max" else value < current
            if looser:
                bound = "at most" if DIRECTIONS[name] == "max" else "at least"
                raise UnlearnopsError(
                    f"policy_overrides.{name}: {value} loosens the configured threshold {current}; "
                    f"overrides may only tighten it (use a value {bound} {current})"
                )
        return self.model_copy(update=dict(overrides))

    def may_pass_unmeasured(self, check: str) -> bool:
        """Whether this policy lets `check` pass without a measurement (it is then reported as skipped)."""
        return any(fnmatch.fnmatchcase(check, pattern) for pattern in getattr(self, MAY_SKIP))

    def strictest(self, other: "Policy") -> "Policy":
        """Each threshold the tighter of the two; a check may be skipped only if both allow it."""
        update: dict[str, Any] = {
            name: (min if direction == "max" else max)(getattr(self, name), getattr(other, name)) for name, direction in DIRECTIONS.items()
        }
        update[MAY_SKIP] = tuple(pattern for pattern in getattr(self, MAY_SKIP) if pattern in getattr(other, MAY_SKIP))
        return self.model_copy(update=update)

    @classmethod
    def from_yaml(cls, path: Path | str) -> "Policy":
        """Read the `gate:` section of a pipeline YAML, or a bare policy YAML."""
        from pydantic import ValidationError

        from .fileio import read_yaml_mapping

        document = read_yaml_mapping(path, what="thresholds")
        section = document.get("gate", document)
        try:
            return cls.model_validate(section)
        except ValidationError as err:
            field, message = first_validation_error(err)
            raise UnlearnopsError(f"{path}: gate.{field}: {message}") from None


def _fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for metric in metrics.gated():
        bound = metric.bound
        if bound.threshold == QUANT_GAP:
            raise UnlearnopsError(f"metric '{metric.key}': threshold '{QUANT_GAP}' is the policy's own; name it after the metric")
        fields[bound.threshold] = (float, Field(bound.default, ge=bound.low, le=bound.high, description=bound.description))
    labels = ", ".join(f"|{metric.label}|" if metric.bound.kind == "abs_max" else metric.label for metric in metrics.with_gap())
    fields[QUANT_GAP] = (float, Field(10.0, ge=0, le=100, description=f"Upper bound on (quantized - full precision) for {labels}."))
    fields[MAY_SKIP] = (
        tuple[str, ...],
        Field(
            SKIPPABLE_BY_DEFAULT,
            description="Checks that may pass without a measurement (reported as skipped, never as passed); any other "
            "unmeasured check fails. Check names, * matching any text (e.g. quantization_gap.*).",
        ),
    )
    return fields


def _known_checks(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
    names = check_names()
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(f"'{pattern}' names no check; {did_you_mean(pattern, names)}checks: {', '.join(names)}")
    return tuple(patterns)


# The fields come from the registry, read once here: a metric registered later could not join.
metrics.seal("unlearnops.policy")
Policy = create_model(
    "Policy", __base__=_PolicyBase, __validators__={"_known_checks": field_validator(MAY_SKIP)(classmethod(_known_checks))}, **_fields()
)
Policy.__module__ = __name__

# Direction of each threshold: "max" = measured value must be <= threshold, "min" = >=.
DIRECTIONS: dict[str, Literal["max", "min"]] = {
    **{metric.bound.threshold: metric.bound.direction for metric in metrics.gated()},
    QUANT_GAP: "max",
}


# ---- the policy a request was accepted with ----------------------------------------------------
def accepted_policy(record: Mapping[str, Any] | None) -> tuple["Policy | None", str]:
    """(the policy a request was accepted with, where it came from) from its registration record;
    (None, why) when the record has none (registered before policies were recorded) or it is unreadable."""
    stored = (record or {}).get("policy")
    if stored is None:
        return None, "no policy recorded with the request"
    try:
        return Policy.model_validate(stored), "the policy the request was accepted with"
    except ValidationError as err:
        field, message = first_validation_error(err)
        return None, f"the recorded policy is unreadable ({field}: {message})"
