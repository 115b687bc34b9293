"""The release policy: thresholds the gate applies to the quantized model that will ship.

One threshold per gated metric, named, bounded and defaulted by its `Bound` in the metric
registry (unlearnops.metrics), plus `max_quant_gap`, the bound on every metric whose quantization
gap is checked. Pipelines set them in YAML (`gate:` section of pipelines/*.yaml); a forget
request may override them, but only to tighten (a lower upper bound, a higher lower bound),
never to loosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from . import metrics
from .errors import UnlearnopsError, did_you_mean, first_validation_error

QUANT_GAP = "max_quant_gap"


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
    labels = ", ".join(metric.label for metric in metrics.with_gap())
    fields[QUANT_GAP] = (float, Field(10.0, ge=0, le=100, description=f"Upper bound on (quantized - full precision) for {labels}."))
    return fields


# The fields come from the registry, read once here: a metric registered later could not join.
metrics.seal("unlearnops.policy")
Policy = create_model("Policy", __base__=_PolicyBase, **_fields())
Policy.__module__ = __name__

# Direction of each threshold: "max" = measured value must be <= threshold, "min" = >=.
DIRECTIONS: dict[str, Literal["max", "min"]] = {
    **{metric.bound.threshold: metric.bound.direction for metric in metrics.gated()},
    QUANT_GAP: "max",
}
