"""Unlearning on a bench: forgetting vs utility per run, against the acceptance targets.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/unlearn_acceptance.py /work/bench-default \
        [--run NAME:key=value,key=value ...] [--out DIR]

Each run unlearns BENCH/target with UnlearnConfig(settings), then measures the merged model on
the whole corpus (evaluate_model, VerbMem_f / KnowMem_f / KnowMem_r) and checks the acceptance
targets: VerbMem_f <= retrain + 10, KnowMem_f <= retrain + 15, KnowMem_r >= 0.8 x target's,
wall time <= 120 s. Prints one JSON line per run and a Markdown table (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

DEFAULT_RUNS = {
    "lora-ga-gdr": {"method": "ga", "regularizer": "gdr"},
    "lora-npo-gdr": {"method": "npo", "regularizer": "gdr"},
    "full-ga-gdr": {"method": "ga", "regularizer": "gdr", "mode": "full"},
    "full-npo-gdr": {"method": "npo", "regularizer": "gdr", "mode": "full"},
}


def parse_run(text: str) -> tuple[str, dict]:
    name, _, settings = text.partition(":")
    pairs = [item.split("=", 1) for item in settings.split(",") if item]
    return name, {key: yaml.safe_load(value) for key, value in pairs}


def acceptance(measured: dict, bench: dict) -> dict:
    target, retrain = bench["metrics"]["target"], bench["metrics"]["retrain"]
    return {
        "verbmem_f": measured["verbmem_f"] <= retrain["verbmem_f"] + 10,
        "knowmem_f": measured["knowmem_f"] <= retrain["knowmem_f"] + 15,
        "knowmem_r": measured["knowmem_r"] >= 0.8 * target["knowmem_r"],
        "time": measured["wall_seconds"] <= 120,
    }


def run_one(bench_dir: Path, name: str, settings: dict, out_root: Path) -> dict:
    from unlearnops.evaluate import evaluate_model
    from unlearnops.unlearn import UnlearnConfig, unlearn

    out = out_root / name
    record = unlearn(bench_dir / "target", bench_dir / "corpus", out, UnlearnConfig(**settings), show_progress=False)
    scores = evaluate_model(out / "model", bench_dir / "corpus", metrics=("verbmem_f", "knowmem_f", "knowmem_r"), show_progress=False)
    measured = {key: round(scores[key], 1) for key in ("verbmem_f", "knowmem_f", "knowmem_r")}
    measured.update(wall_seconds=record["wall_seconds"], chosen_epoch=record["chosen_epoch"], stop_reason=record["stop_reason"],
                    lr=record["resolved"]["lr"], per_epoch=[{"epoch": e["epoch"], **e["metrics"]} for e in record["epochs"]])
    return {"run": name, "settings": settings, **measured}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("--run", action="append", default=[], help="NAME:key=value,... (repeatable; default: the four standard runs)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    bench = json.loads((args.bench / "bench.json").read_text())
    runs = dict(parse_run(text) for text in args.run) or DEFAULT_RUNS
    out_root = args.out or Path(tempfile.mkdtemp(prefix="unlearn-acceptance-"))
    rows = []
    for name, settings in runs.items():
        result = run_one(args.bench, name, settings, out_root)
        result["passes"] = acceptance(result, bench)
        print(json.dumps(result), flush=True)
        rows.append(result)
    target, retrain = bench["metrics"]["target"], bench["metrics"]["retrain"]
    print(f"\ntarget VerbMem_f {target['verbmem_f']:.1f} KnowMem_f {target['knowmem_f']:.1f} KnowMem_r {target['knowmem_r']:.1f}; "
          f"retrain VerbMem_f {retrain['verbmem_f']:.1f} KnowMem_f {retrain['knowmem_f']:.1f} KnowMem_r {retrain['knowmem_r']:.1f}\n")
    print("| run | settings | epoch | VerbMem_f | KnowMem_f | KnowMem_r | s | all targets |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items())
        print(f"| {row['run']} | {settings} | {row['chosen_epoch']} | {row['verbmem_f']} | {row['knowmem_f']} | {row['knowmem_r']} | "
              f"{row['wall_seconds']} | {'yes' if all(row['passes'].values()) else 'no: ' + ', '.join(k for k, ok in row['passes'].items() if not ok)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
