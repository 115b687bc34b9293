"""`unlearnops run`: one forget request through every stage, tracked, resumable, gated.

    validate -> source -> unlearn -> quantize -> evaluate (source, full precision, quantized,
    inherited requests) -> gate -> register

One MLflow parent run per request and one child run per stage (tracking.py). Every stage's
output is content-addressed under the workspace (stages.py), so rerunning a request resumes at
the first incomplete stage. `register` is last and idempotent (registry.register_version keys on
the gate stage's key), so a killed run never leaves a registered version behind, and a rerun
never registers twice. A workspace lock keeps two runs from interleaving.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import UnlearnopsError
from ..fileio import sha256_file, sha256_tree, write_json
from ..workspace import Workspace
from .config import PipelineConfig
from .data import RequestData, corpus_of
from .stages import StageResult, StageStore

LOCK_NAME = "run.lock"


@dataclass
class StageTiming:
    stage: str
    seconds: float
    cached: bool
    key: str | None = None


@dataclass
class RunSummary:
    request_id: str
    run_id: str
    passed: bool
    version: dict[str, Any] | None
    gate: dict[str, Any]
    metrics: dict[str, float]
    stages: list[StageTiming] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reports_dir: str | None = None  # gate.json, gate.md, gate.junit.xml, gate.png in the stage store

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def run_lock(workspace: Workspace, *, wait: bool = False) -> Iterator[None]:
    """One `run` per workspace at a time: stage directories and registration are not shared."""
    from filelock import FileLock, Timeout

    path = workspace.locks_dir / LOCK_NAME
    lock = FileLock(str(path), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        raise UnlearnopsError(
            f"{path}: another `unlearnops run` is using this workspace; wait for it to finish, pass --wait, "
            "or use another --workspace"
        ) from None
    try:
        yield
    finally:
        lock.release()


def run_request(
    request_path: Path | str,
    pipeline_yaml: Path | str | None = None,
    workspace: Workspace | None = None,
    *,
    wait: bool = False,
    show_progress: bool = True,
) -> RunSummary:
    """Run one forget request through the pipeline; the summary says whether a version was registered."""
    workspace = workspace or Workspace.resolve()
    config = PipelineConfig.load(pipeline_yaml)
    with run_lock(workspace, wait=wait):
        return _Run(Path(request_path), config, workspace, show_progress).execute()


class _Run:
    def __init__(self, request_path: Path, config: PipelineConfig, workspace: Workspace, show_progress: bool):
        from ..audit import AuditLog
        from ..audit.backends import storage_for
        from .tracking import Tracker

        self.request_path, self.config, self.workspace, self.show_progress = request_path, config, workspace, show_progress
        self.tracking_uri = registry.tracking_uri_for(workspace)
        self.store = StageStore(workspace.stages_dir)
        self.audit = AuditLog(storage_for(workspace))
        self.tracker = Tracker(self.tracking_uri, workspace.artifact_root)
        self.timings: list[StageTiming] = []

    # ---- the flow ----------------------------------------------------------------------------
    def execute(self) -> RunSummary:
        from .. import audit

        request, report = self._validate()
        self.run_id = self.tracker.start_parent(f"request {request.request_id}", self._parent_tags(request))
        self.tracker.child(
            "validate", params={"request_id": request.request_id, "request_sha256": self.request_sha},
            metrics={"checks": len(report.checks), "seconds": self.timings[-1].seconds}, tags={}, artifacts=[],
        )
        self.audit.append(audit.RUN_STARTED, run_id=self.run_id, request_id=request.request_id, pipeline=self.config.name)
        try:
            summary = self._stages(request, report)
        except BaseException:
            # Recording the failure must not replace its cause (a full disk fails these writes too).
            with contextlib.suppress(Exception):
                self.tracker.finish("FAILED")
            with contextlib.suppress(Exception):
                self.audit.append(audit.RUN_FINISHED, run_id=self.run_id, request_id=request.request_id, status="failed")
            raise
        self.tracker.finish("FINISHED")
        status = "registered" if summary.passed else "gate-failed"
        self.audit.append(audit.RUN_FINISHED, run_id=self.run_id, request_id=request.request_id, status=status)
        return summary

    def _stages(self, request, report) -> RunSummary:
        policy = report.policy  # the pipeline's gate tightened by the request's overrides
        data = corpus_of(report.data, self.workspace)
        source = self._source(request, data)
        source_dir = self._timed(self._download_source(source, request))
        self._log_request_digest(report, data, source)
        unlearned = self._timed(self._unlearn(source_dir, data))
        quantized = self._timed(self._quantize(unlearned, data))
        metrics = self._evaluate_all(source, source_dir, unlearned, quantized, data)
        gate = self._timed(self._gate(request, metrics, policy, quantized))
        report = gate.record["report"]
        if not report["passed"]:
            failures = [f"{c['name']}: {_check_message(c)}" for c in report["checks"] if c["status"] == "failed"]
            self._progress("register", "skipped: the gate failed, nothing registered")
            return self._summary(request, False, None, report, metrics, failures, gate)
        version = self._register(request, data, source, unlearned, quantized, gate, metrics)
        return self._summary(request, True, version.to_dict(), report, metrics, [], gate)

    # ---- stages --------------------------------------------------------------------------------
    def _validate(self):
        from .. import audit
        from ..request import validate_request

        self._build_benches()
        started = time.perf_counter()
        self.request_sha = sha256_file(self.request_path) if self.request_path.is_file() else None
        self._progress("validate", str(self.request_path))
        report = validate_request(
            self.request_path, workspace=self.workspace, base_policy=self.config.gate,
            min_privleak_texts=self.config.validate_.min_privleak_texts,
        )
        request = report.request
        if request is not None:
            self.audit.append(
                audit.REQUEST_RECEIVED, request_id=request.request_id, request_sha256=self.request_sha,
                deadline=request.deadline.isoformat(),  # `audit status` ages pending requests against it
            )
        if not report.ok:
            if request is not None:
                failed = sorted({check.field for check in report.failures})
                self.audit.append(audit.REQUEST_REJECTED, request_id=request.request_id, request_sha256=self.request_sha, fields=failed)
            report.raise_for_failures()
        self.audit.append(audit.REQUEST_VALIDATED, request_id=request.request_id, request_sha256=self.request_sha)
        self._record("validate", time.perf_counter() - started, cached=False)
        return request, report

    def _build_benches(self) -> None:
        """Build the benches a request names before validating it (minutes, once per workspace), as its own stage."""
        from ..bench import ensure_bench, is_complete
        from ..request import load_request

        try:
            request = load_request(self.request_path)
        except UnlearnopsError:
            return  # validation reports it, field by field
        sizes = {getattr(request, role).bench for role in ("forget", "retain", "holdout") if hasattr(getattr(request, role), "bench")}
        for size in sorted(size for size in sizes if not is_complete(self.workspace.bench_dir(size))):
            self._progress("bench", f"building the {size} bench in {self.workspace.bench_dir(size)} (once per workspace)")
            started = time.perf_counter()
            ensure_bench(self.workspace, size)
            self._record(f"bench:{size}", time.perf_counter() - started, cached=False)

    def _source(self, request, data: RequestData) -> registry.RegisteredVersion | None:
        """The registered version to unlearn from (registering the embedded bench target on first use)."""
        if not request.model.startswith("models:/"):
            return None
        try:
            return registry.resolve(request.model, tracking_uri=self.tracking_uri)
        except UnlearnopsError:
            name, _, _ = registry.parse_ref(request.model)
            if name != registry.SOURCE_MODEL_NAME:
                raise
        from ..bench import ensure_bench, recorded_metrics

        bench = data.bench or ensure_bench(self.workspace, self.config.bench.size)
        self._progress("source", f"registering the bench target {bench / 'target'} as {registry.SOURCE_MODEL_NAME}@production")
        target_metrics = recorded_metrics(bench, "target")
        registry.register_source_model(
            bench / "target",
            tracking_uri=self.tracking_uri,
            artifact_root=self.workspace.artifact_root,
            audit=self.audit,
            metrics={f"fp.{k}": v for k, v in target_metrics.items() if isinstance(v, (int, float))},
        )
        return registry.resolve(request.model, tracking_uri=self.tracking_uri)

    def _download_source(self, source, request) -> StageResult:
        """The source model's files in the stage store: downloaded (and hash-checked) or copied from a local dir."""
        if source is not None:
            config = {"ref": source.ref, "model_sha256": source.tags.get(registry.TAG_FP_SHA) or source.tags.get(registry.TAG_MODEL_SHA)}
            fetch = lambda tmp: source.download_full_precision(tmp / "download").rename(tmp / "model")  # noqa: E731
        else:
            import shutil

            from ..fileio import confined
            from ..modeling import check_model_dir

            local = confined(request.model, self.request_path.parent, what="model")
            check_model_dir(local)
            config = {"path": str(local), "model_sha256": sha256_tree(local)}
            fetch = lambda tmp: shutil.copytree(local, tmp / "model")  # noqa: E731
        self._progress("source", config.get("ref") or config["path"])
        return self.store.run("source", config, {}, lambda tmp: {"model_sha256": sha256_tree(_full_precision(fetch(tmp), config))})

    def _unlearn(self, source_dir: StageResult, data: RequestData) -> StageResult:
        from ..unlearn import unlearn

        unlearn_config = self.config.unlearn_config()

        def build(tmp: Path) -> dict:
            record = unlearn(source_dir.path / "model", data.corpus, tmp / "out", unlearn_config, show_progress=self.show_progress)
            return {"model_sha256": sha256_tree(tmp / "out" / "model"), "train": _brief(record)}

        self._progress("unlearn", f"{unlearn_config.method}+{unlearn_config.regularizer} ({unlearn_config.mode})")
        inputs = {"model": source_dir.record["model_sha256"], "corpus": data.corpus_sha256}
        return self.store.run("unlearn", unlearn_config.model_dump(), inputs, build)

    def _quantize(self, unlearned: StageResult, data: RequestData) -> StageResult:
        from ..quantize import quantize

        settings = self.config.quantize

        def build(tmp: Path) -> dict:
            record = quantize(
                unlearned.path / "out" / "model", settings.scheme, tmp / "out",
                group_size=settings.group_size, num_calibration_samples=settings.num_calibration_samples,
                corpus=data.corpus, show_progress=self.show_progress,
            )
            return {"model_sha256": sha256_tree(tmp / "out"), "quantize": _brief(record)}

        self._progress("quantize", settings.scheme)
        # The corpus is an input: calibrated schemes (GPTQ, AWQ) calibrate on its retain split.
        inputs = {"model": unlearned.record["model_sha256"], "corpus": data.corpus_sha256}
        return self.store.run("quantize", settings.model_dump(), inputs, build)

    def _evaluate(self, role: str, model_dir: Path, model_sha: str, corpus: Path, corpus_sha: str,
                  retrain_auc: float | None, metrics: tuple[str, ...] | None = None) -> dict[str, Any]:
        from ..evaluate import evaluate_model

        settings = {**self.config.evaluate.model_dump(), "retrain_auc": retrain_auc, "metrics": metrics}

        def build(tmp: Path) -> dict:
            result = evaluate_model(
                model_dir, corpus, retrain_auc=retrain_auc, limit=settings["limit"], batch_size=settings["batch_size"],
                metrics=metrics, show_progress=self.show_progress,
            )
            write_json(tmp / "metrics.json", result)
            return {"metrics": {k: result.get(k) for k in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak", "auc", "precision")}}

        self._progress("evaluate", role)
        result = self.store.run("evaluate", settings, {"model": model_sha, "corpus": corpus_sha}, build)
        self._record(f"evaluate:{role}", result.seconds, result.cached, result.key)
        self.tracker.child(
            f"evaluate:{role}", params={"key": result.key, "role": role, **settings}, metrics=_numbers(result.record),
            tags={"unlearnops.cached": str(result.cached).lower()}, artifacts=[result.path / "metrics.json"],
        )
        return result.record["metrics"]

    def _evaluate_all(self, source, source_dir, unlearned, quantized, data: RequestData) -> dict[str, Any]:
        args = (data.corpus, data.corpus_sha256, data.retrain_auc)
        metrics = {
            "source": self._evaluate("source", source_dir.path / "model", source_dir.record["model_sha256"], *args),
            "full_precision": self._evaluate("full precision", unlearned.path / "out" / "model", unlearned.record["model_sha256"], *args),
            "quantized": self._evaluate("quantized", quantized.path / "out", quantized.record["model_sha256"], *args),
        }
        metrics["inherited"] = self._inherited(source, quantized, data, metrics["quantized"])
        return metrics

    def _inherited(self, source, quantized: StageResult, data: RequestData, current: dict) -> list[dict]:
        """Re-check the forget set of every request the source version already satisfies."""
        from ..gate import InheritedRequest

        inherited = []
        for request_id, corpus, problem in (source.forget_sets() if source is not None else []):
            if problem:
                inherited.append(asdict(InheritedRequest(request_id, None, problem)))
                continue
            corpus_sha = source.request_records()[request_id]["corpus_sha256"]
            if corpus_sha == data.corpus_sha256:
                found = current  # the same forget set as this request: already measured
            else:
                found = self._evaluate(
                    f"inherited {request_id}", quantized.path / "out", quantized.record["model_sha256"],
                    corpus, corpus_sha, None, ("verbmem_f", "knowmem_f"),
                )
            inherited.append(asdict(InheritedRequest(request_id, found)))
        return inherited

    def _gate(self, request, metrics: dict[str, Any], policy, quantized: StageResult) -> StageResult:
        from .. import audit
        from ..gate import InheritedRequest, evaluate_gate, write_reports

        def build(tmp: Path) -> dict:
            report = evaluate_gate(
                metrics["quantized"], full_precision=metrics["full_precision"], source=metrics["source"], policy=policy,
                inherited=[InheritedRequest(**item) for item in metrics["inherited"]],
            )
            write_reports(report, tmp / "out")
            return {"report": report.to_dict()}

        inputs = {"quantized": quantized.record["model_sha256"], "metrics": _digest(metrics), "request": self.request_sha}
        result = self.store.run("gate", policy.model_dump(), inputs, build)
        report = result.record["report"]
        self.audit.append(
            audit.GATE_DECIDED, run_id=self.run_id, request_id=request.request_id, passed=report["passed"],
            gate_report_sha256=sha256_file(result.path / "out" / "gate.json"),
        )
        self._progress("gate", "passed" if report["passed"] else "FAILED")
        self.tracker.log(self.run_id, artifacts=[result.path / "out"], artifact_path="gate")
        return result

    def _register(self, request, data: RequestData, source, unlearned: StageResult, quantized: StageResult, gate: StageResult,
                  metrics) -> registry.RegisteredVersion:
        started = time.perf_counter()
        name = request.registered_model_name or self.config.registration.name or (source.name if source else "unlearnops-model")
        existing = registry.find_by_run_key(name, gate.key, tracking_uri=self.tracking_uri)
        run_id = existing.source.split("/")[1] if existing and existing.source.startswith("runs:/") else self.run_id
        if existing is None:
            self.tracker.log(self.run_id, artifacts=[quantized.path / "out"], artifact_path=registry.MODEL_ARTIFACT)
            self.tracker.log(self.run_id, artifacts=[unlearned.path / "out" / "model"], artifact_path=registry.FULL_PRECISION_ARTIFACT)
        tags = self._version_tags(request, data, source, quantized, metrics)
        tags[registry.TAG_FP_SHA] = unlearned.record["model_sha256"]
        version = registry.register_version(
            name=name, run_id=run_id, tags=tags, run_key=gate.key, tracking_uri=self.tracking_uri, audit=self.audit,
            alias=self.config.registration.alias,
        )
        self._progress("register", f"{version.ref} @{self.config.registration.alias}")
        self._record("register", time.perf_counter() - started, cached=existing is not None)
        self.tracker.child(
            "register", params={"name": name, "version": version.version, "run_key": gate.key},
            metrics={"seconds": self.timings[-1].seconds}, tags={"unlearnops.cached": str(existing is not None).lower()}, artifacts=[],
        )
        return version

    def _version_tags(self, request, data: RequestData, source, quantized: StageResult, metrics) -> dict[str, str]:
        lineage = source.request_ids if source is not None else []
        request_ids = list(dict.fromkeys([*lineage, request.request_id]))
        records = source.request_records() if source is not None else {}
        records[request.request_id] = {"forget_corpus": str(data.corpus), "corpus_sha256": data.corpus_sha256}
        unlearn_config = self.config.unlearn_config()
        tags = {
            registry.TAG_REQUEST_IDS: json.dumps(request_ids),
            registry.TAG_SOURCE_VERSION: f"{source.name}/{source.version}" if source else str(request.model),
            registry.TAG_GATE: "passed",
            registry.TAG_MODEL_SHA: quantized.record["model_sha256"],
            registry.TAG_ROLE: "unlearned",
            registry.TAG_QUANT_SCHEME: self.config.quantize.scheme,
            registry.TAG_METHOD: f"{unlearn_config.method}+{unlearn_config.regularizer}/{unlearn_config.mode}",
            "unlearnops.settings": json.dumps(unlearn_config.model_dump(), sort_keys=True)[:4000],
            "unlearnops.pipeline": self.config.name,
            "unlearnops.run_id": self.run_id,
            **{registry.request_tag(rid): json.dumps(record, sort_keys=True) for rid, record in records.items()},
        }
        for role, prefix in (("quantized", "q"), ("full_precision", "fp")):
            for key in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"):
                if isinstance(value := metrics[role].get(key), (int, float)):
                    tags[f"{registry.TAG_METRIC_PREFIX}{prefix}.{key}"] = f"{value:.4f}"
        return tags

    # ---- tracking and output ---------------------------------------------------------------------
    def _parent_tags(self, request) -> dict[str, str]:
        return {"unlearnops.request_id": request.request_id, "unlearnops.pipeline": self.config.name,
                "unlearnops.request_sha256": self.request_sha or ""}

    def _log_request_digest(self, report, data: RequestData, source) -> None:
        """Ids and hashes only (request.request_digest): the forget texts never enter the tracking store."""
        from ..request import request_digest

        digest = {**request_digest(report), "corpus_sha256": data.corpus_sha256, "source_version": source.ref if source else None}
        path = self.workspace.stages_dir / "requests" / f"{report.request.request_id}.json"
        write_json(path, digest)
        params = {
            "pipeline": self.config.model_dump(by_alias=True),
            "tracking_uri": registry.redact(self.tracking_uri),
            "request_id": report.request.request_id,
        }
        self.tracker.log(self.run_id, params=params, artifacts=[path], artifact_path="requests")

    def _timed(self, result: StageResult) -> StageResult:
        self._record(result.stage, result.seconds, result.cached, result.key)
        manifests = [path for name in ("train.json", "quantize.json") if (path := result.path / "out" / name).is_file()]
        artifacts = [result.path / "stage.json", *manifests]
        if manifests:  # the parent run carries the manifests too: one place to read a request's evidence
            self.tracker.log(self.run_id, artifacts=manifests, artifact_path="manifests")
        params = {"key": result.key, **_flat_config(result.record.get("config"))}
        self.tracker.child(
            result.stage, params=params, metrics=_numbers(result.record), tags={"unlearnops.cached": str(result.cached).lower()},
            artifacts=artifacts,
        )
        return result

    def _record(self, stage: str, seconds: float, cached: bool, key: str | None = None) -> None:
        self.timings.append(StageTiming(stage, round(seconds, 2), cached, key))
        if self.show_progress:
            from ..cli.output import err_console

            err_console.print(f"  {stage:<28} {'cached' if cached else f'{seconds:7.1f} s'}", highlight=False)

    def _progress(self, stage: str, message: str) -> None:
        if self.show_progress:
            from ..cli.output import err_console

            err_console.print(f"[bold]{stage}[/]: {message}", highlight=False)

    def _summary(self, request, passed: bool, version, report: dict, metrics: dict, failures: list[str], gate: StageResult) -> RunSummary:
        flat = {}
        for role, prefix in (("source", "source"), ("full_precision", "fp"), ("quantized", "q")):
            for key, value in (metrics[role] or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    flat[f"{prefix}.{key}"] = float(value)
        for item in metrics["inherited"]:
            for key, value in (item["metrics"] or {}).items():
                if key in ("verbmem_f", "knowmem_f") and isinstance(value, (int, float)):
                    flat[f"inherited.{item['request_id']}.{key}"] = float(value)
        self.tracker.log(self.run_id, metrics={**flat, "gate.passed": float(passed)})
        self.tracker.client.set_tag(self.run_id, "unlearnops.gate", "passed" if passed else "failed")
        return RunSummary(request.request_id, self.run_id, passed, version, report, flat, self.timings, failures, str(gate.path / "out"))


def _full_precision(model_dir: Path, config: dict) -> Path:
    """Unlearning trains the weights: a 4-bit checkpoint cannot be the starting point."""
    from ..modeling import is_quantized, read_config

    if is_quantized(read_config(model_dir)):
        raise UnlearnopsError(
            f"model {config.get('ref') or config.get('path')}: is quantized and has no full-precision weights to unlearn from; "
            "name a full-precision model or a version registered by `unlearnops run` (it keeps its fp_model/ artifact)"
        )
    return model_dir


def _check_message(check: dict) -> str:
    if check["measured"] is None:
        return f"not measured ({check['detail']})"
    relation = ">" if check["direction"] == "max" else "<"
    return f"measured {check['measured']:.4g} {relation} {check['direction']} {check['threshold']:.4g}"


def _digest(value: Any) -> str:
    from ..fileio import canonical_json, sha256_bytes

    return sha256_bytes(canonical_json(value))


def _brief(record: dict) -> dict:
    """The scalar part of a stage's manifest (its full file is logged as an artifact)."""
    return {k: v for k, v in (record or {}).items() if isinstance(v, (str, int, float, bool)) or v is None}


def _flat_config(config: Any) -> dict[str, Any]:
    return config if isinstance(config, dict) else {}


def _numbers(record: dict) -> dict[str, float]:
    numbers = {"seconds": record.get("seconds", 0.0)}
    for section in ("train", "quantize", "metrics"):
        for key, value in (record.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numbers[f"{section}.{key}"] = value
    return numbers
