"""MLflow runs for the pipeline: one parent run per request, one child run per stage.

Uses MlflowClient with an explicit tracking URI (no process-global mlflow state), so a library
caller's own MLflow setup is left alone. Under `mlflow run` (MLflow Projects), the run the
project created (MLFLOW_RUN_ID) becomes the parent when it lives in the same tracking store.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .. import registry

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_CHARS = 6000


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """{"unlearn": {"lr": 1e-3}} -> {"unlearn.lr": "0.001"}: MLflow params are flat strings."""
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return flat
    text = value if isinstance(value, str) else json.dumps(value)
    return {prefix: text[:MAX_PARAM_CHARS]}


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: Path | None):
        from mlflow.entities import Metric, Param

        self._metric, self._param = Metric, Param
        self.client = registry.client(tracking_uri)
        self.experiment_id = registry.ensure_experiment(tracking_uri, artifact_root)
        self.parent_id: str | None = None

    def start_parent(self, name: str, tags: dict[str, str]) -> str:
        adopted = self._project_run()
        if adopted:
            for key, value in tags.items():
                self.client.set_tag(adopted, key, value)
            self.parent_id = adopted
        else:
            self.parent_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        return self.parent_id

    def _project_run(self) -> str | None:
        run_id = os.environ.get("MLFLOW_RUN_ID")
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception:  # the project run lives in another tracking store: keep ours separate
            return None
        if run.info.status != "RUNNING":
            return None
        self.experiment_id = run.info.experiment_id  # children nest under the parent in its experiment
        return run_id

    def child(self, stage: str, *, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str], artifacts: list[Path]) -> str:
        run_id = self.client.create_run(self.experiment_id, run_name=stage, tags={PARENT_TAG: self.parent_id, **tags}).info.run_id
        self.log(run_id, params=params, metrics=metrics, artifacts=artifacts)
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def log(self, run_id: str, *, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
            artifacts: list[Path] = (), artifact_path: str | None = None) -> None:
        flat = flatten("", params or {})
        if flat:
            self.client.log_batch(run_id, params=[self._param(key, value) for key, value in flat.items()])
        numbers = {key: float(value) for key, value in (metrics or {}).items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
        if numbers:
            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[self._metric(key, value, now, 0) for key, value in numbers.items()])
        for path in artifacts:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path or path.name)
            elif path.is_file():
                self.client.log_artifact(run_id, str(path), artifact_path)

    def finish(self, status: str) -> None:
        if self.parent_id and not os.environ.get("MLFLOW_RUN_ID") == self.parent_id:
            self.client.set_terminated(self.parent_id, status)
