"""Privacy vs utility vs forgetting: PrivLeak per method, LoRA vs full, full precision vs 4-bit, per stopping rule.

Each row unlearns the bench target with the engine's defaults (UnlearnConfig) for one cell
({GA, NPO} x {GDR, KLR} x {LoRA, full}), one stopping rule and one engine seed, then quantizes
the merged model with the pipeline's scheme (GPTQ W4A16, group 128, 64 calibration samples from
the retain split) and evaluates both on the whole bench corpus (PrivLeak against the bench's
retrain AUC). The rules:

  muse      MUSE's rule: the first epoch whose KnowMem_f is at or below the retrain model's,
            measured on the full-precision weights (the engine's default until issue 15)
  privleak  MUSE's rule AND |PrivLeak| <= --stop-privleak, both measured each epoch on a copy
            quantized with the pipeline's scheme: the model that ships (stop_on: quantized)

Rows already in OUT/rows/ are reused, so an interrupted study resumes. Writes
OUT/privacy_tradeoff.json, OUT/privacy_tradeoff.md (the tables for docs/benchmarks.md),
OUT/privacy_tradeoff.png (PrivLeak vs utility, forgetting as the marker's colour) and
OUT/privacy_trajectories.png (per-epoch PrivLeak of the stopping evaluation).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/privacy_tradeoff.py --bench BENCH --out /tmp/privacy
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/privacy_tradeoff.py --bench BENCH --out /tmp/privacy \\
        --cells ga+klr/lora --rules privleak --seeds 0,1,2          # the default's spread over seeds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import default_bench, machine_info, print_machine

PRECISIONS = ("fp", "q")  # the merged full-precision model, and its 4-bit model (the one that ships)
METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak", "auc")
ALL_CELLS = "ga+gdr/lora,ga+gdr/full,ga+klr/lora,ga+klr/full,npo+gdr/lora,npo+gdr/full,npo+klr/lora,npo+klr/full"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, help="Bench dir (corpus/, target/, bench.json); default: the workspace's, built if absent.")
    parser.add_argument("--out", type=Path, default=Path("privacy-out"))
    parser.add_argument("--cells", default=ALL_CELLS, help="Comma-separated METHOD+REGULARIZER/MODE.")
    parser.add_argument("--rules", default="muse,privleak")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--scheme", default="gptq-w4a16", help="The 4-bit scheme (the pipeline's) for the shipped model and the quantized stop rule.")
    parser.add_argument("--stop-privleak", type=float, default=25.0, help="The privleak rule's bound on |PrivLeak|.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Another UnlearnConfig setting for every row (repeatable).")
    parser.add_argument("--tag", default="", help="Suffix of the row names, to keep variants (e.g. --set lr=...) apart.")
    parser.add_argument("--report-only", action="store_true", help="Write the tables and plots from the rows already in OUT/rows; run nothing.")
    args = parser.parse_args(argv)

    bench = args.bench or default_bench()
    manifest = json.loads((bench / "bench.json").read_text())
    retrain_auc = manifest["metrics"]["retrain"]["auc"]
    machine = machine_info()
    print_machine(machine)
    rows_dir = args.out / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(_setting(item) for item in args.set)

    source = _cached(rows_dir / "source.json", lambda: _source_row(bench, args, retrain_auc))
    rows = []
    for cell in args.cells.split(","):
        for rule in args.rules.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                name = f"{cell.replace('/', '_').replace('+', '_')}_{rule}_s{seed}{args.tag}"
                if args.report_only:
                    if (rows_dir / f"{name}.json").is_file():
                        rows.append(json.loads((rows_dir / f"{name}.json").read_text()))
                    continue
                rows.append(_cached(rows_dir / f"{name}.json", lambda: _row(bench, args, cell, rule, seed, extra, retrain_auc, name)))
                _write(args.out, source, rows, machine, manifest, args)
    _write(args.out, source, rows, machine, manifest, args)
    print((args.out / "privacy_tradeoff.md").read_text())
    return 0


def _setting(item: str) -> tuple[str, object]:
    key, _, value = item.partition("=")
    return key, json.loads(value) if value[:1] in "0123456789-[{tf\"n" else value


def _cached(path: Path, compute):
    if path.is_file():
        return json.loads(path.read_text())
    row = compute()
    path.write_text(json.dumps(row, indent=1))
    print(json.dumps({k: v for k, v in row.items() if k != "epochs"}), flush=True)
    return row


def _rule_settings(rule: str, args) -> dict:
    if rule == "muse":
        return {}
    if rule == "privleak":
        return {"stop_privleak": args.stop_privleak, "stop_on": "quantized", "stop_scheme": args.scheme, "stop_group_size": 128}
    raise SystemExit(f"--rules: unknown rule '{rule}'; use muse or privleak")


def _row(bench: Path, args, cell: str, rule: str, seed: int, extra: dict, retrain_auc: float, name: str) -> dict:
    from unlearnops.unlearn import UnlearnConfig, unlearn

    methods, mode = cell.split("/")
    method, regularizer = methods.split("+")
    # PrivLeak is measured every epoch under both rules (one forward pass per text), for the trajectories.
    settings = {"method": method, "regularizer": regularizer, "mode": mode, "seed": seed, "epoch_metrics": ["knowmem_f", "knowmem_r", "privleak"],
                **_rule_settings(rule, args), **extra}
    work = args.out / "work" / name
    started = time.perf_counter()
    if (work / "unlearn" / "train.json").is_file():  # an interrupted study: the unlearning finished (atomic output)
        record = json.loads((work / "unlearn" / "train.json").read_text())
        unlearn_s = record["wall_seconds"]
    else:
        record = unlearn(bench / "target", bench / "corpus", work / "unlearn", UnlearnConfig.model_validate(settings), show_progress=False)
        unlearn_s = time.perf_counter() - started
    measured = _measure(work / "unlearn" / "model", work / "quantized", bench, args.scheme, retrain_auc)
    return {
        "cell": cell, "rule": rule, "seed": seed, "settings": settings,
        "chosen_epoch": record["chosen_epoch"], "target_met": record["target_met"], "stop_reason": record["stop_reason"],
        "unlearn_s": round(unlearn_s, 1), **measured,
        "epochs": [{"epoch": e["epoch"], **e["metrics"]} for e in record["epochs"]],
    }


def _source_row(bench: Path, args, retrain_auc: float) -> dict:
    return {"cell": "source (target)", "rule": "-", "seed": None, **_measure(bench / "target", args.out / "work" / "source-q", bench, args.scheme, retrain_auc)}


def _measure(model_dir: Path, quantized_dir: Path, bench: Path, scheme: str, retrain_auc: float) -> dict:
    from unlearnops.evaluate import evaluate_model
    from unlearnops.quantize import quantize

    if not quantized_dir.exists():
        quantize(model_dir, scheme, quantized_dir, group_size=128, num_calibration_samples=64, corpus=bench / "corpus", show_progress=False)
    measured = {}
    for precision, directory in zip(PRECISIONS, (model_dir, quantized_dir)):
        result = evaluate_model(directory, bench / "corpus", retrain_auc=retrain_auc, show_progress=False)
        measured.update({f"{precision}.{metric}": result[metric] for metric in METRICS})
    return measured


# ---- reports ---------------------------------------------------------------------------------
def _write(out: Path, source: dict, rows: list[dict], machine: dict, manifest: dict, args) -> None:
    document = {"machine": machine, "bench": {"seed": manifest.get("seed"), "retrain": manifest["metrics"]["retrain"]},
                "scheme": args.scheme, "stop_privleak": args.stop_privleak, "source": source, "rows": rows}
    (out / "privacy_tradeoff.json").write_text(json.dumps(document, indent=1))
    (out / "privacy_tradeoff.md").write_text(_markdown(source, rows, args))
    if rows:
        _plot_tradeoff(out / "privacy_tradeoff.png", rows, args)
        _plot_trajectories(out / "privacy_trajectories.png", rows, args)


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _markdown(source: dict, rows: list[dict], args) -> str:
    source_r = source["fp.knowmem_r"]
    lines = [
        f"| cell | rule | seed | epoch | met | VerbMem_f fp / 4-bit | KnowMem_f fp / 4-bit | utility (KnowMem_r / source) 4-bit | "
        f"PrivLeak fp / 4-bit | PrivLeak gap | unlearn s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| source (target) | - | - | - | - | {_fmt(source['fp.verbmem_f'])} / {_fmt(source['q.verbmem_f'])} | "
        f"{_fmt(source['fp.knowmem_f'])} / {_fmt(source['q.knowmem_f'])} | {_fmt(source['q.knowmem_r'] / source_r, '.2f')} | "
        f"{_fmt(source['fp.privleak'], '+.1f')} / {_fmt(source['q.privleak'], '+.1f')} | - | - |",
    ]
    for row in rows:
        gap = None if row["q.privleak"] is None or row["fp.privleak"] is None else row["q.privleak"] - row["fp.privleak"]
        lines.append(
            f"| {row['cell']} | {row['rule']} | {row['seed']} | {row['chosen_epoch']} | {'yes' if row['target_met'] else 'no'} | "
            f"{_fmt(row['fp.verbmem_f'])} / {_fmt(row['q.verbmem_f'])} | {_fmt(row['fp.knowmem_f'])} / {_fmt(row['q.knowmem_f'])} | "
            f"{_fmt(row['q.knowmem_r'] / source_r, '.2f')} | {_fmt(row['fp.privleak'], '+.1f')} / {_fmt(row['q.privleak'], '+.1f')} | "
            f"{_fmt(gap, '+.1f')} | {row['unlearn_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot_tradeoff(path: Path, rows: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.5, 5.5))
    markers = {"ga+gdr": "o", "ga+klr": "s", "npo+gdr": "^", "npo+klr": "D"}
    scatter = None
    for row in rows:
        methods, mode = row["cell"].split("/")
        for precision, alpha in (("fp", 0.35), ("q", 1.0)):
            x, utility, forgetting = row[f"{precision}.privleak"], row[f"{precision}.knowmem_r"] / 100, row[f"{precision}.verbmem_f"]
            if x is None:
                continue
            scatter = axis.scatter(
                x, utility, c=[forgetting], cmap="viridis_r", vmin=0, vmax=40, marker=markers.get(methods, "o"), s=70, alpha=alpha,
                edgecolors="black" if mode == "full" else "none", linewidths=1.2,
            )
        if row["q.privleak"] is not None:
            short = f"{methods.upper()} {mode} {'P' if row['rule'] == 'privleak' else 'M'}{row['seed']}"
            axis.annotate(short, (row["q.privleak"], row["q.knowmem_r"] / 100), fontsize=6, xytext=(4, -3), textcoords="offset points")
        if row["rule"] == "privleak" and row["q.privleak"] is not None and row["fp.privleak"] is not None:
            axis.plot([row["fp.privleak"], row["q.privleak"]], [row["fp.knowmem_r"] / 100, row["q.knowmem_r"] / 100], color="grey", linewidth=0.6)
    for bound in (-50, 50):
        axis.axvline(bound, color="red", linestyle="--", linewidth=1)
    axis.axvline(0, color="grey", linewidth=0.5)
    axis.axhline(0.8, color="red", linestyle=":", linewidth=1)
    axis.set_xlabel("PrivLeak (0 = like the retrain model; < 0 leaks membership, > 0 over-unlearned)")
    axis.set_ylabel("utility: KnowMem_r / source's")
    axis.set_title(f"PrivLeak vs utility; colour = VerbMem_f; o GA+GDR, s GA+KLR, ^ NPO+GDR, D NPO+KLR; black edge = full\n"
                   f"fine-tuning; faint = full precision, solid = {args.scheme}; label M = MUSE's rule, P = privleak rule, then the seed", fontsize=9)
    if scatter is not None:
        figure.colorbar(scatter, ax=axis, label="VerbMem_f")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_trajectories(path: Path, rows: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 5))
    colours = {cell: plt.cm.tab10(index) for index, cell in enumerate(dict.fromkeys(row["cell"] for row in rows))}
    for row in rows:
        points = [(e["epoch"], e["privleak"]) for e in row["epochs"] if e.get("privleak") is not None]
        if points:
            style = "-" if row["rule"] == "privleak" else ":"
            axis.plot(*zip(*points), style, marker=".", color=colours[row["cell"]], label=f"{row['cell']} {row['rule']} s{row['seed']}")
    axis.axhspan(-args.stop_privleak, args.stop_privleak, color="green", alpha=0.1)
    axis.set_xlabel("epoch")
    axis.set_ylabel("PrivLeak at the end of the epoch")
    axis.set_title(f"PrivLeak per epoch: solid = privleak rule (measured on the {args.scheme} copy), dotted = MUSE's rule\n"
                   "(full precision); green: the privleak rule's stop band", fontsize=9)
    axis.legend(fontsize="x-small", ncols=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
