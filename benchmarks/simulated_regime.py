"""The large-model regime, simulated: full precision forgets, the RTN 4-bit model cannot; the gate must fail.

1. Unlearn BENCH/target in full mode with `simulate_rounding_cells` (every weight clamped into
   its source RTN W4A16 cell after each step; eval off, fixed epochs).
2. Quantize the source and the unlearned model with rtn-w4a16 and compare every saved tensor
   (packed weights, scales, zero points) with torch.equal.
3. `unlearnops gate --model Q --fp-model FP --source-model SRC`: exit code and failing checks.
4. Continue from the simulated model with the policy's bounds as stop targets: with the
   simulation still on (stop_on full-precision vs quantized), and unconstrained with
   stop_on quantized; each result's RTN model measured on the whole corpus.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/simulated_regime.py /work/bench-default --out /tmp/simreg
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import machine_info, print_machine


def same_tensors(a: Path, b: Path) -> tuple[bool, int]:
    from safetensors.torch import load_file
    import torch

    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    equal = first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    return equal, len(first)


def gate(quantized: Path, fp: Path, source: Path, corpus: Path, policy: Path, out: Path) -> tuple[int, dict]:
    command = [sys.executable, "-m", "unlearnops.cli", "gate", "--model", quantized, "--corpus", corpus, "--policy", policy,
               "--fp-model", fp, "--source-model", source, "--out", out, "--json"]
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    return done.returncode, json.loads(done.stdout)


def main() -> None:
    from unlearnops.evaluate import evaluate_model
    from unlearnops.policy import Policy
    from unlearnops.quantize import quantize
    from unlearnops.unlearn import UnlearnConfig, unlearn

    parser = argparse.ArgumentParser()
    parser.add_argument("bench", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--policy", type=Path, default=Path("pipelines/default.yaml"))
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--reg-weight", type=float, default=1.0)
    parser.add_argument("--continue-lr", type=float, default=3e-5)
    parser.add_argument("--continue-epochs", type=int, default=6)
    args = parser.parse_args()
    print_machine(machine_info())
    corpus, source, out = args.bench / "corpus", args.bench / "target", args.out
    policy = Policy.from_yaml(args.policy)
    common = dict(method="ga", regularizer="gdr", mode="full", reg_weight=args.reg_weight)

    started = time.perf_counter()
    sim = unlearn(source, corpus, out / "sim", UnlearnConfig(**common, lr=args.lr, epochs=args.epochs, eval_limit=0, simulate_rounding_cells=128), show_progress=False)
    print(f"simulated run: {args.epochs} epochs, {sim['wall_seconds']} s, pinned fraction {sim['resolved']['rounding_cells']['pinned_fraction']}")
    quantize(source, "rtn-w4a16", out / "source-rtn", show_progress=False)
    quantize(out / "sim/model", "rtn-w4a16", out / "sim-rtn", show_progress=False)
    equal, count = same_tensors(out / "source-rtn", out / "sim-rtn")
    print(f"rtn-w4a16 of source == of simulated unlearned model: {equal} ({count} tensors)")
    code, report = gate(out / "sim-rtn", out / "sim/model", source, corpus, args.policy, out / "gate")
    metrics = report["metrics"]
    for role in ("source", "full_precision", "quantized"):
        print(f"{role:15s} " + " ".join(f"{k} {metrics[role][k]:.1f}" for k in ("verbmem_f", "knowmem_f", "knowmem_r")))
    print(f"gate exit {code}; failed: {[c['name'] for c in report['checks'] if c['status'] == 'failed']}")

    targets = dict(stop_verbmem=policy.max_verbmem_f, stop_knowmem=policy.max_knowmem_f, epoch_metrics=("verbmem_f", "knowmem_f", "knowmem_r"))
    runs = {
        "simulated, stop_on full-precision": dict(simulate_rounding_cells=128, stop_on="full-precision"),
        "simulated, stop_on quantized": dict(simulate_rounding_cells=128, stop_on="quantized"),
        "unconstrained, stop_on full-precision": dict(stop_on="full-precision"),
        "unconstrained, stop_on quantized": dict(stop_on="quantized"),
    }
    for name, settings in runs.items():
        run_dir = out / name.replace(", ", "-").replace(" ", "_")
        config = UnlearnConfig(**common, lr=args.continue_lr, epochs=args.continue_epochs, **targets, **settings)
        record = unlearn(out / "sim/model", corpus, run_dir, config, show_progress=False)
        quantize(run_dir / "model", "rtn-w4a16", run_dir / "rtn", show_progress=False)
        shipped = evaluate_model(run_dir / "rtn", corpus, show_progress=False, metrics=("verbmem_f", "knowmem_f", "knowmem_r"))
        per_epoch = "; ".join(f"{e['epoch']}: " + "/".join(f"{e['metrics'][m]:.1f}" for m in ("verbmem_f", "knowmem_f")) for e in record["epochs"])
        print(f"{name}: chosen epoch {record['chosen_epoch']} ({record['stop_reason']}); measured_on {record['stopping']['measured_on']}; "
              f"per-epoch VerbMem_f/KnowMem_f [{per_epoch}]; shipped rtn-w4a16 on the whole corpus: "
              f"VerbMem_f {shipped['verbmem_f']:.1f} KnowMem_f {shipped['knowmem_f']:.1f} KnowMem_r {shipped['knowmem_r']:.1f}; {record['wall_seconds']} s")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
