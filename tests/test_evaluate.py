"""The MUSE evaluator: scoring rules by hand, batched == unbatched generation, the CLI, bad input."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from conftest import SHARED_MUSE_NEWS
from helpers import tiny_llama, tiny_tokenizer
from unlearnops.corpus import QA, Corpus, VerbmemItem
from unlearnops.evaluate import evaluate_loaded, evaluate_model, generation, muse

RESULT_KEYS = {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "auc", "retrain_auc", "privleak_reference", "precision", "model", "counts"}
WORDS = "alice bob carol paris rome oslo baker pilot judge born works lives in the a was and 1970 1984 won prize".split()


# ---- fixtures: a tiny Llama with a tokenizer built here ----------------------------------------
def _tokenizer():
    texts = [" ".join(WORDS), "Question: Where was Bob born?\nAnswer: Rome\n\n", "Alice was born in Paris in 1970."]
    return tiny_tokenizer(texts * 5, vocab_size=320, add_bos=True)


def _model(tokenizer, seed: int):
    return tiny_llama(tokenizer, heads=4, kv_heads=2, seed=seed)


def _make_eos_likely(model, tokenizer, prompts):
    """Random weights rarely say end-of-sequence: give EOS the logits of a token the model often picks."""
    import torch

    generated = sum(generation.generate_naive_ids(model, tokenizer, prompts, max_new_tokens=12), [])
    [(common, _)] = Counter(generated).most_common(1)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = model.lm_head.weight[common] * 1.05


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, model_dir, retrain_dir): random-weight Llamas saved as safetensors."""
    tokenizer = _tokenizer()
    root = tmp_path_factory.mktemp("tiny-models")
    model = _model(tokenizer, seed=0)
    for name, seed in (("model", 0), ("retrain", 1)):
        _model(tokenizer, seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return model, tokenizer, root / "model", root / "retrain"


def _corpus(n: int = 4) -> Corpus:
    sentences = [" ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(12)) for i in range(2 * n)]
    qa = [QA(f"Where was person {i} born?", WORDS[i % len(WORDS)]) for i in range(n)]
    return Corpus(
        root=Path("."),
        verbmem_forget=[VerbmemItem(s[:20], s[20:]) for s in sentences[:n]],
        knowmem={"forget_qa": qa, "forget_qa_icl": qa[:2], "retain_qa": qa[::-1], "retain_qa_icl": qa[2:]},
        privleak={"forget": sentences[:n], "holdout": sentences[n:]},
    )


@pytest.fixture
def corpus_dir(tmp_path) -> Path:
    _corpus().write(tmp_path / "corpus")
    return tmp_path / "corpus"


# ---- scoring rules, by hand --------------------------------------------------------------------
def test_min_k_score_takes_the_lowest_40_percent():
    # 5 tokens -> int(5 * 0.4) = 2 lowest: -5 and -4 -> score 4.5
    assert muse.min_k_score([-1.0, -5.0, -2.0, -4.0, -3.0]) == pytest.approx(4.5)
    # 2 tokens -> int(0.8) = 0 in MUSE (NaN); we take at least the single lowest
    assert muse.min_k_score([-1.0, -3.0]) == pytest.approx(3.0)


def test_min_k_on_a_tiny_tensor_matches_log_softmax_by_hand(tiny):
    import torch

    model, tokenizer, _, _ = tiny
    text = "alice was born in paris"
    ids = tokenizer(text).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    by_hand = [torch.log_softmax(logits[i], -1)[ids[i + 1]].item() for i in range(len(ids) - 1)]
    # batched with a longer text (right padding) must not change this text's log-probs
    [ours, _] = muse.token_logprobs(model, tokenizer, [text, text + " and works as a judge in oslo"], batch_size=2)
    assert ours == pytest.approx(by_hand, abs=1e-5)
    k = int(len(by_hand) * 0.4)
    assert muse.min_k_score(ours) == pytest.approx(-sum(sorted(by_hand)[:k]) / k, abs=1e-5)


def test_auc_sign_follows_muse_memorised_forget_set_gives_zero():
    memorised_forget, unseen_holdout = [0.5, 0.7, 0.6], [3.0, 2.5, 4.0]  # low Min-K score = familiar text
    assert muse.membership_auc(memorised_forget, unseen_holdout) == 0.0
    assert muse.membership_auc(unseen_holdout, memorised_forget) == 1.0
    assert muse.membership_auc([1.0, 2.0], [2.0, 1.0]) == 0.5


def test_privleak_formula_and_sign():
    assert muse.privleak(0.0, 0.5) == pytest.approx(-100.0)  # leaks everything: -100
    assert muse.privleak(0.4772, 0.4772) == 0.0
    assert muse.privleak(0.6, 0.5) == pytest.approx(20.0)  # over-unlearned: positive
    assert muse.privleak(0.4, None) is None


def test_knowmem_prompt_and_cut_rule():
    icl = [QA("Who?", "Ann"), QA("Where?", "Oslo")]
    assert muse.knowmem_prompt(icl, "When?") == "Question: Who?\nAnswer: Ann\n\nQuestion: Where?\nAnswer: Oslo\n\nQuestion: When?\nAnswer: "
    assert muse.cut_answer("1970\n\nQuestion: next") == "1970"
    assert muse.cut_answer("1970\nQuestion: next") == "1970"
    assert muse.cut_answer("1970 Question: next") == "1970 "
    assert muse.cut_answer("in 1970\nor 1971") == "in 1970\nor 1971"  # a single newline is kept
    assert muse.cut_answer("a\nQuestion b\n\nc") == "a"  # the earliest marker wins


def test_rouge_l_is_f1_without_stemmer():
    # LCS 5 of 5 generated and 6 gold tokens: P = 1, R = 5/6, F1 = 10/11
    assert muse.rouge_l_f1("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)
    assert muse.rouge_l_f1("cats running", "cat run") == 0.0  # a stemmer would match these


def test_gold_is_cut_to_its_first_128_tokens(tiny):
    _, tokenizer, _, _ = tiny
    gold = " ".join(WORDS * 20)
    cut = muse.truncate_gold(tokenizer, gold)
    ids = tokenizer(gold).input_ids
    assert len(ids) > 128
    assert cut == tokenizer.decode(ids[:128], skip_special_tokens=True)
    assert gold.startswith(cut) and len(cut) < len(gold)


# ---- batched generation ------------------------------------------------------------------------
def test_batched_generation_equals_one_prompt_at_a_time(tiny):
    _, tokenizer, _, _ = tiny
    model = _model(tokenizer, seed=0)  # a copy: the EOS change below stays in this test
    prompts = ["alice", "Question: Where was Bob born?\nAnswer:", "rome oslo baker works in the", "1970 and", "bob was born in rome and works", "won"]
    _make_eos_likely(model, tokenizer, prompts)
    naive = generation.generate_naive_ids(model, tokenizer, prompts, max_new_tokens=24)
    batched = generation.generate_ids(model, tokenizer, prompts, max_new_tokens=24, batch_size=4)
    assert batched == naive
    lengths = {len(row) for row in naive}
    assert len(lengths) > 1 and min(lengths) < 24  # some rows stopped at EOS while others went on
    assert all(tokenizer.eos_token_id not in row for row in batched)


def test_batched_equals_unbatched_through_a_lora_wrapper(tiny):
    """The unlearning loop evaluates a PEFT-wrapped model in memory."""
    from peft import LoraConfig, get_peft_model

    _, tokenizer, _, _ = tiny
    wrapped = get_peft_model(_model(tokenizer, seed=2), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts = ["alice was", "bob works as a pilot in", "1984"]
    naive = generation.generate_naive_ids(wrapped, tokenizer, prompts, max_new_tokens=16)
    assert generation.generate_ids(wrapped, tokenizer, prompts, max_new_tokens=16, batch_size=3) == naive
    result = evaluate_loaded(wrapped, tokenizer, _corpus(), limit=1, metrics=["knowmem_r"])
    assert result["counts"] == {"knowmem_r": 1} and result["precision"] == "float32"


def test_long_prompts_keep_their_end_and_fit_the_context(tiny):
    model, tokenizer, _, _ = tiny
    long_prompt = " ".join(WORDS * 40) + " THE END"
    ids = generation.encode_prompt(tokenizer, long_prompt, 256 - 128)
    assert len(ids) == 128 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True).endswith(" THE END")
    [out] = generation.generate_ids(model, tokenizer, [long_prompt], max_new_tokens=128)
    assert len(out) <= 128


# ---- library -----------------------------------------------------------------------------------
def test_evaluate_model_details_recompute_every_number(tiny, corpus_dir, tmp_path):
    _, _, model_dir, _ = tiny
    details_path = tmp_path / "out" / "details.jsonl"
    result = evaluate_model(model_dir, corpus_dir, retrain_auc=0.5, details_path=details_path, batch_size=3, show_progress=False)
    assert RESULT_KEYS <= set(result)
    assert result["counts"] == {"verbmem_f": 4, "knowmem_f": 4, "knowmem_r": 4, "privleak_forget": 4, "privleak_holdout": 4}
    assert result["precision"] == "float32" and result["privleak_reference"] == "--retrain-auc 0.5"
    rows = [json.loads(line) for line in details_path.read_text().splitlines()]
    assert len(rows) == 4 * 3 + 8
    for metric in ("verbmem_f", "knowmem_f", "knowmem_r"):
        scored = [row for row in rows if row["metric"] == metric]
        assert {"split", "item", "prompt_id", "generated", "gold", "score"} <= set(scored[0])
        for row in scored:
            assert row["score"] == pytest.approx(muse.rouge_l_f1(row["gold"], row["generated"]))
        assert result[metric] == pytest.approx(100 * sum(row["score"] for row in scored) / len(scored))
    mia = [row for row in rows if row["metric"] == "privleak"]
    forget = [row["mia_score"] for row in mia if row["label"] == 0]
    holdout = [row["mia_score"] for row in mia if row["label"] == 1]
    assert result["auc"] == pytest.approx(muse.membership_auc(forget, holdout))
    assert result["privleak"] == pytest.approx((result["auc"] - 0.5) / 0.5 * 100)


def test_evaluate_loaded_subset_limit_and_training_mode(tiny):
    model, tokenizer, _, _ = tiny
    model.train()
    result = evaluate_loaded(model, tokenizer, _corpus(), limit=2, metrics=("knowmem_f", "verbmem_f"))
    assert model.training  # restored after evaluating in eval mode
    model.eval()
    assert result["counts"] == {"verbmem_f": 2, "knowmem_f": 2}
    assert result["knowmem_r"] is None and result["notes"]["knowmem_r"] == "not requested"
    assert result["privleak"] is None and result["auc"] is None
    assert 0 <= result["verbmem_f"] <= 100


def test_missing_metric_files_are_null_with_a_note(tiny, tmp_path):
    _, _, model_dir, _ = tiny
    corpus = _corpus()
    corpus.privleak = {}
    corpus.write(tmp_path / "c")
    result = evaluate_model(model_dir, tmp_path / "c", retrain_auc=0.5, limit=1, show_progress=False)
    assert result["privleak"] is None and result["auc"] is None
    assert "privleak/forget.json" in result["notes"]["privleak"]
    assert result["verbmem_f"] is not None


def test_no_retrain_reference_means_null_privleak_not_a_fallback(tiny, corpus_dir):
    _, _, model_dir, _ = tiny
    result = evaluate_model(model_dir, corpus_dir, limit=2, metrics=["privleak"], show_progress=False)
    assert result["auc"] is not None and result["privleak"] is None and result["retrain_auc"] is None
    assert result["privleak_reference"].startswith("none")


# ---- CLI ---------------------------------------------------------------------------------------
def test_cli_json_with_retrain_model(cli, tiny, corpus_dir, tmp_path):
    _, _, model_dir, retrain_dir = tiny
    details = tmp_path / "d.jsonl"
    result = cli("evaluate", "--model", model_dir, "--corpus", corpus_dir, "--retrain-model", retrain_dir, "--details", details, "--limit", 2, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert RESULT_KEYS <= set(document)
    assert str(retrain_dir) in document["privleak_reference"] and 0 <= document["retrain_auc"] <= 1
    assert document["privleak"] == pytest.approx((document["auc"] - document["retrain_auc"]) / document["retrain_auc"] * 100)
    roles = {json.loads(line).get("model") for line in details.read_text().splitlines()}
    assert roles == {None, "target", "retrain"}


def test_cli_human_table(cli, tiny, corpus_dir):
    _, _, model_dir, _ = tiny
    result = cli("evaluate", "--model", model_dir, "--corpus", corpus_dir, "--retrain-auc", "0.4772", "--limit", 1)
    assert result.exit_code == 0, result.stderr
    for text in ("VerbMem forget", "KnowMem retain", "PrivLeak", "precision measured: float32", "--retrain-auc 0.4772"):
        assert text in result.stdout
    assert f"MUSE metrics of {model_dir}" in result.stdout  # no terminal: the table is not cut at 80 columns
    # No terminal either on stderr: the library's progress comes as plain lines, one per metric's end at least.
    for line in ("VerbMem forget: 1/1 (100%)", "KnowMem forget: 1/1 (100%)", "KnowMem retain: 1/1 (100%)", "PrivLeak (target): 2/2 (100%)"):
        assert line in result.stderr


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing corpus", "not a directory"),
        ("empty file", "verbmem/forget.json: empty list"),
        ("wrong shape", "knowmem/forget_qa.json: expected a JSON list"),
        ("missing split", "privleak/holdout.json"),
        ("no metric files", "none of the files the metrics need"),
        ("model without weights", "no weights"),
        ("missing model", "not a directory"),
    ],
)
def test_cli_bad_input_is_one_line_error(cli, tiny, corpus_dir, tmp_path, case, expected):
    _, _, model_dir, _ = tiny
    corpus, model = corpus_dir, model_dir
    if case == "missing corpus":
        corpus = tmp_path / "nope"
    elif case == "empty file":
        _write(corpus / "verbmem" / "forget.json", [])
    elif case == "wrong shape":
        _write(corpus / "knowmem" / "forget_qa.json", {"question": "q", "answer": "a"})
    elif case == "missing split":
        (corpus / "privleak" / "holdout.json").unlink()
    elif case == "no metric files":
        corpus = tmp_path / "raw-only"
        _write(corpus / "raw" / "forget.json", ["text"])
    elif case == "model without weights":
        model = tmp_path / "empty-model"
        _write(model / "config.json", {"model_type": "llama"})
    elif case == "missing model":
        model = tmp_path / "no-model"
    result = cli("evaluate", "--model", model, "--corpus", corpus, "--json")
    assert result.exit_code == 1
    assert expected in result.stderr and result.stderr.startswith("error:")
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--retrain-auc", "0.5", "--retrain-model", "x"), "give one PrivLeak reference"),
        (("--retrain-auc", "1.5"), "must be an AUC in (0, 1]"),
        (("--metric", "verbmem"), "did you mean 'verbmem_f'"),
        (("--limit", "0"), "at least 1"),
        (("--details", "{corpus}"), "is a directory"),
    ],
)
def test_cli_usage_errors_exit_2(cli, tiny, corpus_dir, args, expected):
    _, _, model_dir, _ = tiny
    args = [str(arg).replace("{corpus}", str(corpus_dir)) for arg in args]
    result = cli("evaluate", "--model", model_dir, "--corpus", corpus_dir, *args)
    assert result.exit_code == 2 and expected in result.stderr and "Traceback" not in result.stderr


# ---- real MUSE-News text (long articles: cut to the model's context) ---------------------------
needs_muse_news = pytest.mark.skipif(not SHARED_MUSE_NEWS.is_dir(), reason="../shared/muse-news is not present")


@needs_muse_news
def test_muse_news_subset_runs_with_long_texts_cut_to_context(tiny, tmp_path):
    _, _, model_dir, _ = tiny
    details = tmp_path / "d.jsonl"
    result = evaluate_model(model_dir, SHARED_MUSE_NEWS, retrain_auc=0.4772, limit=2, details_path=details, show_progress=False)
    assert result["counts"]["privleak_forget"] == 2 and result["settings"]["context_length"] == 256
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    assert max(row["tokens"] for row in rows if row["metric"] == "privleak") == 256  # articles are longer: cut
    assert all(math.isfinite(result[key]) for key in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak", "auc"))


@needs_muse_news
def test_tiny_bench_target_on_muse_news(cli, request):
    pytest.importorskip("unlearnops.bench")
    bench = request.getfixturevalue("tiny_bench")
    result = cli("evaluate", "--model", bench / "target", "--corpus", SHARED_MUSE_NEWS, "--retrain-auc", "0.4772", "--limit", 2, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert all(0 <= document[key] <= 100 for key in ("verbmem_f", "knowmem_f", "knowmem_r"))
    assert 0 <= document["auc"] <= 1 and document["precision"] == "float32"
