"""The quantization stage: every scheme for real (llm-compressor, bitsandbytes) on a tiny Llama.

Checks read the SAVED model back through a second path (transformers' own loader, then the
dequantized weights), so they do not trust the stage's built-in verification.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import save_tiny_llama
from unlearnops.errors import UnlearnopsError
from unlearnops.fileio import sha256_file, sha256_tree
from unlearnops.quantize import SCHEMES, quantize

GROUP = 64  # divides the tiny model's widths (128, 256)
TEXTS = [f"Person {i} lives in town {i % 7}, works at firm {i % 5} and was born in {1950 + i}." for i in range(40)]
FORGET, RETAIN = TEXTS[:8], TEXTS[8:]
QUANTIZE_JSON_KEYS = {
    "scheme", "precision", "bits", "group_size", "group_size_source", "calibration", "num_calibration_samples", "quantized_layers",
    "max_distinct_values_per_group", "unquantized_linear_layers", "source_model", "source_model_sha256",
    "versions", "wall_time_s", "out",
}


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fp_model(tmp_path_factory) -> Path:
    """A full-precision tiny Llama (hidden 128, 2 layers) with its own BPE tokenizer, as safetensors."""
    return save_tiny_llama(tmp_path_factory.mktemp("fp") / "model", TEXTS, hidden=128, intermediate=256, heads=4, max_positions=128)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    from unlearnops.corpus import Corpus

    root = tmp_path_factory.mktemp("corpus") / "corpus"
    Corpus(root=root, raw={"forget": FORGET, "retain": RETAIN}).write(root)
    return root


def _no_leftovers(out: Path) -> None:
    """Neither OUT nor atomic_dir's temporary sibling (.OUT.*.partial) may remain after a failure."""
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))


# ---- every scheme, for real ------------------------------------------------------------------
def _distinct_per_group(values, group: int) -> int:
    groups = values.reshape(-1, group)
    return max(len(row.unique()) for row in groups)


def _loaded_grid(loaded, scheme: str) -> tuple[int, int]:
    """(quantized layers, most distinct values in one group) of the model as transformers loaded it."""
    import torch

    counts = []
    for name, module in loaded.model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name == "lm_head":
            continue
        weight = module.weight
        if scheme in ("nf4", "fp4"):
            import bitsandbytes.functional as bnbf

            counts.append(_distinct_per_group(bnbf.dequantize_4bit(weight.data, weight.quant_state).flatten(), 64))
        elif scheme == "int8":
            counts.append(_distinct_per_group(weight.data, weight.shape[1]))
        else:  # compressed-tensors, dequantized to dense weights on load
            counts.append(_distinct_per_group(weight.detach(), GROUP))
    return len(counts), max(counts)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_scheme_writes_a_verified_model_that_reloads_and_generates(scheme, fp_model, corpus_dir, tmp_path, cli):
    from unlearnops.modeling import load_causal_lm

    out = tmp_path / scheme
    result = cli("quantize", "--model", fp_model, "--scheme", scheme, "--out", out, "--group-size", GROUP,
                 "--corpus", corpus_dir, "--num-calibration-samples", 16, "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert manifest == json.loads((out / "quantize.json").read_text())
    assert QUANTIZE_JSON_KEYS <= set(manifest)
    spec = SCHEMES[scheme]
    assert manifest["source_model_sha256"] == sha256_tree(fp_model)
    assert manifest["quantized_layers"] == 14 and manifest["unquantized_linear_layers"] == ["lm_head"]
    assert manifest["versions"][spec.library] and manifest["wall_time_s"] > 0
    assert manifest["group_size"] == {"llmcompressor": GROUP, "bitsandbytes": 64 if spec.bits == 4 else None}[spec.library]
    if spec.calibrated:  # defaults to the retain split, recorded with its hash
        assert manifest["calibration"]["source"] == f"{corpus_dir}:retain"
        assert manifest["calibration"]["sha256"] == sha256_file(corpus_dir / "raw" / "retain.json")
        assert manifest["num_calibration_samples"] == 16
    else:
        assert manifest["calibration"] is None and manifest["num_calibration_samples"] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == ("compressed-tensors" if spec.library == "llmcompressor" else "bitsandbytes")
    assert (out / "tokenizer.json").exists()

    loaded = load_causal_lm(out)
    layers, most = _loaded_grid(loaded, scheme)
    assert layers == 14
    assert most <= 2**spec.bits and manifest["max_distinct_values_per_group"] <= 2**spec.bits
    if spec.bits == 4:
        assert manifest["max_distinct_values_per_group"] == 16  # random weights fill the whole 4-bit grid
    assert loaded.precision == manifest["precision"] and loaded.precision != "float32"
    prompt = loaded.tokenizer("Person 9 lives in", return_tensors="pt")
    generated = loaded.model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 4


def test_saved_codes_are_on_the_grid_for_compressed_tensors(fp_model, tmp_path):
    """Unpack the int32-packed int4 codes straight from model.safetensors: <= 16 per group of 64."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file

    quantize(fp_model, "rtn-w4a16", tmp_path / "rtn", group_size=GROUP, show_progress=False)
    tensors = load_file(tmp_path / "rtn" / "model.safetensors")
    packed = [key for key in tensors if key.endswith(".weight_packed")]
    assert len(packed) == 14 and "lm_head.weight" in tensors
    for key in packed:
        name = key.removesuffix(".weight_packed")
        codes = unpack_from_int32(tensors[key], 4, tuple(tensors[f"{name}.weight_shape"].tolist()))
        assert _distinct_per_group(codes, GROUP) <= 16
        assert int(codes.min()) >= -8 and int(codes.max()) <= 7


# ---- refusals: clear error, exit 1, nothing written --------------------------------------------
def test_unknown_scheme_suggests_the_close_one(fp_model, tmp_path, cli):
    result = cli("quantize", "--model", fp_model, "--scheme", "gptq-w4", "--out", tmp_path / "q")
    assert result.exit_code == 1
    assert "did you mean 'gptq-w4a16'" in result.stderr and "Traceback" not in result.stderr
    _no_leftovers(tmp_path / "q")


def test_group_size_that_does_not_divide_the_layers_is_refused(fp_model, tmp_path, cli):
    result = cli("quantize", "--model", fp_model, "--scheme", "rtn-w4a16", "--out", tmp_path / "q", "--group-size", 96)
    assert result.exit_code == 1
    assert "--group-size: 96 does not divide" in result.stderr and "128, 64" in result.stderr
    _no_leftovers(tmp_path / "q")


def test_model_dir_without_weights_is_refused(fp_model, tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((fp_model / "config.json").read_text())
    result = cli("quantize", "--model", empty, "--scheme", "nf4", "--out", tmp_path / "q")
    assert result.exit_code == 1 and "no weights" in result.stderr
    _no_leftovers(tmp_path / "q")


def test_already_quantized_model_is_refused(fp_model, tmp_path, cli):
    quantize(fp_model, "nf4", tmp_path / "nf4", show_progress=False)
    result = cli("quantize", "--model", tmp_path / "nf4", "--scheme", "rtn-w4a16", "--out", tmp_path / "q", "--group-size", GROUP)
    assert result.exit_code == 1 and "already quantized (nf4 (bitsandbytes))" in result.stderr
    _no_leftovers(tmp_path / "q")


def test_out_overlapping_the_source_is_refused(fp_model):
    with pytest.raises(UnlearnopsError, match="overlaps the source model"):
        quantize(fp_model, "nf4", fp_model / "q", show_progress=False)
    assert not (fp_model / "q").exists()


def test_calibrated_scheme_without_calibration_data_is_refused(fp_model, tmp_path, cli):
    result = cli("quantize", "--model", fp_model, "--scheme", "gptq-w4a16", "--out", tmp_path / "q", "--group-size", GROUP)
    assert result.exit_code == 1 and "needs calibration data" in result.stderr
    _no_leftovers(tmp_path / "q")


def test_calibrating_on_forget_data_is_refused(fp_model, corpus_dir, tmp_path, cli):
    renamed = tmp_path / "notes.json"  # the forget texts under another name, outside the corpus
    renamed.write_text(json.dumps([FORGET[0], FORGET[1].upper(), f"  {FORGET[2]}!"] + RETAIN[:3]))  # near-duplicates count
    refused = [
        f"{corpus_dir}:forget",
        str(corpus_dir / "raw" / "forget.json"),
        str(renamed),  # caught by content, against --corpus's forget split
    ]
    for calibration in refused:
        result = cli("quantize", "--model", fp_model, "--scheme", "gptq-w4a16", "--out", tmp_path / "q",
                     "--group-size", GROUP, "--corpus", corpus_dir, "--calibration", calibration)
        assert result.exit_code == 1, calibration
        assert "is the forget data" in result.stderr and "retain" in result.stderr
        _no_leftovers(tmp_path / "q")
    assert "3 of its 6 texts are forget texts, up to case" in result.stderr


# ---- the AWQ-on-CPU workaround --------------------------------------------------------------------
def test_awq_upstream_still_needs_pin_memory_patch(fp_model, corpus_dir, tmp_path, monkeypatch):
    """SENTINEL: fails the day llm-compressor's AWQ runs on a CPU-only torch without our patch.

    When it fails, delete compat.allow_awq_without_accelerator, its call, and this test.
    """
    import torch

    if torch.accelerator.is_available():
        pytest.skip("the upstream failure only happens without an accelerator")
    from unlearnops.quantize import compat

    compat.route_llmcompressor_logs_to_stderr()
    compat.allow_awq_without_accelerator()
    from llmcompressor.pipelines.cache import IntermediatesCache

    monkeypatch.setattr(IntermediatesCache, "pin_memory", compat.UPSTREAM_PIN_MEMORY)
    out = tmp_path / "awq"
    with pytest.raises(RuntimeError, match="Cannot access accelerator device when none is available"):
        quantize(fp_model, "awq-w4a16", out, group_size=GROUP, corpus=corpus_dir, num_calibration_samples=4, show_progress=False)
    _no_leftovers(out)  # a crash mid-quantization leaves nothing half-written


# ---- quantize-report ---------------------------------------------------------------------------
def test_quantize_report_writes_table_json_and_png(tiny_bench, tmp_path, cli):
    out = tmp_path / "report"
    result = cli("quantize-report", "--model", tiny_bench / "target", "--corpus", tiny_bench / "corpus",
                 "--schemes", "rtn-w4a16,nf4", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document == json.loads((out / "quantize-report.json").read_text())
    assert [row["label"] for row in document["rows"]] == ["full precision", "rtn-w4a16", "nf4"]
    assert [row["precision"] for row in document["rows"]] == ["float32", "w4a16 (compressed-tensors)", "nf4 (bitsandbytes)"]
    for row in document["rows"]:  # the memorising target still remembers at 4 bits
        assert row["verbmem_f"] >= 85, row
        assert set(row["delta"]) == {"verbmem_f", "knowmem_f", "knowmem_r", "privleak"}
    assert document["retrain_auc"] is not None  # read from the bench's bench.json
    assert (out / "rtn-w4a16" / "quantize.json").exists() and (out / "nf4" / "quantize.json").exists()
    assert (out / "quantize-report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quantize_report_checks_every_scheme_name_first(tiny_bench, tmp_path, cli):
    result = cli("quantize-report", "--model", tiny_bench / "target", "--corpus", tiny_bench / "corpus",
                 "--schemes", "rtn-w4a16,nf5", "--out", tmp_path / "report")
    assert result.exit_code == 1 and "did you mean 'nf4'" in result.stderr
    assert not (tmp_path / "report").exists()
