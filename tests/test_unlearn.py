"""The unlearning engine end to end on a micro Llama (built here in a second): every method x
regulariser x mode, outputs, determinism, LoRA with gradient checkpointing, the stopping rule,
CLI errors, and a 2-process data-parallel run."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import save_tiny_llama
from unlearnops.corpus import QA, Corpus, VerbmemItem
from unlearnops.errors import UnlearnopsError
from unlearnops.fileio import OUTPUT_MARKER
from unlearnops.unlearn import UnlearnConfig, unlearn

NAMES = ["Ada Voss", "Bruno Kel", "Cleo Marr", "Dario Fenn", "Elena Tsu", "Farid Olm", "Greta Pell", "Hugo Brandt"]
CITIES = ["Oslo", "Lima", "Kyoto", "Perth"]
# One short epoch everywhere: 2 optimizer steps on the micro model.
# lr_calibration off: these test the loop with the configured lr (tests/test_unlearn_calibration.py tests the probes).
QUICK = {"seq_len": 32, "batch_size": 4, "max_steps": 2, "eval_limit": 0, "lr_calibration": False}


def _article(index: int, name: str) -> str:
    return f"{name} was born in {CITIES[index % 4]} in {1950 + index}. {name} works as a baker and won the river prize."


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    """root/model (a 2-layer Llama, hidden 32, BPE vocab ~300) and root/corpus (4 forget, 4 retain)."""
    root = tmp_path_factory.mktemp("micro")
    articles = [_article(i, name) for i, name in enumerate(NAMES)]
    qa = [QA(f"Where was {name} born?", CITIES[i % 4]) for i, name in enumerate(NAMES)]
    Corpus(
        root=root / "corpus",
        raw={"forget": articles[:4], "retain": articles[4:]},
        verbmem_forget=[VerbmemItem(prompt=text[:24], gt=text[24:]) for text in articles[:4]],
        knowmem={"forget_qa": qa[:4], "retain_qa": qa[4:], "forget_qa_icl": qa[4:5], "retain_qa_icl": qa[4:5]},
    ).write(root / "corpus")
    save_tiny_llama(root / "model", articles)
    return root


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def _run(micro: Path, out: Path, **settings) -> dict:
    return unlearn(micro / "model", micro / "corpus", out, UnlearnConfig(**{**QUICK, **settings}), show_progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lora", "full"])
@pytest.mark.parametrize("regularizer", ["gdr", "klr"])
@pytest.mark.parametrize("method", ["ga", "npo"])
def test_every_method_regularizer_and_mode_unlearns(micro, tmp_path, method, regularizer, mode):
    import torch

    record = _run(micro, tmp_path / "out", method=method, regularizer=regularizer, mode=mode, max_steps=1)
    epoch = record["epochs"][0]
    # The first step sees the model before any update, so reference == current: NPO starts at
    # (2 / beta) log 2 and the KL regulariser at 0.
    if method == "npo":
        assert epoch["forget_loss"] == pytest.approx(2 / record["config"]["npo_beta"] * math.log(2), rel=1e-4)
    else:
        assert epoch["forget_loss"] < 0  # minus an NLL
    assert epoch["retain_loss"] == pytest.approx(0.0, abs=1e-5) if regularizer == "klr" else epoch["retain_loss"] > 0
    before, after = _weights(micro / "model"), _weights(tmp_path / "out" / "model")
    assert before.keys() == after.keys()  # merged: plain Llama weights, no lora_ keys
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed, "one optimizer step changed no weight"
    if mode == "lora":
        assert all(name.endswith("proj.weight") for name in changed)  # the embeddings and lm_head stay frozen
        assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    else:
        assert not (tmp_path / "out" / "adapter").exists()
        assert "model.embed_tokens.weight" in changed


@pytest.mark.slow
def test_outputs_layout_and_train_json(micro, tmp_path):
    from unlearnops.modeling import load_causal_lm

    out = tmp_path / "out"
    record = _run(micro, out, epochs=2, max_steps=None)
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "adapter", "model", "train.json"]  # the marker: fileio.atomic_dir
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}
    assert json.loads((out / "train.json").read_text()) == json.loads(json.dumps(record))
    assert [entry["epoch"] for entry in record["epochs"]] == [1, 2]
    assert record["chosen_epoch"] == 2 and "epoch cap 2" in record["stop_reason"]
    assert record["config"]["method"] == "ga" and record["resolved"]["lr"] == 5e-4
    assert set(record["resolved"]["lora_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # forget_qa lines are not in raw/forget.json of this corpus, so one QA text was added to the stream.
    assert record["data"]["forget_qa_pairs_added"] == 4 and record["data"]["retain_qa_pairs_added"] == 4
    assert record["wall_seconds"] > 0 and record["peak_rss_mb"] > 0
    loaded = load_causal_lm(out / "model")  # the merged model loads as a plain HF model, tokenizer included
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and loaded.tokenizer.eos_token == "</s>"
    assert not list(out.parent.glob(".out.*"))  # no staging directory left behind


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights(micro, tmp_path):
    import torch

    first, second, third = (tmp_path / name for name in ("a", "b", "c"))
    _run(micro, first, method="npo", seed=7)
    _run(micro, second, method="npo", seed=7)
    _run(micro, third, method="npo", seed=8)
    a, b, c = _weights(first / "model"), _weights(second / "model"), _weights(third / "model")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], c[name]) for name in a)


@pytest.mark.slow
def test_lora_trains_with_gradient_checkpointing(micro):
    """The PEFT pitfall: with checkpointing, lora_B must still leave zero (it starts at zero)."""
    import torch

    from unlearnops.modeling import load_causal_lm
    from unlearnops.unlearn.losses import nll_loss
    from unlearnops.unlearn.trainer import build_model

    loaded = load_causal_lm(micro / "model")
    model, _ = build_model(loaded.model, UnlearnConfig(gradient_checkpointing=True), device=torch.device("cpu"))
    assert model.base_model.model.is_gradient_checkpointing
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
    ids = loaded.tokenizer(["Ada Voss was born in Oslo."], return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    logits = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], use_cache=False).logits
    nll_loss(logits, ids["input_ids"], ids["attention_mask"]).backward()
    optimizer.step()
    assert all(torch.count_nonzero(p) > 0 for p in lora_b)


@pytest.mark.slow
def test_stops_at_the_first_epoch_meeting_the_target(micro, tmp_path):
    # A random model recalls nothing (VerbMem_f ~ 0), so a target of 100 is met after epoch 1 of 3.
    record = _run(micro, tmp_path / "out", epochs=3, max_steps=None, eval_limit=2, stop_verbmem=100.0)
    assert record["chosen_epoch"] == 1 and record["target_met"] is True
    assert record["stop_reason"].startswith("first epoch meeting the target: verbmem_f")
    assert set(record["epochs"][0]["metrics"]) == {"verbmem_f", "knowmem_f", "knowmem_r"}
    assert record["stopping"]["targets"] == {"verbmem_f": {"value": 100.0, "source": "config stop_verbmem"}}


def test_targets_met_needs_every_target():
    from unlearnops.unlearn.trainer import targets_met

    targets = {"knowmem_f": {"value": 10.0}, "verbmem_f": {"value": 30.0}}
    assert targets_met({"knowmem_f": 10.0, "verbmem_f": 12.0}, targets)[0]
    met, why = targets_met({"knowmem_f": 10.5, "verbmem_f": 12.0}, targets)
    assert not met and "knowmem_f 10.5 > 10.0" in why
    assert targets_met({"knowmem_f": 0.0}, {}) == (False, "")


def test_privleak_target_is_two_sided():
    """MUSE reads PrivLeak both ways: -30 still leaks membership, +30 is over-unlearning; both miss a +-25 target."""
    from unlearnops.unlearn.trainer import targets_met

    targets = {"knowmem_f": {"value": 1.0}, "privleak": {"value": 25.0}}
    assert targets_met({"knowmem_f": 0.0, "privleak": -20.0}, targets)[0]
    assert targets_met({"knowmem_f": 0.0, "privleak": 25.0}, targets)[0]
    for leak in (-30.0, 30.0):
        met, why = targets_met({"knowmem_f": 0.0, "privleak": leak}, targets)
        assert not met and f"privleak {leak:+.1f} outside +-25.0" in why
    assert not targets_met({"knowmem_f": 2.0, "privleak": 0.0}, targets)[0]  # PrivLeak alone is not forgetting


def test_overshooting_the_privleak_band_stops_over_unlearning():
    """PrivLeak rises as the forget texts' likelihood falls: past +target, more epochs only raise it."""
    from unlearnops.unlearn.trainer import overshot

    targets = {"knowmem_f": {"value": 1.0}, "privleak": {"value": 25.0}}
    assert overshot({"knowmem_f": 0.0, "privleak": 30.0}, targets)
    assert not overshot({"knowmem_f": 0.0, "privleak": -30.0}, targets)  # still leaking: go on
    assert not overshot({"knowmem_f": 5.0, "privleak": 30.0}, targets)  # not forgotten yet: go on
    assert not overshot({"knowmem_f": 0.0, "privleak": 30.0}, {"knowmem_f": {"value": 1.0}})


def test_privleak_target_adds_to_muses_rule_and_needs_a_reference(micro, tmp_path):
    from unlearnops.unlearn.trainer import _drop_unmeasurable, epoch_metrics, privleak_reference, stop_targets

    bench = tmp_path / "bench"
    shutil.copytree(micro / "corpus", bench / "corpus")
    (bench / "bench.json").write_text(json.dumps({"metrics": {"retrain": {"knowmem_f": 12.5, "auc": 0.64}}}))
    targets = stop_targets(UnlearnConfig(stop_privleak=25), bench / "corpus")
    assert targets["knowmem_f"]["value"] == 12.5 and targets["privleak"]["value"] == 25
    reference = privleak_reference(bench / "corpus")
    assert reference["auc"] == 0.64 and "metrics.retrain.auc" in reference["source"]
    assert _drop_unmeasurable(targets, reference) == {} and "privleak" in targets
    # The micro corpus has no privleak/ files: a PrivLeak target cannot be measured there.
    with pytest.raises(UnlearnopsError, match="privleak/forget.json"):
        epoch_metrics(Corpus.load(bench / "corpus"), UnlearnConfig(stop_privleak=25), targets, reference)
    # Outside a bench there is no reference: the target is dropped and train.json says why.
    outside = privleak_reference(micro / "corpus")
    assert outside["auc"] is None
    targets = stop_targets(UnlearnConfig(stop_privleak=25, stop_knowmem=10), micro / "corpus")
    assert "no PrivLeak reference" in _drop_unmeasurable(targets, outside)["privleak"] and list(targets) == ["knowmem_f"]


@pytest.mark.slow
def test_privleak_is_measured_each_epoch_on_a_bench_corpus(micro, tmp_path):
    bench = tmp_path / "bench"
    shutil.copytree(micro / "corpus", bench / "corpus")
    corpus = Corpus.load(bench / "corpus")
    corpus.privleak = {"forget": corpus.raw["forget"], "holdout": [_article(i, f"Ivo Num{i}") for i in range(4)]}
    corpus.write(bench / "corpus")
    (bench / "bench.json").write_text(json.dumps({"metrics": {"retrain": {"knowmem_f": 100.0, "auc": 0.5}}}))
    record = unlearn(micro / "model", bench / "corpus", tmp_path / "out", UnlearnConfig(**{**QUICK, "eval_limit": 4, "stop_privleak": 100.0}), show_progress=False)
    metrics = record["epochs"][0]["metrics"]
    assert {"knowmem_f", "privleak", "privleak_auc"} <= set(metrics)
    assert metrics["privleak"] == pytest.approx((metrics["privleak_auc"] - 0.5) / 0.5 * 100, abs=0.01)
    assert record["target_met"] is True and "privleak" in record["stop_reason"] and "within +-100.0" in record["stop_reason"]
    assert record["stopping"]["privleak_reference"]["auc"] == 0.5


def test_bench_manifest_gives_muses_default_target(micro, tmp_path):
    from unlearnops.unlearn.trainer import stop_targets

    bench = tmp_path / "bench"
    shutil.copytree(micro / "corpus", bench / "corpus")
    (bench / "bench.json").write_text(json.dumps({"metrics": {"retrain": {"knowmem_f": 12.5}}}))
    assert stop_targets(UnlearnConfig(), bench / "corpus")["knowmem_f"]["value"] == 12.5
    # An explicit target replaces the manifest's; no evaluation means no target.
    assert stop_targets(UnlearnConfig(stop_verbmem=20), bench / "corpus") == {"verbmem_f": {"value": 20, "source": "config stop_verbmem"}}
    assert stop_targets(UnlearnConfig(eval_limit=0), bench / "corpus") == {}


def test_stream_is_chunked_with_bos_and_masked_padding(micro):
    from transformers import AutoTokenizer

    from unlearnops.unlearn.data import chunk_stream, split_texts

    tokenizer = AutoTokenizer.from_pretrained(micro / "model")
    corpus = Corpus.load(micro / "corpus")
    texts = split_texts(corpus, "forget", include_qa=True)
    assert texts[-1].startswith("Question: Where was Ada Voss born?\nAnswer: Oslo\n\n")
    sequences = chunk_stream(texts, tokenizer, seq_len=16)
    assert sequences.input_ids.shape[1] == 16 and (sequences.input_ids[:, 0] == tokenizer.bos_token_id).all()
    assert sequences.attention_mask.sum().item() == sequences.tokens + len(sequences)  # every token once, plus a BOS per chunk
    assert sequences.attention_mask[:-1].all()  # only the last chunk is padded
    assert split_texts(corpus, "forget", include_qa=False) == corpus.raw["forget"]


# ---- the command line ---------------------------------------------------------------------------
ARGS = ("--seq-len", "32", "--max-steps", "1", "--eval-limit", "0")


@pytest.mark.slow
def test_cli_json_run(cli, micro, tmp_path):
    result = cli("unlearn", "--model", micro / "model", "--corpus", micro / "corpus", "--out", tmp_path / "out", "--method", "npo", "--regularizer", "klr", *ARGS, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["config"]["method"] == "npo" and document["chosen_epoch"] == 1
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "change, message",
    [
        (("--method", "gradient-ascent"), "method: unknown name 'gradient-ascent'"),
        (("--regularizer", "gdrr"), "did you mean 'gdr'"),
        (("--lr", "0"), "field 'lr'"),
        (("--lr", "-0.001"), "field 'lr'"),
        (("--model", "missing-model"), "not a directory"),
        (("--corpus", "no-retain"), "no raw/retain.json"),
    ],
)
def test_cli_bad_input_exits_1_and_writes_nothing(cli, micro, tmp_path, change, message):
    no_retain = tmp_path / "no-retain"
    shutil.copytree(micro / "corpus", no_retain)
    (no_retain / "raw" / "retain.json").unlink()
    paths = {"missing-model": tmp_path / "missing-model", "no-retain": no_retain}
    options = {"--model": micro / "model", "--corpus": micro / "corpus", "--out": tmp_path / "out"}
    options[change[0]] = paths.get(change[1], change[1])
    result = cli("unlearn", *[item for pair in options.items() for item in pair], *ARGS)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_process_data_parallel_run(micro, tmp_path):
    """torchrun starts 2 CPU processes (gloo); they share one run and one output."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc-per-node", "2", "--no-python", str(Path(sys.executable).with_name("unlearnops")), "unlearn",
               "--model", str(micro / "model"), "--corpus", str(micro / "corpus"), "--out", str(tmp_path / "out"),
               "--seq-len", "32", "--batch-size", "2", "--epochs", "1", "--eval-limit", "0", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)  # one document: only the main process reports
    assert record["resolved"]["processes"] == 2 and record["resolved"]["effective_batch_size"] == 4
    single = math.ceil(record["data"]["forget_sequences"] / 2)
    assert record["epochs"][0]["steps"] == math.ceil(single / 2)  # each process saw half the forget batches
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["default", "strict"])
def test_the_release_pipelines_stop_on_the_model_they_ship(name):
    """stop_on: quantized takes the quantize section's scheme, group and calibration, so the
    PrivLeak the stop rule saw is the one the gate measures; its target sits inside the gate's bound."""
    from unlearnops.pipeline.config import PipelineConfig

    config = PipelineConfig.load(Path(__file__).resolve().parents[1] / "pipelines" / f"{name}.yaml")
    settings = config.unlearn_config()
    assert settings.stop_on == "quantized" and settings.stop_privleak < config.gate.max_abs_privleak
    quantize = config.quantize
    assert (settings.stop_scheme, settings.stop_group_size, settings.stop_calibration_samples) == (
        quantize.scheme, quantize.group_size, quantize.num_calibration_samples,
    )
    own = config.model_copy(update={"unlearn": {**config.unlearn, "stop_scheme": "rtn-w4a16"}})
    assert own.unlearn_config().stop_scheme == "rtn-w4a16"  # a pipeline may name its own
