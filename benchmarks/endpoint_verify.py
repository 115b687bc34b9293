"""Endpoint verification cost: the MUSE requests of `unlearnops verify-endpoint`, sequential vs concurrent.

Against a running server (e.g. `unlearnops serve --model NAME@production --port 8000`): resolves the
deployment and its registered evaluation exactly as verify-endpoint does, builds the same requests,
then sends them with 1 request in flight (sequential) and with each --concurrency, interleaved
over --repeat rounds, in one process. Reports wall seconds, requests, requests per second, the
speed-up over sequential, and whether every answer (each output's sha256, each Min-K% score) is
the same at every concurrency (batching on the server must not change what is measured).
Nothing is recorded in the audit log.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/endpoint_verify.py --url http://127.0.0.1:8000 --api-key K
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/endpoint_verify.py --url ... --corpus ../shared/muse-news --limit 32

--corpus measures another MUSE-layout corpus's prompts (more and longer requests) with the served
model's tokenizer: a cost measurement only (those numbers are not the registered evaluation's).
Record the figures in docs/benchmarks.md ("## Endpoint verification: sequential vs concurrent").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import machine_info, print_machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", default=os.environ.get("UNLEARNOPS_API_KEY"))
    parser.add_argument("--workspace", type=Path, help="default: $UNLEARNOPS_HOME")
    parser.add_argument("--deployment", help="deployment id (default: the live one at the URL)")
    parser.add_argument("--corpus", type=Path, help="another MUSE-layout corpus to take the prompts from")
    parser.add_argument("--limit", type=int, help="items per metric with --corpus (default: the registered evaluation's limit)")
    parser.add_argument("--concurrency", default="4,16", help="comma-separated concurrencies compared with 1")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from unlearnops import provenance
    from unlearnops.corpus import Corpus
    from unlearnops.endpoint import OpenAIEndpoint, measure, target
    from unlearnops.workspace import Workspace

    workspace = Workspace.resolve(args.workspace)
    records = target.verified_records(workspace)
    levels = [1] + [int(level) for level in args.concurrency.split(",") if int(level) != 1]
    endpoints = {level: OpenAIEndpoint(args.url, api_key=args.api_key, concurrency=level) for level in levels}
    listed = [str(item.get("id")) for item in endpoints[1].models()]
    deployment = target.find_deployment(records, endpoints[1].url, listed, args.deployment)
    goal = target.resolve_target(workspace, records, deployment)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer, model = measure.load_tokenizer(target.fetch_tokenizer(goal.version, provenance.tracking_uri(workspace), Path(scratch)))
    corpus = Corpus.load(args.corpus or goal.corpus)
    metrics = [key for key in measure.MEASURABLE if key in goal.registered or (key == "privleak" and "auc" in goal.registered)]
    jobs = measure.plan_jobs(corpus, metrics, tokenizer, model, args.limit if args.corpus else goal.limit)
    served = deployment["served_model_name"]
    context = next((item.get("max_model_len") for item in endpoints[1].models() if item.get("id") == served), None)
    measure.check_fits(jobs, context, endpoints[1].url)
    measure.measure(endpoints[1], served, jobs[:2], retrain_auc=goal.retrain_auc, max_model_len=context)  # warm-up

    runs: dict[int, list[dict]] = {level: [] for level in levels}
    for _ in range(args.repeat):
        for level in levels:
            started = time.perf_counter()
            result = measure.measure(endpoints[level], served, jobs, retrain_auc=goal.retrain_auc, max_model_len=context)
            runs[level].append({"seconds": time.perf_counter() - started, "requests": result.requests, "values": result.values,
                                "answers": [(i.get("output_sha256"), i.get("mia_score")) for i in result.items]})
    reference = runs[1][0]["answers"]
    sequential = min(run["seconds"] for run in runs[1])
    rows = []
    for level in levels:
        best = min(run["seconds"] for run in runs[level])
        rows.append({
            "concurrency": level, "requests": runs[level][0]["requests"], "best_s": round(best, 2),
            "runs_s": [round(run["seconds"], 2) for run in runs[level]],
            "requests_per_s": round(runs[level][0]["requests"] / best, 2), "speedup": round(sequential / best, 2),
            "same_outputs": all([a for a, _ in run["answers"]] == [a for a, _ in reference] for run in runs[level]),
            "max_min_k_difference": max(abs((b or 0) - (r or 0)) for run in runs[level] for (_, b), (_, r) in zip(run["answers"], reference)),
        })
    for endpoint in endpoints.values():
        endpoint.close()
    report = {
        "endpoint": endpoints[1].url, "served_model": served, "route": deployment.get("route"), "dtype": deployment.get("dtype"),
        "corpus": str(args.corpus or goal.corpus), "jobs": len(jobs),
        "jobs_by_metric": {m: sum(j.metric == m for j in jobs) for m in metrics}, "rows": rows,
        "values": runs[1][0]["values"], "registered": goal.registered if not args.corpus else None, "machine": machine_info(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_machine(report["machine"])
        print(f"endpoint {report['endpoint']} ({served}, route {report['route']}, {report['dtype']}); {len(jobs)} requests "
              f"{report['jobs_by_metric']} from {report['corpus']}")
        print(f"{'in flight':>9} {'requests':>8} {'best s':>8} {'runs s':>16} {'req/s':>7} {'speed-up':>8} {'same outputs':>12} {'max dMin-K':>10}")
        for row in rows:
            print(f"{row['concurrency']:>9} {row['requests']:>8} {row['best_s']:>8} {str(row['runs_s']):>16} {row['requests_per_s']:>7} "
                  f"{row['speedup']:>7}x {str(row['same_outputs']):>12} {row['max_min_k_difference']:>10.2g}")
    return 0 if all(row["same_outputs"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
