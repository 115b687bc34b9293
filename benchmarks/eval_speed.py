"""Evaluator speed: our batched generation vs a naive one-prompt-at-a-time loop, and vs MUSE's own code.

On the same model and prompts (VerbMem forget: 128 new tokens; KnowMem forget and retain: 32
new tokens, each split's few-shot block shared by its prompts), in one process:

- naive: one unpadded `model.generate` call per prompt (`generation.generate_naive_ids`);
- ours: `generation.generate_ids` (batches, the shared few-shot prefix's keys
  and values computed once per split, static KV cache), compared token for token with naive;
- with `--muse PATH` (a checkout of github.com/swj0419/muse_bench, never copied here): MUSE's
  reference `metrics/verbmem.py` and `metrics/knowmem.py` `eval` functions against our whole
  metric (`evaluate_loaded`: generation, decoding, the answer cut, ROUGE-L), compared text for
  text and score for score. MUSE's code does not cut prompts to the model's context (its models'
  contexts hold its prompts); where the evaluator cuts one (docs/evaluate.md), MUSE's code is
  handed the same cut token ids, and the report says how many prompts that was.

Wall and CPU time of this process are both reported (on a shared machine wall time includes
waiting for a core). Goal: >= 3x faster than naive, outputs identical.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py --bench /work/prebuilt/tiny
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py --bench /work/prebuilt/tiny --corpus ../shared/muse-news
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py --bench /work/prebuilt/tiny --muse /tmp/muse_bench --json

`--context N` raises the model's context (Llama's max_position_embeddings; RoPE, so the weights
do not change) so that MUSE-News prompts are not cut: the bench models were trained on texts
under 150 tokens, so what they generate that far out is meaningless, but it is the same in every
path, and it is the prompt length MUSE's own 4,096-token models see. Record the figures in
docs/benchmarks.md ("## Evaluator: batched vs naive").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import default_bench, machine_info, print_machine

TIMES = ("naive_s", "batched_s", "naive_cpu_s", "batched_cpu_s")
MUSE_TIMES = ("muse_s", "ours_s", "muse_cpu_s", "ours_cpu_s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, help="A bench directory (target/ + corpus/); default: the workspace's bench of --size, built if absent.")
    parser.add_argument("--size", default="default", help="Bench size when --bench is not given.")
    parser.add_argument("--corpus", type=Path, help="Prompts from this MUSE-layout corpus instead of the bench's (e.g. ../shared/muse-news).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, help="First N items of each file.")
    parser.add_argument("--context", type=int, help="Raise the model's context to N tokens (see above).")
    parser.add_argument("--muse", type=Path, help="A checkout of github.com/swj0419/muse_bench: also time its reference evaluation code.")
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    args = parser.parse_args(argv)

    from unlearnops.corpus import Corpus
    from unlearnops.evaluate import generation, muse
    from unlearnops.modeling import load_causal_lm

    reference = _load_muse_metrics(args.muse) if args.muse else None
    bench = args.bench or default_bench(args.size)
    loaded = load_causal_lm(bench / "target")
    model, tokenizer = loaded.model, loaded.tokenizer
    if args.context:
        model.config.max_position_embeddings = args.context
    corpus = Corpus.load(args.corpus or bench / "corpus")
    workloads = _workloads(corpus, args.limit)
    # Warm-up, outside every timing: first calls, and the ROUGE scorer's imports.
    generation.generate_ids(model, tokenizer, workloads[0]["prompts"][:2], max_new_tokens=8, batch_size=2)
    muse.rouge_l_f1("warm up", "warm up")

    rows = []
    for workload in workloads:
        prompts, max_new_tokens = workload["prompts"], workload["max_new_tokens"]
        naive, naive_wall, naive_cpu = _timed(generation.generate_naive_ids, model, tokenizer, prompts, max_new_tokens=max_new_tokens)
        batched, batched_wall, batched_cpu = _timed(
            generation.generate_ids, model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=args.batch_size
        )
        budget = generation.prompt_budget(model, tokenizer, max_new_tokens)
        encoded = [generation.encode_prompt(tokenizer, prompt, budget) for prompt in prompts]
        row = {
            "workload": workload["metric"], "prompts": len(prompts), "max_new_tokens": max_new_tokens,
            "prompt_tokens": [min(map(len, encoded)), max(map(len, encoded))],
            "cut_to_context": sum(len(ids) < len(tokenizer(prompt).input_ids) for prompt, ids in zip(prompts, encoded)),
            "shared_prefix_tokens": len(generation.SharedPrefix.of(model, encoded).ids),
            "new_tokens": sum(map(len, batched)),
            "naive_s": naive_wall, "batched_s": batched_wall, "speedup": _ratio(naive_wall, batched_wall),
            "naive_cpu_s": naive_cpu, "batched_cpu_s": batched_cpu, "cpu_speedup": _ratio(naive_cpu, batched_cpu),
            "identical": naive == batched,
        }
        if reference is not None:
            row.update(_against_muse(reference, model, tokenizer, corpus, workload, dict(zip(prompts, encoded)), args))
        rows.append(row)
    report = _report(bench, args, model, rows)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if report["identical"] and report.get("muse_identical", True) else 1


def _workloads(corpus, limit) -> list[dict]:
    from unlearnops.evaluate import muse

    def first(items):
        return list(items[:limit] if limit else items)

    items = first(corpus.verbmem_forget)
    workloads = [{"metric": "verbmem_f", "prompts": [item.prompt for item in items], "gold": [item.gt for item in items],
                  "max_new_tokens": muse.VERBMEM_MAX_NEW_TOKENS}]
    for split in ("forget", "retain"):
        icl, questions = corpus.knowmem[f"{split}_qa_icl"], first(corpus.knowmem[f"{split}_qa"])
        workloads.append({"metric": f"knowmem_{split[0]}", "prompts": [muse.knowmem_prompt(icl, qa.question) for qa in questions],
                          "icl": icl, "questions": questions, "max_new_tokens": muse.KNOWMEM_MAX_NEW_TOKENS})
    return workloads


def _timed(function, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def _ratio(slow: float, fast: float) -> float:
    return round(slow / fast, 2) if fast else float("inf")


# ---- MUSE's reference code ---------------------------------------------------------------------
def _load_muse_metrics(checkout: Path) -> dict:
    """MUSE's metrics/{logger,verbmem,knowmem}.py imported from a checkout, as the package `muse_reference`."""
    folder = checkout / "metrics"
    if not (folder / "knowmem.py").is_file() or not (folder / "verbmem.py").is_file():
        raise SystemExit(f"--muse {checkout}: no metrics/knowmem.py and metrics/verbmem.py; pass a checkout of swj0419/muse_bench")
    os.environ.setdefault("TQDM_DISABLE", "1")  # its per-item progress bars
    package = importlib.util.module_from_spec(importlib.util.spec_from_loader("muse_reference", loader=None, is_package=True))
    package.__path__ = [str(folder)]
    sys.modules["muse_reference"] = package
    modules = {}
    for name in ("logger", "verbmem", "knowmem"):
        spec = importlib.util.spec_from_file_location(f"muse_reference.{name}", folder / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = modules[name]
        spec.loader.exec_module(modules[name])
    return modules


class _SameCut:
    """The tokenizer for MUSE's code: unchanged, except that a prompt the evaluator cuts to the
    model's context encodes to that same cut (MUSE's code would feed the model more positions
    than it has)."""

    def __init__(self, tokenizer, prompt_ids: dict[str, list[int]]):
        self._tokenizer, self._prompt_ids = tokenizer, prompt_ids

    def __call__(self, text, **kwargs):
        import torch

        encoding = self._tokenizer(text, **kwargs)
        ids = self._prompt_ids.get(text)
        if ids is not None and kwargs.get("return_tensors") == "pt" and len(ids) < encoding["input_ids"].shape[1]:
            encoding["input_ids"] = torch.tensor([ids])
        return encoding

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def _against_muse(reference, model, tokenizer, corpus, workload, prompt_ids, args) -> dict:
    """MUSE's eval function vs our whole metric on the same prompts: time, texts, score."""
    from unlearnops.evaluate import evaluate_loaded

    wrapped = _SameCut(tokenizer, prompt_ids)
    if workload["metric"] == "verbmem_f":
        (aggregate, log), muse_wall, muse_cpu = _timed(
            reference["verbmem"].eval, model, wrapped, workload["prompts"], workload["gold"], max_new_tokens=workload["max_new_tokens"])
        key = "verbmem_f"
    else:
        (aggregate, log), muse_wall, muse_cpu = _timed(
            reference["knowmem"].eval, model, wrapped, [qa.question for qa in workload["questions"]],
            [qa.answer for qa in workload["questions"]], [qa.question for qa in workload["icl"]],
            [qa.answer for qa in workload["icl"]], max_new_tokens=workload["max_new_tokens"])
        key = "knowmem_f" if workload["metric"] == "knowmem_f" else "knowmem_r"
    with tempfile.TemporaryDirectory() as scratch:
        details = Path(scratch) / "details.jsonl"
        result, ours_wall, ours_cpu = _timed(evaluate_loaded, model, tokenizer, corpus, limit=args.limit, metrics=[key],
                                             details_path=details, batch_size=args.batch_size)
        ours = [json.loads(line) for line in details.read_text().splitlines()]
    ours = [line for line in ours if line.get("metric") == key]
    same_texts = [line["generated"] for line in ours] == [entry["response"] for entry in log]
    muse_score = aggregate["mean_rougeL"] * 100
    return {
        "muse_s": muse_wall, "ours_s": ours_wall, "muse_speedup": _ratio(muse_wall, ours_wall),
        "muse_cpu_s": muse_cpu, "ours_cpu_s": ours_cpu, "muse_cpu_speedup": _ratio(muse_cpu, ours_cpu),
        "muse_score": round(muse_score, 4), "ours_score": round(result[key], 4),
        "muse_identical": same_texts and abs(muse_score - result[key]) < 1e-9,
    }


# ---- report ------------------------------------------------------------------------------------
def _report(bench, args, model, rows) -> dict:
    totals = {key: round(sum(row[key] for row in rows), 3) for key in TIMES}
    report = {
        "bench": str(bench),
        "corpus": str(args.corpus or bench / "corpus"),
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "context": model.config.max_position_embeddings,
        "batch_size": args.batch_size,
        "limit": args.limit,
        "workloads": rows,
        **totals,
        "speedup": _ratio(totals["naive_s"], totals["batched_s"]),
        "cpu_speedup": _ratio(totals["naive_cpu_s"], totals["batched_cpu_s"]),
        "identical": all(row["identical"] for row in rows),
        "machine": machine_info(),
        "load_average": list(os.getloadavg()),
    }
    if args.muse:
        muse_totals = {key: round(sum(row[key] for row in rows), 3) for key in MUSE_TIMES}
        report.update(muse_totals, muse_checkout=str(args.muse),
                      muse_speedup=_ratio(muse_totals["muse_s"], muse_totals["ours_s"]),
                      muse_cpu_speedup=_ratio(muse_totals["muse_cpu_s"], muse_totals["ours_cpu_s"]),
                      muse_identical=all(row["muse_identical"] for row in rows))
    return report


def _print(report: dict) -> None:
    print_machine(report["machine"])
    print(f"load average: {', '.join(f'{value:.2f}' for value in report['load_average'])}")
    print(f"bench: {report['bench']} ({report['model_parameters']:,} parameters, context {report['context']}), "
          f"corpus {report['corpus']}, batch size {report['batch_size']}")
    for row in report["workloads"]:
        print(
            f"  {row['workload']:<10} {row['prompts']:>4} prompts ({row['prompt_tokens'][0]}-{row['prompt_tokens'][1]} tokens, "
            f"{row['cut_to_context']} cut to the context, shared prefix {row['shared_prefix_tokens']}) x {row['max_new_tokens']:>3} new tokens"
        )
        print(
            f"    naive -> ours: wall {row['naive_s']:.2f} -> {row['batched_s']:.2f} s ({row['speedup']:.1f}x), "
            f"CPU {row['naive_cpu_s']:.2f} -> {row['batched_cpu_s']:.2f} s ({row['cpu_speedup']:.1f}x), identical={row['identical']}"
        )
        if "muse_s" in row:
            print(
                f"    MUSE's code -> our metric: wall {row['muse_s']:.2f} -> {row['ours_s']:.2f} s ({row['muse_speedup']:.1f}x), "
                f"CPU {row['muse_cpu_s']:.2f} -> {row['ours_cpu_s']:.2f} s ({row['muse_cpu_speedup']:.1f}x), "
                f"score {row['muse_score']:.2f} vs {row['ours_score']:.2f}, same texts and score={row['muse_identical']}"
            )
    print(
        f"total (naive -> ours): wall {report['naive_s']:.2f} -> {report['batched_s']:.2f} s, speed-up {report['speedup']:.1f}x; "
        f"CPU {report['naive_cpu_s']:.2f} -> {report['batched_cpu_s']:.2f} s, {report['cpu_speedup']:.1f}x; identical={report['identical']}"
    )
    if "muse_s" in report:
        print(
            f"total (MUSE's code -> our metric): wall {report['muse_s']:.2f} -> {report['ours_s']:.2f} s, {report['muse_speedup']:.1f}x; "
            f"CPU {report['muse_cpu_s']:.2f} -> {report['ours_cpu_s']:.2f} s, {report['muse_cpu_speedup']:.1f}x; "
            f"same texts and scores={report['muse_identical']}"
        )


if __name__ == "__main__":
    sys.exit(main())
