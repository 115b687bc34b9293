"""The `unlearnops` command line: a thin layer over the library, one module per area.

Adding an area is one module under unlearnops/cli/ and one line in REGISTRATIONS.
Heavy libraries (torch, transformers, mlflow, great-expectations) are imported inside the
commands, so `--help` and `validate` start fast.
"""

from __future__ import annotations

import sys

import click
import typer
from rich.markup import escape
from typer._click.exceptions import ClickException as TyperClickException  # typer vendors its own click

from ..errors import UnlearnopsError
from . import audit, bench, endpoint, evaluate, pipeline, quantize, registry, report, request, serve, unlearn
from .output import err_console

app = typer.Typer(
    name="unlearnops",
    help="Turn a forget request against a deployed LLM into a verified, quantized, served model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)



def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"unlearnops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Turn a forget request against a deployed LLM into a verified, quantized, served model.

    Every stage is its own command; `unlearnops run` chains them. Every command takes --json.
    Exit codes: 0 ok, 1 invalid input or failed check, 2 usage error.
    """


for area in (bench, evaluate, unlearn, quantize, request, pipeline, registry, audit, serve, endpoint, report):
    area.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 ok, 1 invalid input or failed check, 2 usage."""
    try:
        result = app(args=argv, prog_name="unlearnops", standalone_mode=False)
    except UnlearnopsError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return err.exit_code
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except (click.ClickException, TyperClickException) as err:
        err.show()
        return err.exit_code
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        return 130
    except Exception as err:
        message = _environment_error(err)
        if message is None:
            raise  # a bug: keep its traceback
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return 1
    return result if isinstance(result, int) else 0


def _environment_error(err: Exception) -> str | None:
    """A failure of the machine, not of the code (disk full, read-only files, MLflow down or locked): one clear line.

    MLflow's messages quote the tracking URI, so credentials in it are masked (registry.error_summary).
    """
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}; free disk space or make the workspace writable (or choose another --workspace), then rerun"
    failing = {"mlflow.exceptions": "MlflowException", "sqlalchemy.exc": "SQLAlchemyError", "requests.exceptions": "RequestException"}
    if any(isinstance(err, getattr(sys.modules[module], name)) for module, name in failing.items() if module in sys.modules):
        from ..registry import error_summary

        return (
            f"MLflow tracking store: {error_summary(err)}; check that $MLFLOW_TRACKING_URI is reachable (or unset it to use the "
            "workspace's sqlite store) and that no other process holds mlflow.db, then rerun"
        )
    return None


def run() -> None:
    sys.exit(main())
