"""Time every quantization scheme on a bench target and check what quantization must preserve.

    OMP_NUM_THREADS=1 taskset -c 0,1 python benchmarks/quantize_schemes.py /work/bench-default [--out DIR]

Per scheme: seconds for `quantize()` in-process (model load + quantize + save + verify; imports
excluded, they are paid once per process and reported separately), the most distinct values
in one group of the SAVED weights, and VerbMem_f / KnowMem_f / KnowMem_r of the quantized model
(the memorising target must stay >= 85 VerbMem_f). Prints a Markdown table (docs/quantize.md).
Target: every scheme <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a bench dir (corpus/, target/, bench.json)")
    parser.add_argument("--out", type=Path, default=None, help="where the quantized models go (default: a temp dir)")
    parser.add_argument("--schemes", default=None, help="comma-separated (default: all)")
    args = parser.parse_args()

    started = time.perf_counter()
    from unlearnops.evaluate import evaluate_model
    from unlearnops.quantize import SCHEMES, quantize
    from unlearnops.quantize.compat import route_llmcompressor_logs_to_stderr

    route_llmcompressor_logs_to_stderr()
    import bitsandbytes  # noqa: F401
    from llmcompressor import oneshot  # noqa: F401

    imports = time.perf_counter() - started
    out = args.out or Path(tempfile.mkdtemp(prefix="quantize-bench-"))
    target, corpus = args.bench / "target", args.bench / "corpus"
    names = args.schemes.split(",") if args.schemes else list(SCHEMES)
    fp = evaluate_model(target, corpus, show_progress=False)
    print(f"imports: {imports:.1f} s; threads: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, cpus {os.cpu_count()}")
    print("| scheme | quantize() s | of which backend s | max values / group | VerbMem_f | KnowMem_f | KnowMem_r |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| full precision | - | - | - | {fp['verbmem_f']:.1f} | {fp['knowmem_f']:.1f} | {fp['knowmem_r']:.1f} |")
    for name in names:
        began = time.perf_counter()
        manifest = quantize(target, name, out / name, corpus=corpus, show_progress=False)
        seconds = time.perf_counter() - began
        metrics = evaluate_model(out / name, corpus, show_progress=False)
        print(
            f"| {name} | {seconds:.1f} | {manifest['wall_time_s']:.1f} | {manifest['max_distinct_values_per_group']} "
            f"| {metrics['verbmem_f']:.1f} | {metrics['knowmem_f']:.1f} | {metrics['knowmem_r']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
