"""MUSE evaluation (VerbMem, KnowMem, PrivLeak) of a model directory or an in-memory model.

    evaluate_model(model_dir, corpus_dir, ...) -> dict   loads the model with modeling.load_causal_lm
    evaluate_loaded(model, tokenizer, corpus, ...) -> dict   e.g. each epoch of unlearning

Layout: generation.py (batched greedy generation), muse.py (MUSE's scoring; the metrics are
registered in unlearnops/metrics/), evaluator.py (which metrics a corpus allows, the result
document, the details file).
"""

from ..metrics import METRICS
from .evaluator import evaluate_loaded, evaluate_model

__all__ = ["METRICS", "evaluate_loaded", "evaluate_model"]
