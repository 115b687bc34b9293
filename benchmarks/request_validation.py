"""Time `unlearnops validate` on the example bench request, in fresh processes (as a user runs it).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/request_validation.py [--workspace DIR] [--runs 3]

Target: under 10 s per run (docs/requests.md). Also times `import great_expectations` alone,
the largest part. The workspace must hold the default bench (built on first use otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    validate = [str(Path(sys.executable).parent / "unlearnops"), "validate", "--request", "examples/bench-request.json", "--json"]
    if args.workspace:
        validate += ["--workspace", args.workspace]
    timed(validate)  # warm the OS file cache, and build the bench if it is missing
    runs = []
    for _ in range(args.runs):
        seconds, result = timed(validate)
        report = json.loads(result.stdout)
        runs.append({"wall_s": round(seconds, 2), "in_process_s": report["seconds"], "exit": result.returncode})
    imports = [round(timed([sys.executable, "-c", "import great_expectations"])[0], 2) for _ in range(args.runs)]
    print(json.dumps({
        "validate_runs": runs,
        "validate_median_wall_s": statistics.median(run["wall_s"] for run in runs),
        "import_great_expectations_s": imports,
    }, indent=2))


if __name__ == "__main__":
    main()
