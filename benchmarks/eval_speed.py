"""Evaluator speed: batched greedy generation vs a naive one-prompt-at-a-time `model.generate` loop.

Runs both on the same prompts of the bench target (VerbMem forget: 128 new tokens; KnowMem
forget and retain: 32 new tokens), in one process, and reports wall and CPU time, speed-up and
whether the outputs are identical token for token. Goal: >= 3x faster with identical outputs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py                 # workspace's default bench
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py --bench /work/bench-tiny --json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py --corpus ../shared/muse-news --limit 48

Record the figure in docs/benchmarks.md ("## Evaluator: batched vs naive").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import default_bench, machine_info, print_machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, help="A bench directory (target/ + corpus/); default: the workspace's bench of --size, built if absent.")
    parser.add_argument("--size", default="default", help="Bench size when --bench is not given.")
    parser.add_argument("--corpus", type=Path, help="Prompts from this MUSE-layout corpus instead of the bench's (e.g. ../shared/muse-news).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, help="First N items of each file.")
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    args = parser.parse_args(argv)

    from unlearnops.corpus import Corpus
    from unlearnops.evaluate import generation, muse
    from unlearnops.modeling import load_causal_lm

    bench = args.bench or default_bench(args.size)
    loaded = load_causal_lm(bench / "target")
    corpus = Corpus.load(args.corpus or bench / "corpus")
    workloads = _workloads(corpus, args.limit, muse)
    model, tokenizer = loaded.model, loaded.tokenizer
    generation.generate_ids(model, tokenizer, workloads[0][1][:2], max_new_tokens=8, batch_size=2)  # warm-up

    rows = []
    for name, prompts, max_new_tokens in workloads:
        naive, naive_wall, naive_cpu = _timed(generation.generate_naive_ids, model, tokenizer, prompts, max_new_tokens=max_new_tokens)
        batched, batched_wall, batched_cpu = _timed(
            generation.generate_ids, model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=args.batch_size
        )
        rows.append({
            "workload": name, "prompts": len(prompts), "max_new_tokens": max_new_tokens, "new_tokens": sum(map(len, batched)),
            "naive_s": naive_wall, "batched_s": batched_wall, "speedup": round(naive_wall / batched_wall, 2),
            "naive_cpu_s": naive_cpu, "batched_cpu_s": batched_cpu, "cpu_speedup": round(naive_cpu / batched_cpu, 2),
            "identical": naive == batched,
        })
    totals = {key: round(sum(row[key] for row in rows), 3) for key in ("naive_s", "batched_s", "naive_cpu_s", "batched_cpu_s")}
    report = {
        "bench": str(bench),
        "corpus": str(args.corpus or bench / "corpus"),
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": args.batch_size,
        "workloads": rows,
        **totals,
        "speedup": round(totals["naive_s"] / totals["batched_s"], 2),
        "cpu_speedup": round(totals["naive_cpu_s"] / totals["batched_cpu_s"], 2),
        "identical": all(row["identical"] for row in rows),
        "machine": machine_info(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if report["identical"] else 1


def _timed(function, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process): on a shared machine wall time
    includes waiting for the cores, so both are reported."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)



def _workloads(corpus, limit, muse) -> list[tuple[str, list[str], int]]:
    def first(items):
        return list(items[:limit] if limit else items)

    workloads = [("verbmem_f", [item.prompt for item in first(corpus.verbmem_forget)], muse.VERBMEM_MAX_NEW_TOKENS)]
    for split in ("forget", "retain"):
        icl = corpus.knowmem[f"{split}_qa_icl"]
        prompts = [muse.knowmem_prompt(icl, qa.question) for qa in first(corpus.knowmem[f"{split}_qa"])]
        workloads.append((f"knowmem_{split[0]}", prompts, muse.KNOWMEM_MAX_NEW_TOKENS))
    return workloads



def _print(report: dict) -> None:
    print_machine(report["machine"])
    print(f"bench: {report['bench']} ({report['model_parameters']:,} parameters), corpus {report['corpus']}, batch size {report['batch_size']}")
    for row in report["workloads"]:
        print(
            f"  {row['workload']:<10} {row['prompts']:>4} prompts x {row['max_new_tokens']:>3} new tokens: "
            f"wall {row['naive_s']:.2f} -> {row['batched_s']:.2f} s ({row['speedup']:.1f}x), "
            f"CPU {row['naive_cpu_s']:.2f} -> {row['batched_cpu_s']:.2f} s ({row['cpu_speedup']:.1f}x), identical={row['identical']}"
        )
    print(
        f"total (naive -> batched): wall {report['naive_s']:.2f} -> {report['batched_s']:.2f} s, speed-up {report['speedup']:.1f}x; "
        f"CPU {report['naive_cpu_s']:.2f} -> {report['batched_cpu_s']:.2f} s, {report['cpu_speedup']:.1f}x; identical={report['identical']}"
    )


if __name__ == "__main__":
    sys.exit(main())
