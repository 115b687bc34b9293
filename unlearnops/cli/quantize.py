"""CLI area: quantize / quantize-report: 4-bit and 8-bit post-training quantization."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import CorpusOpt, JsonOpt, ModelDirOpt, OutOpt, WorkspaceOpt, non_empty_path
from .output import emit, out_console, table

SCHEME_NAMES = "rtn-w4a16, gptq-w4a16, awq-w4a16, w8a16 (llm-compressor); nf4, fp4, int8 (bitsandbytes)"

GroupSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--group-size",
        help="Weights per scale for the llm-compressor schemes; must divide every quantized linear layer's input width. "
             "Default: the largest of 128, 64, 32 that does (recorded in quantize.json). bitsandbytes fixes its own (64, or per row for int8).",
        show_default=False,
    ),
]
CalibrationOpt = Annotated[
    str | None,
    typer.Option(
        "--calibration",
        help="GPTQ/AWQ calibration texts: CORPUS_DIR:split (a raw/ split) or a JSON list of strings. Default: --corpus's retain split. The forget split is refused.",
        show_default=False,
    ),
]
SamplesOpt = Annotated[int, typer.Option("--num-calibration-samples", help="Calibration texts used (the first N of the source).")]


def quantize_command(
    model: ModelDirOpt,
    scheme: Annotated[str, typer.Option("--scheme", help=f"One of: {SCHEME_NAMES}.")],
    out: OutOpt,
    group_size: GroupSizeOpt = None,
    calibration: CalibrationOpt = None,
    corpus: Annotated[Path | None, typer.Option("--corpus", help="A MUSE-layout corpus: its retain split calibrates GPTQ/AWQ when --calibration is not given, and its forget split is never used.", show_default=False)] = None,
    num_calibration_samples: SamplesOpt = 64,
    as_json: JsonOpt = False,
) -> None:
    """Quantize a full-precision model directory into OUT: a Hugging Face directory + quantize.json.

    llm-compressor schemes write compressed-tensors checkpoints that vLLM serves natively;
    bitsandbytes schemes save the load-time quantized model (Zhang et al.'s NF4/FP4/LLM.int8).
    lm_head stays in full precision. OUT is written atomically and verified: every quantized
    layer's saved weights are read back and must hold at most 2**bits values per group.
    """
    from ..fileio import check_dir_target
    from ..quantize import quantize

    check_dir_target(out, what="--out")  # before loading anything: the output policy, named by its option
    manifest = quantize(
        model, scheme, out, group_size=group_size, calibration=calibration,
        num_calibration_samples=num_calibration_samples, corpus=corpus, show_progress=not as_json,
    )
    emit(manifest, as_json, lambda: _render_manifest(manifest))


def quantize_report_command(
    model: ModelDirOpt,
    corpus: CorpusOpt,
    schemes: Annotated[str, typer.Option("--schemes", help=f"Comma-separated schemes to compare with full precision: {SCHEME_NAMES}.")] = "rtn-w4a16,gptq-w4a16,awq-w4a16,nf4",
    out: Annotated[Path | None, typer.Option("--out", parser=non_empty_path, help="Directory for the quantized models, quantize-report.json and quantize-report.png, written atomically; new, empty or an earlier report [default: WORKSPACE/quantize-report/<model>].", show_default=False)] = None,
    group_size: GroupSizeOpt = None,
    calibration: CalibrationOpt = None,
    num_calibration_samples: SamplesOpt = 64,
    retrain_auc: Annotated[float | None, typer.Option("--retrain-auc", help="PrivLeak reference AUC. Default: bench.json beside a bench corpus, else PrivLeak is null.", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N items of each corpus file (quick checks).", show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate the model at full precision and under each scheme: a table and a PNG of every MUSE metric per precision.

    The quantization-robustness view before shipping: forgetting that holds at full precision can
    come back at 4 bits. The table (with deltas against full precision) also goes to --json.
    """
    from ..fileio import check_dir_target, sha256_tree
    from ..quantize.report import quantize_report
    from ..workspace import Workspace

    names = [name.strip() for name in schemes.split(",") if name.strip()]
    if out is None:
        out = Workspace.resolve(workspace).root / "quantize-report" / f"{model.resolve().name}-{sha256_tree(model)[:12]}"
    check_dir_target(out, what="--out")  # before hours of quantizing and evaluating
    document = quantize_report(
        model, corpus, names, out, group_size=group_size, calibration=calibration,
        num_calibration_samples=num_calibration_samples, retrain_auc=retrain_auc, limit=limit, show_progress=not as_json,
    )
    emit(document, as_json, lambda: _render_report(document))


def _render_manifest(manifest: dict) -> None:
    calibration = manifest["calibration"]
    rows = [
        ("scheme", f"{manifest['scheme']} ({manifest['summary']})"),
        ("precision", manifest["precision"]),
        ("group size", f"{manifest['group_size'] or 'per row'} ({manifest['group_size_source']})"),
        ("calibration", f"{calibration['source']} ({calibration['texts_used']} texts)" if calibration else "none (data-free)"),
        ("quantized layers", f"{manifest['quantized_layers']} (kept: {', '.join(manifest['unquantized_linear_layers']) or 'none'})"),
        ("max values per group", manifest["max_distinct_values_per_group"]),
        ("wall time (s)", manifest["wall_time_s"]),
        ("written to", manifest["out"]),
    ]
    out_console.print(table("quantized", ("", "value"), rows))


def _render_report(document: dict) -> None:
    columns = ("precision", "VerbMem_f", "KnowMem_f", "KnowMem_r", "PrivLeak", "quantize (s)")
    rows = [
        (row["label"], *(_with_delta(row, metric) for metric in document["metrics"]), row["quantize_s"])
        for row in document["rows"]
    ]
    out_console.print(table(f"MUSE metrics per precision (0-100) of {document['model']}", columns, rows))
    out_console.print(f"plot: {document['plot']}")


def _with_delta(row: dict, metric: str) -> str:
    value, delta = row[metric], row["delta"][metric]
    if value is None:
        return "-"
    return f"{value:.1f}" if not delta else f"{value:.1f} ({delta:+.1f})"


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_command)
    app.command("quantize-report")(quantize_report_command)
