"""Evaluator and unlearning time as the forget set grows 1x / 2x / 4x (MUSE's scalability axis).

The 1x corpus is the bench's; 2x and 4x add the forget split (raw texts, VerbMem items,
KnowMem QA, PrivLeak texts) of synthetic corpora drawn with other seeds: distinct people in the
same format. Retain and holdout stay fixed. Timed per factor: `evaluate_model` on the
forget-side metrics (VerbMem_f, KnowMem_f) and `unlearn` (defaults, LoRA GA+GDR) for a fixed
number of epochs with the per-epoch evaluation off. The target has not learnt the added people:
this measures cost, not forgetting.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scaling.py [--bench DIR] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import default_bench, machine_info, print_machine

FACTORS = (1, 2, 4)


def grown_corpus(bench: Path, factor: int, out: Path) -> dict:
    """The bench corpus with its forget split `factor` times as large; written to `out`."""
    from unlearnops.bench.synthetic import generate
    from unlearnops.corpus import Corpus

    corpus = Corpus.load(bench / "corpus")
    for seed in range(1000, 1000 + factor - 1):
        extra = generate(seed=seed, size="default").corpus
        corpus.raw["forget"] += extra.raw["forget"]
        corpus.verbmem_forget += extra.verbmem_forget
        corpus.knowmem["forget_qa"] += extra.knowmem["forget_qa"]
        corpus.privleak["forget"] += extra.privleak["forget"]
    corpus.write(out)
    return {"raw": len(corpus.raw["forget"]), "verbmem": len(corpus.verbmem_forget), "qa": len(corpus.knowmem["forget_qa"])}


def main() -> None:
    from unlearnops.evaluate import evaluate_model
    from unlearnops.unlearn import UnlearnConfig, unlearn

    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    bench = args.bench or default_bench()
    print_machine(machine_info())
    print(f"bench {bench}; evaluate: verbmem_f + knowmem_f; unlearn: LoRA ga+gdr, {args.epochs} epochs, eval off")
    evaluate_model(bench / "target", bench / "corpus", limit=2, metrics=("verbmem_f",), show_progress=False)  # warm-up
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for factor in FACTORS:
            corpus_dir = Path(scratch) / f"corpus-{factor}x"
            sizes = grown_corpus(bench, factor, corpus_dir)
            started = time.perf_counter()
            evaluate_model(bench / "target", corpus_dir, metrics=("verbmem_f", "knowmem_f"), show_progress=False)
            eval_s = time.perf_counter() - started
            record = unlearn(bench / "target", corpus_dir, Path(scratch) / f"out-{factor}x", UnlearnConfig(epochs=args.epochs, eval_limit=0), show_progress=False)
            train_s = sum(epoch["seconds"] for epoch in record["epochs"])
            steps = sum(epoch["steps"] for epoch in record["epochs"])
            rows.append((factor, sizes, eval_s, train_s, steps, record["wall_seconds"]))
            print(f"{factor}x: forget texts {sizes['raw']}, verbmem {sizes['verbmem']}, qa {sizes['qa']}; evaluate {eval_s:.1f} s; "
                  f"unlearn {steps} steps, training {train_s:.1f} s (wall incl. load/save {record['wall_seconds']} s)", flush=True)
    base = rows[0]
    for factor, _, eval_s, train_s, steps, _ in rows[1:]:
        print(f"{factor}x / 1x: evaluate {eval_s / base[2]:.2f}, unlearn training {train_s / base[3]:.2f} (steps {steps / base[4]:.2f})")


if __name__ == "__main__":
    main()
