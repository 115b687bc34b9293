"""CLI area: unlearn: LoRA or full fine-tuning unlearning (GA / NPO x none / GDR / KLR)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..unlearn.config import UnlearnConfig
from .options import CorpusOpt, JsonOpt, ModelDirOpt, OutOpt
from .output import emit, out_console, table


def _setting(flag: str, field: str, extra: str = "") -> Any:
    """A CLI option for one UnlearnConfig field; its help and default come from the config."""
    info = UnlearnConfig.model_fields[field]
    default = "" if info.default is None else f" Default: {info.default}."
    return typer.Option(flag, help=f"{info.description or field.replace('_', ' ')}{extra}{default}", show_default=False)


def unlearn_command(
    model: ModelDirOpt,
    corpus: CorpusOpt,
    out: OutOpt,
    method: Annotated[str | None, _setting("--method", "method")] = None,
    regularizer: Annotated[str | None, _setting("--regularizer", "regularizer")] = None,
    mode: Annotated[str | None, _setting("--mode", "mode")] = None,
    lr: Annotated[float | None, _setting("--lr", "lr")] = None,
    epochs: Annotated[int | None, _setting("--epochs", "epochs")] = None,
    max_steps: Annotated[int | None, _setting("--max-steps", "max_steps")] = None,
    batch_size: Annotated[int | None, _setting("--batch-size", "batch_size")] = None,
    seq_len: Annotated[int | None, _setting("--seq-len", "seq_len")] = None,
    lora_rank: Annotated[int | None, _setting("--lora-rank", "lora_rank")] = None,
    lora_alpha: Annotated[float | None, _setting("--lora-alpha", "lora_alpha")] = None,
    lora_targets: Annotated[str | None, _setting("--lora-targets", "lora_targets")] = None,
    npo_beta: Annotated[float | None, _setting("--npo-beta", "npo_beta")] = None,
    reg_weight: Annotated[float | None, _setting("--reg-weight", "reg_weight")] = None,
    seed: Annotated[int | None, _setting("--seed", "seed")] = None,
    stop_verbmem: Annotated[float | None, _setting("--stop-verbmem", "stop_verbmem")] = None,
    stop_knowmem: Annotated[float | None, _setting("--stop-knowmem", "stop_knowmem")] = None,
    stop_privleak: Annotated[float | None, _setting("--stop-privleak", "stop_privleak")] = None,
    stop_on: Annotated[str | None, _setting("--stop-on", "stop_on")] = None,
    stop_scheme: Annotated[str | None, _setting("--stop-scheme", "stop_scheme")] = None,
    stop_group_size: Annotated[int | None, _setting("--stop-group-size", "stop_group_size")] = None,
    stop_calibration_samples: Annotated[int | None, _setting("--stop-calibration-samples", "stop_calibration_samples")] = None,
    eval_limit: Annotated[int | None, _setting("--eval-limit", "eval_limit")] = None,
    epoch_metrics: Annotated[list[str] | None, _setting("--epoch-metric", "epoch_metrics", " Repeatable.")] = None,
    simulate_rounding_cells: Annotated[
        int | None, _setting("--simulate-rounding-cells", "simulate_rounding_cells", " A test tool for the release gate (docs/unlearn.md), not a training option.")
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Trade compute for memory.", show_default=False)
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="YAML file of settings (the `unlearn:` section of a pipeline, or its contents); options given here override it.", show_default=False),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a model forget the corpus's forget split; write OUT/adapter, OUT/model, OUT/train.json.

    The forget loss (--method ga|npo) pushes the forget texts' likelihood down; the retain loss (--regularizer gdr|klr, trained on raw/retain.json) keeps the rest. LoRA mode trains adapters on every linear layer and merges them into the full-precision weights, ready for `unlearnops quantize`.

    After each epoch a small fixed subset of the MUSE metrics is measured; training stops at the first epoch that meets the target (--stop-knowmem / --stop-verbmem; on a bench corpus the retrain model's KnowMem_f by default, MUSE's rule) or at the epoch cap; --stop-on quantized measures a copy quantized with --stop-scheme (the model that ships) instead of the full-precision weights. Settings not given default to those in --config, then to the built-in defaults (docs/unlearn.md).

    Data-parallel on N processes or GPUs: torchrun --nproc-per-node N --no-python unlearnops unlearn ...
    """
    from ..fileio import check_dir_target
    from ..unlearn import unlearn
    from ..unlearn.config import config_from

    check_dir_target(out, what="--out")  # before any training: the output policy, named by its option

    given = {name: value for name, value in locals().items() if name in UnlearnConfig.model_fields and value is not None}
    settings = {**_read_config_file(config_file), **given}
    config = config_from(settings, source=str(config_file) if config_file and not given else "unlearn settings")
    record = unlearn(model, corpus, out, config, show_progress=not as_json)
    if _is_main_process():
        emit(record, as_json, lambda: _render(record))


def _is_main_process() -> bool:
    """Under torchrun / accelerate launch every process runs this command; one of them reports."""
    from accelerate import PartialState

    return PartialState().is_main_process


def _read_config_file(path: Path | None) -> dict:
    if path is None:
        return {}
    from ..fileio import read_yaml_mapping

    document = read_yaml_mapping(path, what="unlearn settings")
    section = document.get("unlearn")
    return section if isinstance(section, dict) else document


def _render(record: dict) -> None:
    metric_names = record["stopping"]["metrics"]
    rows = [
        (entry["epoch"], entry["loss"], entry["forget_loss"], entry.get("retain_loss"), *(entry["metrics"].get(m) for m in metric_names), entry["seconds"])
        for entry in record["epochs"]
    ]
    columns = ("epoch", "loss", "forget loss", "retain loss", *metric_names, "seconds")
    config = record["config"]
    out_console.print(table(f"unlearn {config['method']}+{config['regularizer']} ({config['mode']}, lr {record['resolved']['lr']:g})", columns, rows))
    out_console.print(f"chosen epoch {record['chosen_epoch']}: {record['stop_reason']}", highlight=False)
    out_console.print(f"wrote {record['out']} in {record['wall_seconds']} s (peak RSS {record['peak_rss_mb']} MB)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("unlearn")(unlearn_command)
