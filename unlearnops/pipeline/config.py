"""The pipeline YAML (pipelines/*.yaml): one section per stage, each validated by its owner's model.

    name:      the pipeline's name (recorded on every run)
    bench:     {size}            the bench whose target becomes unlearnops-bench@production when a
                                 request names that model on a fresh workspace but brings its own data
    validate:  {min_privleak_texts}
    unlearn:   UnlearnConfig     (unlearnops.unlearn.config)
    quantize:  {scheme, group_size, num_calibration_samples}
    evaluate:  {limit, batch_size}
    gate:      Policy            (unlearnops.policy)
    register:  {name, alias}     name: null = the source model's registered name
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UnlearnopsError, first_validation_error
from ..policy import Policy

DEFAULT_PIPELINE = Path("pipelines") / "default.yaml"
# The checkout's copy, for an editable install run from another directory.
CHECKOUT_PIPELINE = Path(__file__).resolve().parents[2] / DEFAULT_PIPELINE


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BenchSettings(_Section):
    size: str = Field("default", description="Bench registered as the embedded source model when the request's data is not a bench.")


class ValidateSettings(_Section):
    min_privleak_texts: int = Field(10, ge=2, description="Fewest forget and holdout texts PrivLeak may be measured on.")


class QuantizeSettings(_Section):
    scheme: str = Field("gptq-w4a16", description="A name in unlearnops.quantize.SCHEMES.")
    group_size: int | None = Field(None, ge=1, description="None: the largest of 128/64/32 dividing every quantized width.")
    num_calibration_samples: int = Field(64, ge=1)


class EvaluateSettings(_Section):
    limit: int | None = Field(None, ge=1, description="Items per metric (None = all): the same for every precision.")
    batch_size: int = Field(16, ge=1)


class RegisterSettings(_Section):
    name: str | None = Field(None, description="Registered model name; null = the source model's name (or the request's).")
    alias: str = Field("candidate", description="Alias a passing version gets.")


class PipelineConfig(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = "default"
    bench: BenchSettings = BenchSettings()
    validate_: ValidateSettings = Field(ValidateSettings(), alias="validate")
    unlearn: dict[str, Any] = Field(default_factory=dict)
    quantize: QuantizeSettings = QuantizeSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    gate: Policy = Policy()
    # `register` would shadow pydantic's BaseModel.register; the YAML key stays `register:`.
    registration: RegisterSettings = Field(RegisterSettings(), alias="register")

    def unlearn_config(self):
        """The unlearn section; with `stop_on: quantized` the stop rule measures a copy quantized as
        the quantize section says (scheme, group size, calibration texts: the model that ships),
        unless the unlearn section names its own."""
        from ..unlearn import config_from

        settings = dict(self.unlearn)
        if settings.get("stop_on") == "quantized":
            settings.setdefault("stop_scheme", self.quantize.scheme)
            settings.setdefault("stop_group_size", self.quantize.group_size)
            settings.setdefault("stop_calibration_samples", self.quantize.num_calibration_samples)
        return config_from(settings, source="pipeline unlearn")

    @classmethod
    def load(cls, path: Path | str | None) -> "PipelineConfig":
        """Read a pipeline YAML; no path = pipelines/default.yaml (here, else the checkout's), else built-in defaults."""
        from ..fileio import read_yaml_mapping

        if path is None:
            path = next((candidate for candidate in (DEFAULT_PIPELINE, CHECKOUT_PIPELINE) if candidate.is_file()), None)
            if path is None:
                return cls()
        document = read_yaml_mapping(path, what="sections name, bench, unlearn, quantize, evaluate, gate, register")
        try:
            config = cls.model_validate(document)
        except ValidationError as err:
            field, message = first_validation_error(err)
            raise UnlearnopsError(f"{path}: {field}: {message}; see the comments in pipelines/default.yaml") from None
        config.unlearn_config()  # fail on a bad unlearn section now, not after the first stages
        return config
