"""A model directory is code until proven otherwise: remote code (config.json `auto_map`) and
pickle weights are refused by every command that loads a model, unless the user opts in.

The hostile directories carry payloads that would leave a marker file if anything executed them,
so "refused" also means "nothing ran". modeling.check_model_dir is the one gate; these tests go
through the CLI (evaluate, quantize, unlearn).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

MARKER = "payload-ran"


class _Payload:
    """Unpickling this runs `open(marker, "w")`: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def remote_code_model(root: Path, tiny_bench: Path) -> Path:
    """The tiny target, with config.json asking for a module of its own that writes the marker."""
    model = root / "remote-code-model"
    shutil.copytree(tiny_bench / "target", model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    (model / "evil.py").write_text(f"open({str(root / MARKER)!r}, 'w').write('remote code ran')\n")
    return model


def pickle_model(root: Path, tiny_bench: Path) -> Path:
    """The tiny target's config with weights as a pickle whose loading writes the marker."""
    model = root / "pickle-model"
    model.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bench / "target" / name, model / name)
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(root / MARKER)))
    return model


HOSTILE = {"remote code": (remote_code_model, "remote code (auto_map)"), "pickle": (pickle_model, "pickle format")}


def commands(model: Path, corpus: Path, out: Path) -> dict[str, list]:
    return {
        "evaluate": ["evaluate", "--model", model, "--corpus", corpus, "--limit", "1"],
        "quantize": ["quantize", "--model", model, "--scheme", "rtn-w4a16", "--out", out],
        "unlearn": ["unlearn", "--model", model, "--corpus", corpus, "--out", out],
    }


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["evaluate", "quantize", "unlearn"])
def test_every_loading_command_refuses_an_unsafe_model_and_runs_nothing(cli, workspace, tmp_path, tiny_bench, hostile, command):
    build, words = HOSTILE[hostile]
    model = build(tmp_path, tiny_bench)
    result = cli(*commands(model, tiny_bench / "corpus", tmp_path / "out")[command])
    assert result.exit_code == 1, result
    assert words in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert "--allow-pickle" in result.stderr or "--trust-remote-code" in result.stderr  # the message names the opt-in
    assert not (tmp_path / MARKER).exists(), "the model's payload was executed"
    assert not (tmp_path / "out").exists()


def test_allow_pickle_is_an_explicit_opt_in_that_loads_pickle_weights(cli, workspace, tmp_path, tiny_bench):
    from safetensors.torch import load_file
    import torch

    model = tmp_path / "bin-model"
    model.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bench / "target" / name, model / name)
    torch.save(load_file(tiny_bench / "target" / "model.safetensors"), model / "pytorch_model.bin")
    args = ("evaluate", "--model", model, "--corpus", tiny_bench / "corpus", "--limit", "1", "--json")
    refused = cli(*args)
    assert refused.exit_code == 1 and "pickle format" in refused.stderr
    allowed = cli(*args, "--allow-pickle")
    assert allowed.exit_code == 0, allowed.stderr[-2000:]
    assert json.loads(allowed.stdout)["verbmem_f"] is not None


def test_trust_remote_code_is_an_explicit_opt_in(cli, workspace, tmp_path, tiny_bench, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))  # transformers copies remote code here
    model = remote_code_model(tmp_path, tiny_bench)
    args = ("evaluate", "--model", model, "--corpus", tiny_bench / "corpus", "--limit", "1")
    assert cli(*args).exit_code == 1 and not (tmp_path / MARKER).exists()
    opted_in = cli(*args, "--trust-remote-code")
    # Past the refusal, transformers imports the directory's module (the marker): the user asked for it.
    assert "remote code (auto_map)" not in opted_in.stderr
    assert (tmp_path / MARKER).exists()
    assert opted_in.exit_code == 1 and "Traceback" not in opted_in.stderr  # evil.py defines no model: a clear error
