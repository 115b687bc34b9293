"""The cost of signed, anchored evidence: `audit verify` on a 10,000-record log, and one append.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/audit_log.py [--records 10000] [--appends 200]

Targets (issue 13, docs/audit.md): verify under 5 s at 10,000 records; an append adds no more
than a few milliseconds. Measured side by side in one run, so the ratios hold on a loaded
machine:

- verify: the whole check (parse, event rules, hash chain, the witness's signed checkpoint, the
  signatures of records after it), and beside it the cost of checking every record's own
  Ed25519 signature (what verify adds when a checkpoint disagrees, to name the forged record);
- append: a signed append (read tail, check it against the witness, sign the record, write and
  fsync it, sign and write the checkpoint) next to the storage alone (the same lock, one
  O_APPEND write and fsync of an equally long line), so the difference is what evidence adds.

Everything lives in a temporary directory (key and witness included); nothing is kept.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_log(path: Path, count: int):
    """A log of `count` records with the pipeline's mix of events, signed by the log's own code.

    Written in one go (no per-record lock and fsync) to keep the setup short: the appends
    themselves are measured below, on this log.
    """
    from unlearnops import audit
    from unlearnops.audit import AuditLog
    from unlearnops.audit.signing import Checkpoint
    from unlearnops.fileio import canonical_json

    log = AuditLog(path)
    log.append(audit.RUN_STARTED, run_id="first")  # record 1 (log.created) and 2, through the real append
    key, last = log.signing_key(), log.records()[-1]
    sha = "ab" * 32
    events = [
        (audit.REQUEST_RECEIVED, {"request_id": "req", "request_sha256": sha, "received_at": "2026-11-01T00:00:00Z", "deadline": "2026-12-01T00:00:00Z"}),
        (audit.REQUEST_VALIDATED, {"request_id": "req", "data_sha256": sha, "data_files": [f"forget.bench:raw/forget.json={sha}"]}),
        (audit.RUN_STARTED, {"run_id": "run", "request_id": "req"}),
        (audit.GATE_DECIDED, {"run_id": "run", "passed": True, "gate_report_sha256": sha, "model_sha256": sha}),
        (audit.VERSION_REGISTERED, {"name": "m", "version": 1, "model_sha256": sha, "gate_passed": True, "role": "unlearned", "request_ids": ["req"]}),
        (audit.RUN_FINISHED, {"run_id": "run", "status": "registered"}),
    ]
    with open(path, "ab") as handle:
        for index in range(count - 2):
            event, fields = events[index % len(events)]
            last = log._signed(key, last["seq"] + 1, event, fields, last["hash"], last["timestamp"])
            handle.write(canonical_json(last) + b"\n")
    log_id = log.records()[0]["fields"]["log_id"]
    log.witness.write(log.storage.location, Checkpoint(log_id, last["seq"], last["hash"]).sign(key))
    return log


def time_verify(log, repeats: int) -> tuple[float, float, int]:
    """(median s of verify, median s of checking every record's own signature too, records)."""
    from unlearnops.audit.signing import record_signature_valid

    verify, every_signature = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = log.verify()
        verify.append(time.perf_counter() - started)
        assert result.ok, result.reason
        key = log.trusted_key()
        started = time.perf_counter()
        assert all(record_signature_valid(key, r["hash"], r["sig"]) for r in log.records())
        every_signature.append(time.perf_counter() - started)
    return statistics.median(verify), statistics.median(every_signature), result.checked


def time_appends(log, appends: int) -> tuple[list[float], list[float], list[float]]:
    """Per-append seconds: signed and checkpointed; the witness write within it; the storage alone."""
    from unlearnops import audit
    from unlearnops.audit.storage import FileStorage

    plain = FileStorage(log.path.with_name("plain.jsonl"))
    line = log.storage.last_line()
    witness_write, witness_times = log.witness.write, []

    def timed_write(location, note):
        started = time.perf_counter()
        witness_write(location, note)
        witness_times.append(time.perf_counter() - started)

    log.witness.write = timed_write
    signed, storage_only = [], []
    for index in range(appends):
        started = time.perf_counter()
        log.append(audit.RUN_STARTED, run_id=f"bench-{index}")
        signed.append(time.perf_counter() - started)
        started = time.perf_counter()
        with plain.appending() as session:
            session.last_line()
            session.append_line(line)
        storage_only.append(time.perf_counter() - started)
    return signed, witness_times, storage_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        os.environ["UNLEARNOPS_AUDIT_KEY"] = str(root / "key" / "audit.pem")
        os.environ["UNLEARNOPS_AUDIT_WITNESS"] = str(root / "witness")
        started = time.perf_counter()
        log = build_log(root / "ws" / "audit.jsonl", args.records)
        print(f"built a {args.records}-record log in {time.perf_counter() - started:.1f} s ({log.path.stat().st_size / 1e6:.1f} MB)")
        verify_s, signatures_s, checked = time_verify(log, args.repeats)
        print(f"verify {checked} records: {verify_s:.2f} s (median of {args.repeats}; target < 5 s). For comparison, checking "
              f"every record's own signature (what verify does only when a checkpoint disagrees, to name the forged record): "
              f"{signatures_s:.2f} s more")
        signed, witness, storage_only = time_appends(log, args.appends)
        ms = {name: statistics.median(values) * 1000 for name, values in (("signed", signed), ("witness", witness), ("plain", storage_only))}
        p95 = sorted(signed)[int(0.95 * len(signed))] * 1000
        print(f"append ({args.appends} each, on a {checked}-record log): signed + checkpointed {ms['signed']:.2f} ms median "
              f"(p95 {p95:.2f} ms); storage alone (lock, write, fsync) {ms['plain']:.2f} ms")
        print(f"  evidence adds {ms['signed'] - ms['plain']:.2f} ms: {ms['witness']:.2f} ms writing the checkpoint durably "
              f"(temporary file, fsync, rename) and {ms['signed'] - ms['plain'] - ms['witness']:.2f} ms of checks and Ed25519 signing")
        print(f"load: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")


if __name__ == "__main__":
    main()
