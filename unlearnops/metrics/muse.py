"""MUSE's four metrics (Shi et al., 2024), computed by unlearnops.evaluate.muse as its reference code does."""

from __future__ import annotations

import functools

from ..evaluate import muse
from .spec import Bound, Metric, register

FORGET_READING = "lower = forgotten"

register(Metric(
    key="verbmem_f", label="VerbMem_f", name="VerbMem forget", description="VerbMem on the forget set",
    needs=("verbmem/forget",), compute=muse.verbmem_forget, better="lower", reading=FORGET_READING,
    bound=Bound("max_verbmem_f", "max", 30.0, "Upper bound on VerbMem of the forget set, quantized model."),
    quantization_gap=True, inherited=True, per_epoch=True, stop_setting="stop_verbmem",
))
register(Metric(
    key="knowmem_f", label="KnowMem_f", name="KnowMem forget", description="KnowMem on the forget QA",
    needs=("knowmem/forget_qa", "knowmem/forget_qa_icl"), compute=functools.partial(muse.knowmem, "forget", "knowmem_f"),
    better="lower", reading=FORGET_READING,
    bound=Bound("max_knowmem_f", "max", 45.0, "Upper bound on KnowMem of the forget QA, quantized model."),
    quantization_gap=True, inherited=True, per_epoch=True, stop_setting="stop_knowmem",
))
register(Metric(
    key="knowmem_r", label="KnowMem_r", name="KnowMem retain", description="KnowMem on the retain QA (utility)",
    needs=("knowmem/retain_qa", "knowmem/retain_qa_icl"), compute=functools.partial(muse.knowmem, "retain", "knowmem_r"),
    better="higher", reading="higher = kept: utility",
    bound=Bound(
        "min_utility_ratio", "min_ratio_to_source", 0.8,
        "KnowMem_r of the quantized model as a fraction of the source model's KnowMem_r.",
        high=1.0, check="utility_ratio", unmeasured="no retain QA (knowmem/retain_qa.json), utility not measured",
    ),
    per_epoch=True,
))
register(Metric(
    key="privleak", label="PrivLeak", name="PrivLeak", description="membership leak of the forget set against the holdout",
    needs=("privleak/forget", "privleak/holdout"), compute=muse.privleak_metric, better="zero",
    reading="0 ideal; < 0 still leaks, > 0 over-unlearned",
    bound=Bound(
        "max_abs_privleak", "abs_max", 50.0, "Upper bound on |PrivLeak| of the quantized model, both directions.", high=None,
        unmeasured="no retrain AUC, PrivLeak not computed",
        sides=("under-unlearning (the forget texts are still told apart from never-seen text: membership leaks)",
               "over-unlearning (the forget texts look less familiar than never-seen text: they stand out)"),
    ),
    quantization_gap=True, per_epoch=True, stop_setting="stop_privleak",
))
