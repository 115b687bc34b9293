"""The embedded bench: a synthetic MUSE-layout corpus and the tiny target/retrain models trained on it."""

from .build import SIZES, build_bench, ensure_bench, is_complete

__all__ = ["SIZES", "build_bench", "ensure_bench", "is_complete"]
