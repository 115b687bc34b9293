"""The release policy: thresholds the gate applies to the quantized model that will ship.

One home for the threshold names, their direction and their defaults. Pipelines set them in
YAML (`gate:` section of pipelines/*.yaml); a forget request may override them, but only to
tighten (a lower upper bound, a higher lower bound), never to loosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import UnlearnopsError, did_you_mean, first_validation_error

# Direction of each threshold: "max" = measured value must be <= threshold, "min" = >=.
DIRECTIONS: dict[str, Literal["max", "min"]] = {
    "max_verbmem_f": "max",
    "max_knowmem_f": "max",
    "min_utility_ratio": "min",
    "max_abs_privleak": "max",
    "max_quant_gap": "max",
}


class Policy(BaseModel):
    """Gate thresholds, on MUSE's 0-100 scale (utility ratio is a fraction of the source's)."""

    model_config = ConfigDict(extra="forbid")

    max_verbmem_f: float = Field(30.0, ge=0, le=100, description="Upper bound on VerbMem of the forget set, quantized model.")
    max_knowmem_f: float = Field(45.0, ge=0, le=100, description="Upper bound on KnowMem of the forget QA, quantized model.")
    min_utility_ratio: float = Field(
        0.8, ge=0, le=1, description="KnowMem_r of the quantized model as a fraction of the source model's KnowMem_r."
    )
    max_abs_privleak: float = Field(100.0, ge=0, description="Upper bound on |PrivLeak| of the quantized model.")
    max_quant_gap: float = Field(
        10.0, ge=0, le=100, description="Upper bound on (quantized - full precision) for VerbMem_f and KnowMem_f."
    )

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
