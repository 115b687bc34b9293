"""The embedded bench: a synthetic MUSE-layout corpus and the tiny target/retrain models trained on it."""

from .build import MANIFEST, SIZES, build_bench, ensure_bench, is_complete, privleak_reference, recorded_metrics

__all__ = ["MANIFEST", "SIZES", "build_bench", "ensure_bench", "is_complete", "privleak_reference", "recorded_metrics"]
