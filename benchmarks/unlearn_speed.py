"""LoRA vs full fine-tuning on the bench model: optimizer steps per second and peak RSS.

Each mode runs in its own subprocess, so ru_maxrss (peak resident set) is that mode's alone; a
third subprocess only imports the trainer's libraries and loads the model and corpus: the
baseline that the deltas are over (at ~1M parameters the process baseline dominates RSS).
Same method, data and number of steps (`max_steps`); the per-epoch evaluation is off.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/unlearn_speed.py [--bench DIR] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import default_bench, machine_info, print_machine

MODES = ("baseline", "lora", "full")


def child(mode: str, bench: Path, steps: int, method: str) -> dict:
    """Run one mode in this process and return its numbers."""
    import accelerate  # noqa: F401  (the trainer's imports, also in the baseline)
    import peft  # noqa: F401

    from unlearnops.corpus import Corpus
    from unlearnops.modeling import load_causal_lm

    if mode == "baseline":
        load_causal_lm(bench / "target")
        Corpus.load(bench / "corpus")
        return {"mode": mode, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    from unlearnops.unlearn import UnlearnConfig, unlearn

    # The training loop alone: the calibration probes (a copy of the trainable weights) are not what is compared.
    config = UnlearnConfig(method=method, mode=mode, epochs=10**4, max_steps=steps, eval_limit=0, lr_calibration=False)
    with tempfile.TemporaryDirectory() as scratch:
        record = unlearn(bench / "target", bench / "corpus", Path(scratch) / "out", config, show_progress=False)
    trained = sum(epoch["steps"] for epoch in record["epochs"])
    seconds = sum(epoch["seconds"] for epoch in record["epochs"])
    return {
        "mode": mode,
        "steps": trained,
        "train_seconds": round(seconds, 2),
        "steps_per_s": round(trained / seconds, 4),
        "trainable_parameters": record["resolved"]["trainable_parameters"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--method", default="ga")
    parser.add_argument("--child", choices=MODES)
    args = parser.parse_args()
    bench = args.bench or default_bench()
    if args.child:
        print(json.dumps(child(args.child, bench, args.steps, args.method)))
        return
    print_machine(machine_info())
    print(f"bench {bench}; method {args.method}+gdr; {args.steps} steps of 8 forget + 8 retain sequences x 128 tokens; eval off")
    results = {}
    for mode in MODES:
        command = [sys.executable, __file__, "--bench", str(bench), "--steps", str(args.steps), "--method", args.method, "--child", mode]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["baseline"]["peak_rss_mb"]
    print(f"baseline process (imports + model + corpus): peak RSS {base:.1f} MB")
    for mode in ("lora", "full"):
        r = results[mode]
        print(f"{mode:5s}: {r['steps']} steps in {r['train_seconds']} s = {r['steps_per_s']} steps/s; trainable {r['trainable_parameters']:,}; "
              f"peak RSS {r['peak_rss_mb']:.1f} MB (+{r['peak_rss_mb'] - base:.1f} over baseline)")
    lora, full = results["lora"], results["full"]
    print(f"LoRA / full: peak RSS {lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}, "
          f"over baseline {(lora['peak_rss_mb'] - base) / max(full['peak_rss_mb'] - base, 1e-9):.2f}, steps/s {lora['steps_per_s'] / full['steps_per_s']:.2f}")


if __name__ == "__main__":
    main()
