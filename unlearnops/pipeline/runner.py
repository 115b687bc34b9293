"""The stage runner: the one place that times a stage, reuses or builds its output, prints its
progress and records it as an MLflow child run.

A stage says what it is built from and how (`Stage`); the runner does the rest:

    result = runner.run(Stage("unlearn", config, inputs, build, announce="ga+gdr (lora)"))

prints `unlearn: ga+gdr (lora)`, returns the complete output from the stage store (cached, or
built in a temporary directory and renamed into place), records a `StageTiming`, prints
`  unlearn   12.3 s` (or `cached`) and logs a child run `unlearn` under the parent run (params:
the key and the settings; metrics: seconds and the numbers of the stage's record; tag
`unlearnops.cached`; artifacts: stage.json and the stage's manifests).

Work that is not kept in the store (validation, the bench build, registration) runs inside
`with runner.step(name) as step:`, which times it and records the same child run. Steps that end
before the parent run exists (validation names the request the parent is for) are logged when
`open_parent` starts it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import progress
from .stages import RECORD, StageResult, StageStore
from .tracking import Tracker

CACHED_TAG = "unlearnops.cached"
MANIFESTS = "manifests"  # the parent run's artifact folder for every stage's manifest


@dataclass
class StageTiming:
    stage: str
    seconds: float
    cached: bool
    key: str | None = None


@dataclass
class Stage:
    """One content-addressed stage: its store directory is `<stages>/<name>/<key of config + inputs>`."""

    name: str  # the stage store's folder: source, unlearn, quantize, evaluate, gate
    config: Any  # the settings: part of the key, and the child run's params
    inputs: dict[str, str]  # hashes of what it reads: the rest of the key
    build: Callable[[Path], dict[str, Any]]  # writes into a temporary dir; returns the record's fields
    label: str | None = None  # the timing's and child run's name when several share a folder ("evaluate:quantized")
    announce: str | None = None  # the progress line printed before it runs: "<name>: <announce>"
    params: dict[str, Any] = field(default_factory=dict)  # child-run params besides the key and the settings
    artifacts: tuple[str, ...] = (RECORD,)  # files of the output logged on the child run
    manifests: tuple[str, ...] = ()  # files of the output logged on the child run and on the parent (manifests/)

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class Step:
    """What a `runner.step` block reports about itself, for its timing and child run."""

    name: str
    cached: bool = False
    key: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class StageRunner:
    def __init__(self, store: StageStore, tracker: Tracker, *, show_progress: bool):
        self.store, self.tracker, self.show_progress = store, tracker, show_progress
        self.timings: list[StageTiming] = []
        self._unlogged: list[Step] = []  # steps finished before the parent run existed

    # ---- runs ------------------------------------------------------------------------------------
    def open_parent(self, name: str, tags: dict[str, str]) -> str:
        """Start (or adopt) the parent run, and log the child runs of the steps that ended before it."""
        run_id = self.tracker.start_parent(name, tags)
        for step in self._unlogged:
            self._log_step(step)
        self._unlogged.clear()
        return run_id

    @property
    def parent_id(self) -> str | None:
        return self.tracker.parent_id

    def run(self, stage: Stage) -> StageResult:
        """The stage's complete output (reused or built), timed, printed and logged."""
        if stage.announce is not None:
            self.announce(stage.name, stage.announce)
        result = self.store.run(stage.name, stage.config, stage.inputs, stage.build)
        self._time(stage.title, result.seconds, result.cached, result.key)
        manifests = [path for name in stage.manifests if (path := result.path / name).is_file()]
        if manifests:  # the parent run carries the manifests too: one place to read a request's evidence
            self.tracker.log(self.parent_id, artifacts=manifests, artifact_path=MANIFESTS)
        config = result.record.get("config")
        self.tracker.child(
            stage.title,
            params={"key": result.key, **(config if isinstance(config, dict) else {}), **stage.params},
            metrics=record_numbers(result.record),
            tags={CACHED_TAG: _flag(result.cached)},
            artifacts=[result.path / name for name in stage.artifacts] + manifests,
        )
        return result

    @contextlib.contextmanager
    def step(self, name: str, *, announce: str | None = None) -> Iterator[Step]:
        """Time uncached work; on success record its timing and child run (nothing if it raises)."""
        if announce is not None:
            self.announce(name, announce)
        step = Step(name)
        started = time.perf_counter()
        yield step
        seconds = self._time(name, time.perf_counter() - started, step.cached, step.key)
        step.metrics = {**step.metrics, "seconds": seconds}
        if self.parent_id is None:
            self._unlogged.append(step)
        else:
            self._log_step(step)

    def _log_step(self, step: Step) -> None:
        self.tracker.child(step.name, params=step.params, metrics=step.metrics, tags={CACHED_TAG: _flag(step.cached)}, artifacts=[])

    # ---- printing --------------------------------------------------------------------------------
    def announce(self, stage: str, message: str) -> None:
        """`stage: message`, before the work starts."""
        progress.note(message, label=stage, enabled=self.show_progress)

    def _time(self, stage: str, seconds: float, cached: bool, key: str | None) -> float:
        seconds = round(seconds, 2)
        self.timings.append(StageTiming(stage, seconds, cached, key))
        progress.note(f"  {stage:<28} {'cached' if cached else f'{seconds:7.1f} s'}", enabled=self.show_progress)
        return seconds


def record_numbers(record: dict) -> dict[str, float]:
    """A stage record's numbers as MLflow metrics: seconds, and train.* / quantize.* / metrics.*."""
    numbers = {"seconds": record.get("seconds", 0.0)}
    for section in ("train", "quantize", "metrics"):
        for key, value in (record.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numbers[f"{section}.{key}"] = value
    return numbers


def _flag(value: bool) -> str:
    return str(value).lower()
