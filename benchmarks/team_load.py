"""Load the team setup sustains: audit appends per second (PostgreSQL log vs. the file log, side by
side) and registrations per minute through the MLflow server (upload through the artifact proxy,
version with tags, signed-off audit record, audit-head tag, @candidate, alias record).

Needs a running team setup (deploy/team-up.sh); writes only to fresh log names and model names.

    bash deploy/team-up.sh /tmp/team
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/team_load.py --team /tmp/team
    bash deploy/team-down.sh /tmp/team

A registration here is `Evidence.register`, the register stage of `unlearnops run` (verify the
log, create the version, its signed record, the audit-head tag, @candidate and its record), from
1 or 2 clients at once (engineers); the rest of `run` is training and evaluation on the client,
which the server does not see (docs/pipeline.md times it). Give it a team setup of its own: its
versions go into the server's one log and registry.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

APPENDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from unlearnops.audit import AuditLog, RUN_STARTED
    from unlearnops.audit.backends import open_storage
    from unlearnops.audit.storage import FileStorage

    where, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    log = AuditLog(open_storage(where) if where.startswith("postgresql") else FileStorage(where))
    log.append(RUN_STARTED, run_id=f"{name}-warm", request_id=name)  # connect before the clock starts
    while not go.exists():
        time.sleep(0.005)
    for number in range(count):
        log.append(RUN_STARTED, run_id=f"{name}-{number}", request_id=name)
""")

REGISTRAR = textwrap.dedent("""
    import os, sys, tempfile, time
    from pathlib import Path
    from unlearnops import registry
    from unlearnops.audit import AuditLog
    from unlearnops.audit.backends import open_storage
    from unlearnops.evidence import Evidence
    from unlearnops.fileio import sha256_tree
    from unlearnops.workspace import Workspace

    uri, audit_url, name, model_dir, count, go, client = sys.argv[1:8]
    os.environ["UNLEARNOPS_HOME"] = tempfile.mkdtemp(prefix="team-load-")
    evidence = Evidence(Workspace.resolve(), tracking_uri=uri, log=AuditLog(open_storage(audit_url)))
    model_sha = sha256_tree(model_dir)
    registry.client(uri).search_experiments(max_results=1)  # warm: imports and first connection
    while not Path(go).exists():
        time.sleep(0.005)
    for number in range(int(count)):
        run_id = registry.log_model_run(Path(model_dir), tracking_uri=uri, artifact_root=None,
                                        run_name=f"load {client}-{number}", params={"n": number})
        evidence.register(name=name, run_id=run_id, run_key=f"load:{client}:{number}", model_sha256=model_sha)
""")


def timed_processes(commands: list[list[str]], env: dict[str, str]) -> float:
    """Start every command, let them all begin together (a 'go' file), return the wall seconds."""
    go = Path(tempfile.mkdtemp()) / "go"
    argvs = [[str(go) if part == "{go}" else part for part in command] if "{go}" in command else [*command, str(go)] for command in commands]
    processes = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv in argvs]
    time.sleep(2.0)  # imports and connections happen before the clock starts
    start = time.perf_counter()
    go.touch()
    for process in processes:
        _, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise SystemExit(err.decode()[-3000:])
    return time.perf_counter() - start


def appends(team: dict, env: dict[str, str], writer_counts: list[int], total: int) -> list[dict]:
    rows = []
    for writers in writer_counts:
        per = total // writers
        for backend in ("file", "postgresql"):
            tag = uuid.uuid4().hex[:8]
            where = (team["postgres"]["audit_dsn"] + f"?log=load-{tag}") if backend == "postgresql" else str(Path(tempfile.mkdtemp()) / "audit.jsonl")
            seconds = timed_processes(
                [[sys.executable, "-c", APPENDER, where, f"w{i}", str(per)] for i in range(writers)], env)
            rows.append({"backend": backend, "writers": writers, "appends": per * writers, "seconds": round(seconds, 2),
                         "appends_per_s": round(per * writers / seconds, 1)})
            verify_s = _verify_seconds(where, env)
            rows[-1]["verify_s"] = verify_s
            print(json.dumps(rows[-1]), flush=True)
    return rows


def verify_at_scale(team: dict, env: dict[str, str], records: int) -> list[dict]:
    """verify over a `records`-long log on each backend (the log written by one appender)."""
    rows = []
    for backend in ("file", "postgresql"):
        where = (team["postgres"]["audit_dsn"] + f"?log=load-verify-{uuid.uuid4().hex[:8]}") if backend == "postgresql" else str(Path(tempfile.mkdtemp()) / "audit.jsonl")
        timed_processes([[sys.executable, "-c", APPENDER, where, "v", str(records - 1)]], env)
        rows.append({"backend": backend, "records": records, "verify_s": _verify_seconds(where, env)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _verify_seconds(where: str, env: dict[str, str]) -> float:
    code = ("import sys, time; from unlearnops.audit import AuditLog; from unlearnops.audit.backends import open_storage;"
            "w = sys.argv[1]; log = AuditLog(open_storage(w) if w.startswith('postgresql') else w);"
            "t = time.perf_counter(); r = log.verify(); assert r.ok, r; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, where], env=env, capture_output=True, text=True, check=True).stdout
    return round(float(out), 3)


def registrations(team: dict, env: dict[str, str], client_counts: list[int], per_client: int, model_dir: Path) -> list[dict]:
    rows = []
    for clients in client_counts:
        tag = uuid.uuid4().hex[:8]
        name = f"load-{tag}"
        # the server's one log: a registry has one (verify cross-checks every version against it)
        audit_url = team["postgres"]["audit_dsn"] + f"?log={team['audit_log']}"
        seconds = timed_processes(
            [[sys.executable, "-c", REGISTRAR, team["tracking_uri"], audit_url, name, str(model_dir), str(per_client),
              "{go}", f"c{i}"] for i in range(clients)], env)
        count = clients * per_client
        rows.append({"clients": clients, "registrations": count, "seconds": round(seconds, 1),
                     "per_minute": round(count / seconds * 60, 1), "model_mb": round(_size(model_dir) / 2**20, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--team", type=Path, default=os.environ.get("UNLEARNOPS_TEAM_SERVER"), help="team-up.sh's state directory")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--appends", type=int, default=400, help="appends per measurement, split over the writers")
    parser.add_argument("--verify-records", type=int, default=10000, help="the log length verify is timed on (0: skip)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--registrations", type=int, default=10, help="registrations per client")
    parser.add_argument("--model", type=Path, default=None, help="the model directory to register (default: the tiny bench's target)")
    args = parser.parse_args()
    if not args.team:
        raise SystemExit("--team DIR (or UNLEARNOPS_TEAM_SERVER): the state directory of deploy/team-up.sh")
    team = json.loads((args.team / "team.json").read_text())
    model_dir = args.model or Path(os.environ.get("UNLEARNOPS_TEST_BENCH", "")) / "target"
    if not (model_dir / "config.json").is_file():
        raise SystemExit("--model DIR: a model directory to register (or set UNLEARNOPS_TEST_BENCH to a tiny bench)")

    env = {**os.environ, "PGPASSFILE": team["postgres"]["audit_pgpass"], "MLFLOW_TRACKING_URI": team["tracking_uri"],
           "UNLEARNOPS_AUDIT_KEY": team["audit_key"], "UNLEARNOPS_AUDIT_WITNESS": team["audit_witness"],
           "MLFLOW_TRACKING_USERNAME": "alice",
           "MLFLOW_TRACKING_PASSWORD": Path(team["users"]["alice"]["password_file"]).read_text().strip()}
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; MLflow {team['mlflow_version']}")
    append_rows = appends(team, env, args.writers, args.appends)
    verify_rows = verify_at_scale(team, env, args.verify_records) if args.verify_records else []
    registration_rows = registrations(team, env, args.clients, args.registrations, model_dir)
    print(f"load average {os.getloadavg()[0]:.1f} at end")

    print("\n| backend | writers | appends | s | appends/s | verify s |\n| --- | --- | --- | --- | --- | --- |")
    for row in append_rows:
        print(f"| {row['backend']} | {row['writers']} | {row['appends']} | {row['seconds']} | {row['appends_per_s']} | {row['verify_s']} |")
    print("\n| backend | records | verify s |\n| --- | --- | --- |")
    for row in verify_rows:
        print(f"| {row['backend']} | {row['records']} | {row['verify_s']} |")
    print("\n| clients | registrations | s | per minute | model MB |\n| --- | --- | --- | --- | --- |")
    for row in registration_rows:
        print(f"| {row['clients']} | {row['registrations']} | {row['seconds']} | {row['per_minute']} | {row['model_mb']} |")


if __name__ == "__main__":
    main()
