"""`unlearnops run`: one forget request through every stage, tracked, resumable, gated.

    validate -> source -> unlearn -> quantize -> evaluate (source, full precision, quantized,
    inherited requests) -> gate -> register

Layout, one job per module:

    flow.py        the order of the stages; the parent run and run.started / run.finished records
    runner.py      StageRunner: times, caches, prints and logs (MLflow child run) every stage
    stages.py      StageStore: content-addressed stage outputs, built atomically, resumable
    tracking.py    Tracker: the MLflow parent run and its child runs (explicit tracking URI)
    context.py     RunContext: what every stage reads (request, settings, workspace, stores)
    validation.py  bench build, request validation, request.* audit records
    steps.py       source, unlearn, quantize
    evaluation.py  MUSE metrics per model, and the re-check of inherited requests
    release.py     the gate and registration (idempotent on the gate stage's key)
    summary.py     RunSummary and what the parent run keeps
    config.py      the pipeline YAML;  data.py  the corpus a request's stages read
    lock.py        one run per workspace

Rerunning a request resumes at the first incomplete stage; a killed run never leaves a
registered version behind, and a rerun never registers twice.
"""

from .flow import run_request
from .lock import run_lock
from .runner import Stage, StageRunner, StageTiming
from .summary import RunSummary

__all__ = ["RunSummary", "Stage", "StageRunner", "StageTiming", "run_lock", "run_request"]
