"""validate_request: schema, then model and policy checks, then the data suite and what the stages need; one report.

A request that validates must not fail on its data minutes into `run`: the model reference is
resolved in the registry the pipeline will use, and the corpus the unlearn and evaluate stages
will read is checked with the evaluate stage's own `plan` (one reader shared by both).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import UnlearnopsError
from ..fileio import confined
from ..modeling import check_model_dir
from ..policy import Policy
from ..workspace import Workspace
from .checks import MIN_PRIVLEAK_TEXTS, run_data_checks
from .loading import ResolvedData, parse_request, read_request_document, request_dir, resolve_data
from .report import Check, ValidationReport
from .schema import ForgetRequest


def validate_request(
    path: Path | str,
    *,
    workspace: Workspace | Path | str | None = None,
    base_policy: Policy | None = None,
    min_privleak_texts: int = MIN_PRIVLEAK_TEXTS,
) -> ValidationReport:
    """Check a forget request and the data it names; never raises for bad input.

    `workspace` is only used (and resolved) when a source is the embedded bench. `base_policy`
    holds the configured gate thresholds the request's overrides may only tighten.
    """
    started = time.perf_counter()
    path = Path(path)
    report = ValidationReport(path=path, checks=[])
    try:
        document = read_request_document(path)
    except UnlearnopsError as err:
        report.checks.append(Check("readable", "request", False, str(err)))
        return _finish(report, started)
    request, problems = parse_request(document)
    if request is None:
        report.checks.extend(Check("schema", field, False, message) for field, message in problems)
        return _finish(report, started)
    report.request = request
    report.checks.append(Check("schema", "request", True, "matches the ForgetRequest schema"))
    base = request_dir(path)
    report.checks.append(_model_check(request, base, workspace))
    report.policy, policy_checks = _policy_checks(request, base_policy or Policy())
    report.checks.extend(policy_checks)
    resolution = resolve_data(request, base, workspace)
    report.loaded = resolution.loaded
    report.checks.extend(Check("readable", origin.field, True, "valid UTF-8 JSON of the expected shape") for origin in resolution.loaded)
    report.checks.extend(Check("readable", field, False, message) for field, message in resolution.failures)
    if resolution.data is not None:
        report.data = resolution.data
        report.checks.extend(run_data_checks(resolution.data, min_privleak_texts=min_privleak_texts))
        report.checks.extend(_stage_checks(resolution.data))
    return _finish(report, started)


def _finish(report: ValidationReport, started: float) -> ValidationReport:
    report.seconds = time.perf_counter() - started
    return report


def _model_check(request: ForgetRequest, base: Path, workspace: Workspace | Path | str | None) -> Check:
    if request.is_registry_model:
        return _registry_check(request.model, workspace)
    try:
        check_model_dir(confined(request.model, base, what="model"))
    except UnlearnopsError as err:
        return Check("model", "model", False, str(err))
    return Check("model", "model", True, "local model directory with safetensors weights")


def _registry_check(ref: str, workspace: Workspace | Path | str | None) -> Check:
    """The reference resolves in the registry `run` will use (the bench model is registered on first use)."""
    from .. import registry

    name, _, alias = registry.parse_ref(ref)
    if name == registry.SOURCE_MODEL_NAME and alias == registry.PRODUCTION:
        return Check("model", "model", True, "the embedded bench model; `run` registers it from the bench on first use")
    resolved = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    if not os.environ.get("MLFLOW_TRACKING_URI") and not resolved.tracking_db.exists():
        return Check("model", "model", False, (
            f"{ref}: the workspace {resolved.root} has no model registry yet (and $MLFLOW_TRACKING_URI is not set); "
            "register the model first (`unlearnops register`), point --workspace or $MLFLOW_TRACKING_URI at its registry, "
            "or name a local model directory"))
    try:
        version = registry.resolve(ref, tracking_uri=registry.tracking_uri_for(resolved))
    except UnlearnopsError as err:
        return Check("model", "model", False, str(err))
    return Check("model", "model", True, f"resolves to {version.ref} in the registry")


def _stage_checks(data: ResolvedData) -> list[Check]:
    """What the stages need beyond the data checks: few-shot examples, then the evaluate stage's own plan."""
    problems = data.few_shot_problems()
    if problems:
        return [Check("few_shot", field, False, message) for field, message in problems]
    from ..evaluate.evaluator import plan
    from ..metrics import METRICS

    try:
        runnable, notes = plan(data.stage_corpus(), list(METRICS))
    except UnlearnopsError as err:
        return [Check("stage_inputs", "request", False, f"the evaluate stage would fail: {err}")]
    skipped = f"; not computed: {', '.join(notes)} (no files for them)" if notes else ""
    return [Check("stage_inputs", "request", True, f"the evaluate stage can compute {', '.join(runnable)}{skipped}")]


def _policy_checks(request: ForgetRequest, base_policy: Policy) -> tuple[Policy | None, list[Check]]:
    """One check per override: known, tighter than the configured threshold, and within range."""
    checks = []
    for name, value in request.policy_overrides.items():
        field = f"policy_overrides.{name}"
        try:
            Policy.model_validate(base_policy.tightened({name: value}).model_dump())
        except UnlearnopsError as err:
            checks.append(Check("policy_override", field, False, str(err).removeprefix(f"{field}: ")))
            continue
        except ValueError as err:  # pydantic's range check (e.g. a ratio above 1)
            checks.append(Check("policy_override", field, False, f"{value} is out of range ({_first_error(err)}); use a value in range"))
            continue
        checks.append(Check("policy_override", field, True, f"tightens {getattr(base_policy, name)} to {value}"))
    if any(not check.passed for check in checks):
        return None, checks
    return base_policy.tightened(request.policy_overrides), checks


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    return errors()[0]["msg"] if callable(errors) else str(err)
