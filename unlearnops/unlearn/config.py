"""UnlearnConfig: every setting of an unlearning run, the same from Python, YAML or the CLI.

Defaults are the ones measured to work on the embedded bench (LoRA r16 on all linear layers,
lr 5e-4, retain weight 8, NPO beta 0.01); docs/unlearn.md lists them beside the MUSE / paper
settings (full fine-tuning at lr 1e-5, NPO beta 0.1, regulariser weight 1). Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UnlearnopsError, did_you_mean, first_validation_error

# Learning rate per mode when `lr` is not given, measured on the bench (docs/unlearn.md); both are
# far above MUSE's 1e-5, which does not move a 1M-parameter model trained at 3e-3 in minutes.
DEFAULT_LR = {"lora": 5e-4, "full": 3e-4}


class UnlearnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field("ga", description="Forget loss: ga (gradient ascent) or npo (negative preference optimisation).")
    regularizer: str = Field("klr", description="Retain loss: none, gdr (NLL on retain) or klr (KL to the reference on retain; measured to keep the most utility, docs/unlearn.md).")
    mode: Literal["lora", "full"] = Field("lora", description="lora: train adapters, then merge; full: train every weight.")
    lr: float | None = Field(None, gt=0, description="AdamW learning rate, constant; default 5e-4 (lora) / 3e-4 (full).")
    epochs: int = Field(24, ge=1, description="Cap on passes over the forget set; the stopping rule may end earlier.")
    max_steps: int | None = Field(None, ge=1, description="Cap on optimizer steps over the whole run.")
    batch_size: int = Field(8, ge=1, description="Forget sequences per step per process (plus as many retain sequences).")
    seq_len: int = Field(128, ge=8, description="Tokens per training sequence (texts are one stream, chunked).")
    lora_rank: int = Field(16, ge=1)
    lora_alpha: float = Field(32.0, gt=0)
    lora_targets: str = Field("all-linear", description="'all-linear' (every linear layer but lm_head) or comma-separated module names.")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    # Measured on the bench (docs/unlearn.md): with 128-token sequences the paper's beta 0.1
    # saturates NPO before the answers are forgotten, and weight 1 lets GA/NPO wreck utility.
    npo_beta: float = Field(0.01, gt=0, description="NPO's inverse temperature beta (paper: 0.1).")
    reg_weight: float = Field(8.0, ge=0, description="Weight of the retain loss (MUSE: 1).")
    weight_decay: float = Field(0.0, ge=0)
    lr_calibration: bool = Field(True, description="Probe a few steps first and raise lr (x4, up to x64) until the forget loss moves (unlearn/calibration.py).")
    seed: int = 0
    include_qa: bool = Field(True, description="Add knowmem QA lines to the forget / retain streams (see docs/unlearn.md).")
    gradient_checkpointing: bool = False
    stop_verbmem: float | None = Field(None, ge=0, le=100, description="Stop at the first epoch with VerbMem_f at or below this (0-100).")
    stop_knowmem: float | None = Field(
        None, ge=0, le=100, description="Stop at the first epoch with KnowMem_f at or below this (MUSE's rule; default: the bench's retrain model)."
    )
    stop_privleak: float | None = Field(
        None,
        ge=0,
        description="Also require |PrivLeak| at or below this (0-100 scale, both directions) before stopping; the reference is the bench's retrain AUC (bench.json beside the corpus).",
    )
    stop_on: Literal["full-precision", "quantized"] = Field(
        "full-precision",
        description="Which model the stopping evaluation measures: full-precision (the trained weights) or quantized (a copy quantized with stop_scheme: the model that ships).",
    )
    stop_scheme: str = Field("rtn-w4a16", description="Quantization scheme of the quantized stopping evaluation (the one the pipeline ships).")
    stop_group_size: int | None = Field(None, ge=1, description="Group size of stop_scheme; default: chosen from the model as quantize does (largest of 128/64/32 dividing every width).")
    stop_calibration_samples: int = Field(64, ge=1, description="Calibration texts (retain split) of a calibrated stop_scheme (GPTQ, AWQ).")
    # A simulation tool, not a training option: reproduces the 7B regime where RTN rounding erases
    # the update (unlearnops/rounding_cells.py). Full mode only.
    simulate_rounding_cells: int | None = Field(
        None,
        ge=1,
        description="SIMULATION: group size; after every step clamp weights into the source's RTN W4A16 cells (full mode only), so the 4-bit model cannot change.",
    )
    eval_limit: int = Field(48, ge=0, description="Items per metric in the per-epoch evaluation; 0 turns it off (runs the epoch cap).")
    epoch_metrics: tuple[str, ...] = Field(
        ("knowmem_f", "knowmem_r"),
        description="Metrics measured after each epoch (stop-target metrics are always added): per-epoch metrics of the registry (verbmem_f, knowmem_f, knowmem_r, privleak on a bench corpus); verbmem_f's 128-token generations cost the most.",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        from .methods import METHODS, lookup

        lookup(METHODS, name, what="method")
        return name

    @field_validator("regularizer")
    @classmethod
    def _known_regularizer(cls, name: str) -> str:
        from .methods import REGULARIZERS, lookup

        lookup(REGULARIZERS, name, what="regularizer")
        return name

    @field_validator("epoch_metrics")
    @classmethod
    def _per_epoch_metrics(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from .. import metrics

        measurable = [metric.key for metric in metrics.per_epoch()]
        for name in names:
            if name not in measurable:
                raise ValueError(f"'{name}' cannot be measured after each epoch; {did_you_mean(name, measurable)}use some of {', '.join(measurable)}")
        return names

    @field_validator("stop_scheme")
    @classmethod
    def _known_scheme(cls, name: str) -> str:
        from ..quantize.schemes import get_scheme

        try:
            get_scheme(name)
        except UnlearnopsError as err:
            raise UnlearnopsError(str(err).replace("--scheme", "stop_scheme", 1)) from None
        return name

    @model_validator(mode="after")
    def _simulation_needs_full_mode(self) -> "UnlearnConfig":
        if self.simulate_rounding_cells is not None and self.mode != "full":
            raise ValueError("simulate_rounding_cells clamps every weight into its rounding cell, which needs mode 'full' (LoRA's merged update is not clamped); pass --mode full")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    @property
    def uses_retain(self) -> bool:
        return self.regularizer != "none"

    def lora_target_modules(self) -> str | list[str]:
        if self.lora_targets == "all-linear":
            return "all-linear"
        return [name.strip() for name in self.lora_targets.split(",") if name.strip()]


def config_from(settings: dict[str, Any], *, source: str = "unlearn config") -> UnlearnConfig:
    """Build a config from a mapping (YAML section, CLI options) with one-line errors for people."""
    if not isinstance(settings, dict):
        raise UnlearnopsError(f"{source}: expected a mapping of settings, got {type(settings).__name__}")
    try:
        return UnlearnConfig.model_validate(settings)
    except ValidationError as err:
        field, message = first_validation_error(err)
        raise UnlearnopsError(f"{source}: field '{field}': {message}; fix the value (see `unlearnops unlearn --help`)") from None
