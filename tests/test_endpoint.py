"""verify-endpoint against real OpenAI-compatible servers (tests/openai_server.py: transformers, not vLLM).

The workspace holds a real pipeline run (tests/evidence_workspace.py). A server of the registered
files is verified, recorded and agrees exactly with the registered evaluation (it runs the
evaluator's own load and math); the source model under the same served name is a mismatch; a
server without prompt log-probabilities, a wrong key, an unknown URL or a request the version does
not satisfy are refused with nothing recorded. The vLLM case is tests/test_serve_chain.py.
"""

from __future__ import annotations

import json

import pytest

from evidence_workspace import FIRST, SECOND, deployed, env, evidence  # noqa: F401  (fixtures)
from openai_server import CompletionServer
from unlearnops import audit
from unlearnops.endpoint import target
from unlearnops.fileio import sha256_file

pytestmark = pytest.mark.slow
KEY = "endpoint-test-key-0123456789"


def _records(evidence, event: str) -> list[dict]:
    return [r for r in audit.AuditLog(evidence.root / "audit.jsonl").records() if r["event"] == event]


def test_a_server_of_the_registered_model_is_verified_and_recorded(env, cli):
    served = f"{env.name}/{env.version}"
    with CompletionServer(env.registered_dir, served, api_key=KEY) as server, deployed(env, server.port, key=KEY) as deployment:
        result = cli("verify-endpoint", "--url", server.url, "--request", FIRST, "--api-key", KEY, "--concurrency", "8", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["passed"] and document["event"] == audit.ENDPOINT_VERIFIED
    checks = {check["name"]: check for check in document["checks"]}
    assert set(checks) == {"served_model", "verbmem_f", "knowmem_f", "knowmem_r", "auc"}
    # the evaluator's load and math behind an HTTP API: the same numbers, exactly
    for name in ("verbmem_f", "knowmem_f", "knowmem_r", "auc"):
        assert checks[name]["measured"] == pytest.approx(checks[name]["registered"], abs=1e-9), name
    assert document["measured"]["counts"] == document["registered"]["counts"]
    # many requests in flight, each one of the planned ones
    assert server.max_in_flight > 1 and server.requests == document["measured"]["requests"] == sum(document["measured"]["counts"].values())
    # recorded: the event, the deployment, the document's hash; the key nowhere
    record = _records(env, audit.ENDPOINT_VERIFIED)[-1]["fields"]
    assert record["deployment_id"] == deployment["deployment_id"] and record["request_ids"] == [FIRST]
    assert record["verification_sha256"] == sha256_file(document["document"]) and record["failed_checks"] == []
    written = open(document["document"]).read()
    for text in (result.stdout, result.stderr, (env.root / "audit.jsonl").read_text(), written):
        assert KEY not in text
    # the document holds scores and hashes, never a prompt, an output or a gold text
    corpus = env.bench / "corpus"
    texts = [item["gt"] for item in json.loads((corpus / "verbmem" / "forget.json").read_text())]
    texts += [item["prompt"] for item in json.loads((corpus / "verbmem" / "forget.json").read_text())]
    texts += json.loads((corpus / "privleak" / "forget.json").read_text())
    windows = {text[i : i + 40] for text in texts if len(text) >= 40 for i in range(0, len(text) - 39, 20)}
    assert windows and not [window for window in windows if window in written]
    assert cli("audit", "verify", "--json").exit_code == 0


def test_another_model_under_the_same_served_name_is_a_mismatch(env, cli):
    served = f"{env.name}/{env.version}"
    with CompletionServer(env.bench / "target", served, api_key=KEY) as server, deployed(env, server.port, key=KEY):
        result = cli("verify-endpoint", "--url", server.url, "--api-key", KEY, "--json")
    assert result.exit_code == 1 and result.stdout, result.stderr
    document = json.loads(result.stdout)
    assert not document["passed"] and document["event"] == audit.ENDPOINT_MISMATCH
    failed = {check["name"] for check in document["checks"] if check["status"] == "failed"}
    assert {"verbmem_f", "knowmem_f"} <= failed  # the original model still knows what was forgotten
    assert set(_records(env, audit.ENDPOINT_MISMATCH)[-1]["fields"]["failed_checks"]) == failed


def test_a_server_that_serves_another_name_is_a_mismatch_without_measuring(env, cli):
    with CompletionServer(env.registered_dir, "someone-else/1", api_key=KEY) as server, deployed(env, server.port, key=KEY):
        result = cli("verify-endpoint", "--url", server.url, "--api-key", KEY, "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [c["name"] for c in document["checks"]] == ["served_model"] and document["checks"][0]["measured"] == "someone-else/1"
    assert server.requests == 0


def test_a_server_without_prompt_logprobs_is_refused_unless_privleak_is_skipped(env, cli):
    served = f"{env.name}/{env.version}"
    log = env.root / "audit.jsonl"
    with CompletionServer(env.registered_dir, served, api_key=KEY, logprobs=False) as server, deployed(env, server.port, key=KEY):
        before = log.read_bytes()
        refused = cli("verify-endpoint", "--url", server.url, "--api-key", KEY)
        assert refused.exit_code == 1 and "--skip privleak" in refused.stderr
        assert log.read_bytes() == before  # nothing recorded for a measurement that could not be made
        skipped = cli("verify-endpoint", "--url", server.url, "--api-key", KEY, "--skip", "privleak", "--json")
    assert skipped.exit_code == 0, skipped.stderr
    document = json.loads(skipped.stdout)
    assert document["skipped"] == ["privleak"] and "auc" not in {c["name"] for c in document["checks"]}
    assert _records(env, audit.ENDPOINT_VERIFIED)[-1]["fields"]["skipped_checks"] == ["privleak"]


def test_refusals_name_the_cause_and_record_nothing(env, cli):
    served = f"{env.name}/{env.version}"
    log = env.root / "audit.jsonl"
    with CompletionServer(env.registered_dir, served, api_key=KEY) as server, deployed(env, server.port, key=KEY) as deployment:
        before = log.read_bytes()
        no_key = cli("verify-endpoint", "--url", server.url)
        assert no_key.exit_code == 1 and "401" in no_key.stderr and "--api-key" in no_key.stderr
        wrong_request = cli("verify-endpoint", "--url", server.url, "--api-key", KEY, "--request", SECOND)
        assert wrong_request.exit_code == 1 and "does not satisfy" in wrong_request.stderr
        credentials = cli("verify-endpoint", "--url", f"http://user:{KEY}@127.0.0.1:{server.port}")
        assert credentials.exit_code == 2 and KEY not in credentials.stderr
        bad_tolerance = cli("verify-endpoint", "--url", server.url, "--api-key", KEY, "--tolerance", "verbmem=3")
        assert bad_tolerance.exit_code == 2 and "did you mean 'verbmem_f'" in bad_tolerance.stderr
        assert log.read_bytes() == before
    # the deployment is stopped now: nothing live at that address
    stopped = cli("verify-endpoint", "--url", server.url, "--api-key", KEY, "--deployment", deployment["deployment_id"])
    assert stopped.exit_code == 1 and "stopped" in stopped.stderr
    unreachable = cli("verify-endpoint", "--url", server.url, "--api-key", KEY)
    assert unreachable.exit_code == 1 and "no answer" in unreachable.stderr


def test_a_log_that_does_not_verify_cannot_say_what_is_deployed(env, cli, tmp_path):
    import shutil

    copy = tmp_path / "ws"
    shutil.copytree(env.root, copy, ignore=shutil.ignore_patterns("bench", "mlartifacts", "stages", "serving"))
    lines = (copy / "audit.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    record["fields"]["request_id"] = "someone-else"  # edited, hash left as it was
    lines[2] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    (copy / "audit.jsonl").write_text("\n".join(lines) + "\n")
    result = cli("verify-endpoint", "--url", "http://127.0.0.1:9", "--workspace", copy)
    assert result.exit_code == 1 and "does not verify" in result.stderr


def test_the_deployment_at_a_url_is_found_by_host_and_port():
    def started(deployment_id, host, port, name="m/1"):
        return {"seq": 1, "timestamp": "t", "event": audit.DEPLOYMENT_STARTED,
                "fields": {"deployment_id": deployment_id, "name": "m", "version": "1", "host": host, "port": port, "served_model_name": name}}

    records = [started("a", "127.0.0.1", 8000), started("b", "0.0.0.0", 9000), started("c", "10.0.0.5", 8000, "m/2")]
    assert target.find_deployment(records, "http://localhost:8000", [], None)["deployment_id"] == "a"  # loopback names agree
    assert target.find_deployment(records, "http://llm.example.org:9000", [], None)["deployment_id"] == "b"  # a wildcard bind
    assert target.find_deployment(records, "http://10.0.0.5:8000", [], None)["deployment_id"] == "c"
    assert target.find_deployment(records, "https://prod.example.org", ["m/2"], None)["deployment_id"] == "c"  # by served name
    records.append({"seq": 2, "timestamp": "t", "event": audit.DEPLOYMENT_STOPPED, "fields": {"deployment_id": "c"}})
    with pytest.raises(Exception, match="--deployment"):
        target.find_deployment(records, "https://prod.example.org", ["m/2"], None)
