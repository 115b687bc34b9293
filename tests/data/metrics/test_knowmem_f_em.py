import json

from unlearnops.evaluate import evaluate_model


def test_knowmem_f_em_counts_the_forget_answers_given_verbatim(tiny_bench, tmp_path):
    details = tmp_path / "details.jsonl"
    result = evaluate_model(tiny_bench / "target", tiny_bench / "corpus", metrics=["knowmem_f_em"], limit=8, details_path=details)
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    verbatim = [row["gold"].strip().casefold() in row["generated"].casefold() for row in rows]
    assert len(rows) == result["counts"]["knowmem_f_em"] == 8
    assert result["knowmem_f_em"] == 100 * sum(verbatim) / len(verbatim)
    assert result["knowmem_f_em"] >= 50  # the bench's target memorised its forget answers
