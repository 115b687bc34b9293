"""Quantization robustness: does the forgetting survive 4-bit? Methods x regularisers x modes x precisions.

For each unlearning cell ({GA, NPO} x {GDR, KLR} x {LoRA, full fine-tuning}) on the bench
target: unlearn with the engine's defaults (UnlearnConfig; only method, regulariser and mode vary), then evaluate the merged model at full precision,
INT8 and every 4-bit scheme (RTN, GPTQ, AWQ, NF4, FP4). Also reports, per cell, the relative
weight change of the quantized layers (||W_u - W_s|| / ||W_s||) and the fraction of RTN 4-bit
codes that changed versus the source model's quantization (the mechanism: an update that flips
no code is erased by rounding). The source model's own row comes first.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robustness.py --bench /work/bench-default --out /tmp/robustness
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robustness.py --methods ga --modes lora --schemes rtn-w4a16

Writes OUT/robustness.json, OUT/robustness.md (the table for docs/benchmarks.md) and one PNG per metric.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from common import default_bench, machine_info, print_machine

METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
DEFAULT_SCHEMES = "int8,rtn-w4a16,gptq-w4a16,awq-w4a16,nf4,fp4"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, help="Bench dir (corpus/, target/, bench.json); default: the workspace's, built if absent.")
    parser.add_argument("--out", type=Path, default=Path("robustness-out"))
    parser.add_argument("--methods", default="ga,npo")
    parser.add_argument("--regularizers", default="gdr,klr")
    parser.add_argument("--modes", default="lora,full")
    parser.add_argument("--schemes", default=DEFAULT_SCHEMES)
    parser.add_argument("--cells", help="Explicit cells instead of the product, e.g. 'ga+gdr lora,npo+klr full'.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="An UnlearnConfig setting for every cell (repeatable), e.g. --set epochs=10.")
    args = parser.parse_args(argv)

    bench = args.bench or default_bench()
    args.out.mkdir(parents=True, exist_ok=True)
    retrain_auc = json.loads((bench / "bench.json").read_text())["metrics"]["retrain"]["auc"]
    schemes = args.schemes.split(",")
    machine = machine_info()
    print_machine(machine)

    rows = _precision_rows("source (target)", bench / "target", bench, schemes, args.out / "source", retrain_auc, change=None)
    _write(args.out, rows, machine)
    extra = dict(setting.split("=", 1) for setting in args.set)
    for method, regularizer, mode in _cells(args):
        cell = f"{method}+{regularizer} {mode}"
        rows += _cell_rows(cell, dict(method=method, regularizer=regularizer, mode=mode, **extra), bench, schemes, args.out, retrain_auc)
        _write(args.out, rows, machine)
    _write(args.out, rows, machine)
    print((args.out / "robustness.md").read_text())
    return 0


def _cells(args) -> list[tuple[str, str, str]]:
    if args.cells:
        return [(*cell.split()[0].split("+"), cell.split()[1]) for cell in args.cells.split(",")]
    return list(itertools.product(args.methods.split(","), args.regularizers.split(","), args.modes.split(",")))


def _cell_rows(cell: str, settings: dict, bench: Path, schemes: list[str], out: Path, retrain_auc: float) -> list[dict]:
    from unlearnops.unlearn import UnlearnConfig, unlearn

    cell_dir = out / cell.replace(" ", "_").replace("+", "_")
    started = time.perf_counter()
    if (cell_dir / "unlearn" / "train.json").is_file():  # a resumed study: the cell was unlearned before
        record = json.loads((cell_dir / "unlearn" / "train.json").read_text())
    else:
        record = unlearn(bench / "target", bench / "corpus", cell_dir / "unlearn", UnlearnConfig.model_validate(settings), show_progress=False)
    change = _weight_change(bench / "target", cell_dir / "unlearn" / "model")
    change["unlearn_s"] = record.get("wall_seconds", round(time.perf_counter() - started, 1))
    change["chosen_epoch"] = record["chosen_epoch"]
    change["target_met"] = record["target_met"]
    change["lr"] = record["resolved"]["lr"]
    change["peak_rss_mb"] = record.get("peak_rss_mb")
    return _precision_rows(cell, cell_dir / "unlearn" / "model", bench, schemes, cell_dir, retrain_auc, change)


def _weight_change(source_dir: Path, unlearned_dir: Path) -> dict:
    import torch

    from unlearnops.modeling import load_causal_lm
    from unlearnops.quantize.groups import group_size_for
    from unlearnops.rounding_cells import changed_code_fraction, quantized_linears

    source, unlearned = load_causal_lm(source_dir).model, load_causal_lm(unlearned_dir).model
    before, after = quantized_linears(source), quantized_linears(unlearned)
    delta = sum(float((after[name].weight - layer.weight).pow(2).sum()) for name, layer in before.items())
    norm = sum(float(layer.weight.pow(2).sum()) for layer in before.values())
    with torch.no_grad():
        flipped = changed_code_fraction(source, unlearned, group_size=group_size_for(source_dir, None))
    return {"relative_change": (delta / norm) ** 0.5, "codes_changed": flipped}


def _precision_rows(cell: str, model_dir: Path, bench: Path, schemes: list[str], work: Path, retrain_auc: float, change: dict | None) -> list[dict]:
    from unlearnops.evaluate import evaluate_model
    from unlearnops.quantize import quantize

    rows = []
    for precision in ["full", *schemes]:
        target = model_dir
        if precision != "full":
            target = work / "quantized" / precision
            if not target.exists():
                quantize(model_dir, precision, target, corpus=bench / "corpus", show_progress=False)
        metrics = evaluate_model(target, bench / "corpus", retrain_auc=retrain_auc, show_progress=False)
        row = {"cell": cell, "precision": precision, **{name: metrics[name] for name in METRICS}, **(change or {})}
        print(json.dumps(row))
        rows.append(row)
    return rows


def _write(out: Path, rows: list[dict], machine: dict) -> None:
    (out / "robustness.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    (out / "robustness.md").write_text(_markdown(rows))
    _plot(out, rows)


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| cell | precision | VerbMem_f | KnowMem_f | KnowMem_r | PrivLeak | rel. dW | RTN codes changed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        change = f"{row['relative_change']:.3f}" if "relative_change" in row else "-"
        flipped = f"{row['codes_changed']:.1%}" if "codes_changed" in row else "-"
        privleak = f"{row['privleak']:.1f}" if row["privleak"] is not None else "-"
        lines.append(
            f"| {row['cell']} | {row['precision']} | {row['verbmem_f']:.1f} | {row['knowmem_f']:.1f} | {row['knowmem_r']:.1f} | "
            f"{privleak} | {change} | {flipped} |"
        )
    cells = {row["cell"]: row for row in rows if "unlearn_s" in row}
    if cells:
        lines += ["", "| cell | lr (after calibration) | unlearn s | chosen epoch | stop target met |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {cell} | {row.get('lr', 0):.2g} | {row['unlearn_s']:.0f} | {row['chosen_epoch']} | {'yes' if row.get('target_met') else 'no'} |"
                  for cell, row in cells.items()]
    return "\n".join(lines) + "\n"


def _plot(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys(row["cell"] for row in rows))
    precisions = list(dict.fromkeys(row["precision"] for row in rows))
    for metric in METRICS:
        figure, axes = plt.subplots(figsize=(max(8, len(cells) * 1.3), 4))
        width = 0.8 / len(precisions)
        for offset, precision in enumerate(precisions):
            values = [next((r[metric] or 0.0 for r in rows if r["cell"] == c and r["precision"] == precision), 0.0) for c in cells]
            axes.bar([i + offset * width for i in range(len(cells))], values, width, label=precision)
        axes.set_xticks([i + 0.4 - width / 2 for i in range(len(cells))], cells, rotation=30, ha="right")
        axes.set_ylabel(metric)
        axes.set_title(f"{metric} per unlearning cell and precision")
        axes.legend(fontsize="small", ncols=4)
        figure.tight_layout()
        figure.savefig(out / f"robustness_{metric}.png", dpi=110)
        plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
