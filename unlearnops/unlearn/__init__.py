"""Unlearning: GA / NPO forget losses x none / GDR / KLR retain losses, with LoRA or full FT.

`unlearn(model_dir, corpus_dir, out, config)` writes OUT/adapter (LoRA), OUT/model (merged full
precision) and OUT/train.json. `UnlearnConfig` holds every setting. Importing the package does
not import torch; `unlearn` loads the trainer on first use.
"""

from .config import UnlearnConfig, config_from

__all__ = ["UnlearnConfig", "config_from", "unlearn"]


def __getattr__(name: str):
    if name == "unlearn":
        from .trainer import unlearn

        return unlearn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
