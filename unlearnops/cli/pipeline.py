"""CLI area: run / gate: the tracked pipeline and the release gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UnlearnopsError, UsageError, error_document
from .options import JsonOpt, WorkspaceOpt
from .output import emit, err_console, out_console, table

PipelineOpt = Annotated[
    Path | None,
    typer.Option("--pipeline", help="Pipeline YAML: stage settings and gate policy (default: pipelines/default.yaml if present, else the built-in defaults)."),
]


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("gate")(gate)


def run(
    request: Annotated[Path, typer.Option("--request", help="The forget request (JSON; see `unlearnops request schema`).")],
    pipeline: PipelineOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for another run holding the workspace lock instead of failing.")] = False,
    supersede: Annotated[bool, typer.Option("--supersede", help="Accept a request whose request_id was received before with other content, recording that it replaces the earlier one (refused otherwise).")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Run a forget request end to end: validate, unlearn, quantize, evaluate, gate, register.

    One MLflow parent run per request, one child run per stage. Stage outputs are cached in the workspace by content, so rerunning the same request resumes where it stopped.

    A version is registered (alias @candidate) only if the gate passes; exit 1 if it fails.
    """
    from ..pipeline import run_request
    from ..workspace import Workspace

    summary = run_request(request, pipeline, Workspace.resolve(workspace), wait=wait, show_progress=not as_json, supersede=supersede)
    commands = next_commands(summary)
    document = {**summary.to_dict(), "next_commands": commands}
    if not summary.passed:  # --json readers find why under the error object's keys (errors.error_document)
        document = error_document(f"gate failed: nothing registered ({'; '.join(summary.failures)})", field="gate", **document)
    emit(document, as_json, lambda: _render_summary(summary, commands))
    if not summary.passed:
        err_console.print(f"[bold red]gate failed[/]: nothing registered ({'; '.join(summary.failures)})", highlight=False)
        return 1
    return 0


def _render_summary(summary, commands: list[str]) -> None:
    out_console.print(table("stages", ["stage", "seconds", "cached"], [(t.stage, t.seconds, "yes" if t.cached else "") for t in summary.stages]))
    _print_gate(summary.gate)
    if summary.version:
        aliases = ", ".join(summary.version["aliases"])
        out_console.print(
            f"registered models:/{summary.version['name']}/{summary.version['version']} (@{aliases}) for requests "
            f"{', '.join(summary.version['request_ids'])}",
            highlight=False,
        )
    out_console.print(f"workspace: {summary.workspace} (stage outputs, MLflow store, audit log)", highlight=False, soft_wrap=True)
    out_console.print(f"gate reports: {summary.reports_dir} (gate.md explains every check)", highlight=False, soft_wrap=True)
    if commands:
        out_console.print("next:", highlight=False)
        for command in commands:
            out_console.print(f"  {command}", highlight=False, soft_wrap=True)


def next_commands(summary) -> list[str]:
    """The exact commands that take a registered version to a served one, in this workspace."""
    import shlex

    from ..registry import PRODUCTION

    version = summary.version
    if not version:
        return []
    workspace = f"--workspace {shlex.quote(summary.workspace)}"
    commands = []
    if PRODUCTION not in version["aliases"]:
        commands.append(f"unlearnops promote {shlex.quote(version['name'])} {version['version']} {workspace}")
    commands.append(f"unlearnops serve --model {shlex.quote(version['name'] + '@' + PRODUCTION)} {workspace}")
    return commands


def _print_gate(report: dict[str, Any]) -> None:
    """The checks (signed values, 'not measured' where missing), PrivLeak's reference, and the verdict
    line naming every check that was skipped or failed for want of a measurement."""
    from ..gate import check_from_dict

    rows = []
    for document in report["checks"]:
        check = check_from_dict(document)
        result = check.status.upper() if check.status == "failed" else check.status
        if check.side and check.status == "failed":
            result += f" ({check.side})"
        rows.append((check.name, check.measured_text, check.bound_text, result))
    out_console.print(table("release gate (quantized model)", ["check", "measured", "threshold", "result"], rows))
    if reference := report.get("privleak_reference"):
        out_console.print(f"PrivLeak reference: {reference['message']}", highlight=False, soft_wrap=True)
    out_console.print(f"gate: {report.get('verdict') or report['decision']}", highlight=False, soft_wrap=True)


def gate(
    model: Annotated[Path | None, typer.Option("--model", help="The QUANTIZED model directory to gate (evaluated on --corpus).")] = None,
    corpus: Annotated[Path | None, typer.Option("--corpus", help="A corpus in MUSE's layout; needed when a model directory is given.")] = None,
    policy: Annotated[Path, typer.Option("--policy", help="Policy YAML: a bare threshold mapping or a pipeline YAML's gate: section.")] = ...,
    metrics: Annotated[Path | None, typer.Option("--metrics", help="The quantized model's metrics (`unlearnops evaluate --json` output) instead of --model.")] = None,
    source_metrics: Annotated[Path | None, typer.Option("--source-metrics", help="Metrics of the model before unlearning (for the utility ratio).")] = None,
    source_model: Annotated[Path | None, typer.Option("--source-model", help="Model before unlearning; evaluated on --corpus.")] = None,
    fp_metrics: Annotated[Path | None, typer.Option("--fp-metrics", help="Metrics of the full-precision unlearned model (for the quantization gap).")] = None,
    fp_model: Annotated[Path | None, typer.Option("--fp-model", help="Full-precision unlearned model; evaluated on --corpus.")] = None,
    retrain_auc: Annotated[float | None, typer.Option("--retrain-auc", help="PrivLeak reference AUC for evaluated models (default: the bench.json beside --corpus).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Items per metric when evaluating models here.")] = None,
    lineage: Annotated[str | None, typer.Option("--lineage", help="A registered version (NAME@alias, NAME/VERSION) whose requests --model must still satisfy: each one's forget set is re-checked.")] = None,
    workspace: WorkspaceOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write gate.json, gate.md, gate.junit.xml and gate.png here.")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write the JUnit XML report to this file (for CI).")] = None,
    as_json: JsonOpt = False,
) -> int:
    """Apply a release policy to a quantized model; exit 0 if every check passes, 1 if any fails.

    Checks: VerbMem_f and KnowMem_f at most their maxima, KnowMem_r at least min_utility_ratio of the source model's, |PrivLeak| at most its maximum (both directions; values are shown signed), and the quantization gap (quantized minus full precision for VerbMem_f and KnowMem_f, |quantized| - |full precision| for PrivLeak) at most max_quant_gap. A check whose input is not given passes only if the policy's may_skip lists it (shown as skipped); otherwise it fails.

    With --lineage, every request the named version satisfies must still hold on --model (sustainability): its forget set is evaluated again.
    """
    from ..fileio import atomic_dir, check_dir_target, check_file_target, write_text
    from ..gate import evaluate_gate, to_junit_xml, write_reports
    from ..policy import Policy

    thresholds = Policy.from_yaml(policy)
    if out is not None:
        check_dir_target(out, what="--out")  # the output policy (fileio), before minutes of evaluation
    if junit is not None:
        check_file_target(junit, what="--junit")
    if (model is None) == (metrics is None):
        raise UsageError("give the quantized model as --model DIR (with --corpus) or its metrics as --metrics FILE, one of them")
    evaluate = _evaluator(corpus, retrain_auc, limit)
    quantized = _metrics_from(metrics, model, evaluate, "quantized", required=True)
    source = _metrics_from(source_metrics, source_model, evaluate, "source")
    full_precision = _metrics_from(fp_metrics, fp_model, evaluate, "full precision")
    inherited = _recheck_lineage(lineage, model, workspace, limit) if lineage else []
    report = evaluate_gate(quantized, full_precision=full_precision, source=source, policy=thresholds, inherited=inherited)
    if out is not None:
        with atomic_dir(out, what="--out") as tmp:
            write_reports(report, tmp)
        if model is not None:
            _record_decision(report, out, model, workspace)
    if junit is not None:
        write_text(junit, to_junit_xml(report), what="--junit")
    document = report.to_dict()
    if not report.passed:  # --json readers find why under the error object's keys (errors.error_document)
        failed = [check["name"] for check in document["checks"] if check["status"] == "failed"]
        document = error_document(f"gate failed: {', '.join(failed)}", field="gate", **document)
    emit(document, as_json, lambda: _print_gate(report.to_dict()))
    return 0 if report.passed else 1


def _record_decision(report, out: Path, model: Path, workspace: Path | None) -> None:
    """A gate run on a model directory, with its reports written, is evidence `register` can accept:
    record the decision with the report's and the model's hashes."""
    from ..evidence import Evidence
    from ..fileio import sha256_tree
    from ..workspace import Workspace

    Evidence(Workspace.resolve(workspace)).gate_decided(passed=report.passed, report=out / "gate.json", model_sha256=sha256_tree(model))


def _recheck_lineage(ref: str, model: Path | None, workspace: Path | None, limit: int | None) -> list:
    """Evaluate the quantized model on the forget set of every request `ref`'s signed registration record claims."""
    from ..evaluate import evaluate_model
    from ..evidence import Evidence
    from ..pipeline.lineage import recheck, rechecked_metrics
    from ..workspace import Workspace

    if model is None:
        raise UsageError("--lineage re-evaluates the model on earlier forget sets: give --model DIR, not --metrics")
    evidence = Evidence(Workspace.resolve(workspace))
    _, registration = evidence.resolve(ref)

    def measure(request_id: str, corpus: Path, corpus_sha: str) -> dict:
        err_console.print(f"re-checking request {request_id}'s forget set {corpus}", highlight=False)
        return evaluate_model(model, corpus, limit=limit, metrics=rechecked_metrics())

    return recheck(evidence, registration, measure)


def _evaluator(corpus: Path | None, retrain_auc: float | None, limit: int | None):
    def evaluate(model_dir: Path, role: str) -> dict:
        if corpus is None:
            raise UsageError(f"--corpus is needed to evaluate the {role} model {model_dir}")
        from ..bench import privleak_reference
        from ..evaluate import evaluate_model

        reference = retrain_auc if retrain_auc is not None else privleak_reference(corpus)
        err_console.print(f"evaluating the {role} model {model_dir}", highlight=False)
        return evaluate_model(model_dir, corpus, retrain_auc=reference, limit=limit)

    return evaluate


def _metrics_from(path: Path | None, model_dir: Path | None, evaluate, role: str, *, required: bool = False) -> dict | None:
    if path is not None and model_dir is not None:
        raise UsageError(f"the {role} model: give its metrics file or its directory, not both")
    if path is not None:
        from ..fileio import read_json

        document = read_json(path)
        if not isinstance(document, dict):
            raise UnlearnopsError(f"{path}: expected a JSON object of metrics (`unlearnops evaluate --json` output)")
        return document
    if model_dir is not None:
        return evaluate(model_dir, role)
    return None
