"""The dense route's copy: exactly the evaluator's dequantized tensors, reproducible, and measured the same.

The registered model here is the tiny bench's retrain model quantized with RTN W4A16 (the scheme
pipelines/ci.yaml ships): its MUSE numbers are not saturated (VerbMem_f ~22, PrivLeak AUC ~0.8), so
a changed weight would show. The evaluator runs through the CLI (`unlearnops evaluate`) on both
directories, and its per-item details (generated texts, scores, Min-K% values) are compared too.
"""

from __future__ import annotations

import json
import shutil

import pytest

from unlearnops.fileio import read_json, sha256_tree
from unlearnops.serve import dense

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered_w4a16(tiny_bench, tmp_path_factory):
    from unlearnops.quantize import quantize

    out = tmp_path_factory.mktemp("w4a16") / "model"
    quantize(tiny_bench / "retrain", "rtn-w4a16", out, group_size=128, show_progress=False)
    return out


@pytest.fixture(scope="module")
def copy(registered_w4a16, tmp_path_factory):
    return dense.dense_copy(registered_w4a16, sha256_tree(registered_w4a16), tmp_path_factory.mktemp("derived"))


def _dense_state(model_dir):
    from unlearnops.modeling import load_causal_lm

    return load_causal_lm(model_dir).model.state_dict()


def test_the_copy_holds_exactly_what_the_evaluator_loads(registered_w4a16, copy):
    import torch

    source, served = _dense_state(registered_w4a16), _dense_state(copy.path)
    assert set(served) <= set(source) and len(served) == copy.derivation["tensors_checked"]
    for key, tensor in served.items():
        assert tensor.dtype == source[key].dtype and torch.equal(tensor, source[key]), key
    # The reason for no cast: float16 would move most of the dequantized weights off their values.
    projections = [source[key] for key in served if key.endswith("proj.weight")]
    moved = sum(int((w.half().float() != w).sum()) for w in projections)
    assert moved > sum(w.numel() for w in projections) // 2
    config = read_json(copy.path / "config.json")
    assert "quantization_config" not in config and config["dtype"] == copy.derivation["dtype"] == "float32"
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (copy.path / name).read_bytes() == (registered_w4a16 / name).read_bytes()


def test_the_derivation_record_links_the_registered_hash_to_the_served_hash(registered_w4a16, copy):
    record = copy.derivation
    assert record["source_sha256"] == sha256_tree(registered_w4a16)
    assert record["served_sha256"] == copy.sha256 == sha256_tree(copy.path)
    assert record["method"] == "dequantize-compressed-tensors" and record["source_format"] == "w4a16 (compressed-tensors)"
    assert {"torch", "transformers", "compressed-tensors"} <= set(record["versions"])
    assert copy.path.name == f"dense-{record['source_sha256']}"  # content-addressed by what it derives from
    assert read_json(copy.path.with_name(copy.path.name + ".json")) == record


def test_an_auditor_deriving_it_again_gets_the_same_hash(registered_w4a16, copy, tmp_path):
    again = dense.derive_dense(registered_w4a16, tmp_path / "again")
    assert again["served_sha256"] == copy.sha256


def test_a_changed_cached_copy_is_derived_again(registered_w4a16, copy, tmp_path):
    cache = tmp_path / "derived"
    shutil.copytree(copy.path.parent, cache)
    served = cache / copy.path.name
    (served / "config.json").write_text(json.dumps({**read_json(served / "config.json"), "rms_norm_eps": 0.5}))
    notes: list[str] = []
    again = dense.dense_copy(registered_w4a16, copy.derivation["source_sha256"], cache, notify=notes.append)
    assert again.sha256 == copy.sha256 == sha256_tree(served)
    assert notes[0] == f"cached dense copy {served.name} does not match its derivation record; deriving it again"
    notes.clear()
    vouched = {(copy.sha256, dense.record_sha256(copy.derivation))}  # what a signed deployment.started record pairs
    assert dense.dense_copy(registered_w4a16, copy.derivation["source_sha256"], cache, vouched=vouched, notify=notes.append).sha256 == copy.sha256
    assert notes == []  # a matching, vouched-for cache is reused without deriving


def test_the_evaluator_measures_the_same_muse_numbers_on_the_copy(cli, tiny_bench, registered_w4a16, copy, tmp_path):
    retrain_auc = read_json(tiny_bench / "bench.json")["metrics"]["retrain"]["auc"]

    def evaluate(model_dir, details) -> dict:
        result = cli(
            "evaluate", "--model", model_dir, "--corpus", tiny_bench / "corpus", "--retrain-auc", retrain_auc,
            "--details", details, "--json",
        )
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    registered = evaluate(registered_w4a16, tmp_path / "registered.jsonl")
    served = evaluate(copy.path, tmp_path / "served.jsonl")
    keys = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak", "auc", "counts")
    assert {k: served[k] for k in keys} == {k: registered[k] for k in keys}
    assert 0 < registered["verbmem_f"] < 100 and 0 < registered["auc"] < 1  # not saturated: a changed weight would show
    assert (tmp_path / "served.jsonl").read_text() == (tmp_path / "registered.jsonl").read_text()  # item for item
    assert registered["precision"] == "w4a16 (compressed-tensors)" and served["precision"] == "float32"


def test_a_cached_copy_is_reused_only_as_a_signed_record_derived_it(registered_w4a16, tmp_path, monkeypatch):
    """An insider with write access to the workspace swaps the cached dense copy AND rewrites its
    derivation record to match: the cache is reused only when a signed deployment.started record paired
    the registered hash with exactly these files and this derivation record, so serve derives it again."""
    from test_serve import _register
    from test_serve_route import fake_vllm_venv
    from unlearnops import audit, serve
    from unlearnops.fileio import write_json
    from unlearnops.workspace import Workspace

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = Workspace.resolve(tmp_path / "ws")
    _register(workspace, "news", registered_w4a16, gate="passed", alias="production", request_ids=["req-1"])
    python = fake_vllm_venv(tmp_path / "venv")

    def prepared() -> tuple[serve.ServePlan, list[str]]:
        notes: list[str] = []
        plan = serve.plan_serve("news@production", workspace=workspace, vllm_python=python, isa="avx2")
        return serve.prepare(plan, notify=notes.append), notes

    first, notes = prepared()
    assert first.route.name == "dense" and any("deriving a dense copy" in note for note in notes)
    genuine = first.deployment.served_sha256
    # No deployment signed this derivation yet: deriving again is the only safe answer.
    assert any("deriving a dense copy" in note for note in prepared()[1])
    # A deployment's signed record pairs the registered hash with the copy and its derivation record.
    log = audit.AuditLog(workspace.audit_log)
    log.append(audit.DEPLOYMENT_STARTED, **first.deployment.started_fields(first.command, "news/1"))
    again, notes = prepared()
    assert again.deployment.served_sha256 == genuine and not any("deriving" in note for note in notes)  # reused

    # The attack: other weights (here the norms scaled) in the cached copy, its record rewritten to match.
    import torch
    from safetensors.torch import load_file, save_file

    weights = first.served_dir / "model.safetensors"
    tensors = load_file(weights)
    save_file({key: value * 2 if key.endswith("norm.weight") else value for key, value in tensors.items()}, weights,
              metadata={"format": "pt"})
    record_path = first.served_dir.with_name(first.served_dir.name + ".json")
    write_json(record_path, {**read_json(record_path), "served_sha256": sha256_tree(first.served_dir)})
    attacked, notes = prepared()
    assert any("deriving a dense copy" in note for note in notes), notes
    assert attacked.deployment.served_sha256 == genuine == sha256_tree(attacked.served_dir)
    assert all(torch.equal(value, tensors[key]) for key, value in load_file(weights).items())
