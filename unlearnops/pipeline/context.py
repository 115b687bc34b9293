"""What every stage of one `run` reads: the request file, the pipeline settings, the workspace and
the stores it writes to (stage outputs, MLflow, the audit log), and the stage runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import registry
from ..audit import AuditLog
from ..workspace import Workspace
from .config import PipelineConfig
from .runner import StageRunner
from .stages import StageStore
from .tracking import Tracker


@dataclass
class RunContext:
    request_path: Path
    config: PipelineConfig
    workspace: Workspace
    tracking_uri: str
    audit: AuditLog
    tracker: Tracker
    runner: StageRunner
    request_sha: str | None = field(default=None)  # of the request file as read, once validation has read it

    @classmethod
    def open(cls, request_path: Path, config: PipelineConfig, workspace: Workspace, *, show_progress: bool) -> "RunContext":
        tracking_uri = registry.tracking_uri_for(workspace)
        tracker = Tracker(tracking_uri, workspace.artifact_root)
        runner = StageRunner(StageStore(workspace.stages_dir), tracker, show_progress=show_progress)
        return cls(request_path, config, workspace, tracking_uri, AuditLog(workspace.audit_log), tracker, runner)

    @property
    def run_id(self) -> str | None:
        """The parent MLflow run (None until validation passed and `open_parent` started it)."""
        return self.tracker.parent_id
