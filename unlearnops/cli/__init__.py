"""The `unlearnops` command line: a thin layer over the library, one module per area.

Adding an area is one module under unlearnops/cli/ and one line in REGISTRATIONS.
Heavy libraries (torch, transformers, mlflow, great-expectations) are imported inside the
commands, so `--help` and `validate` start fast.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import signal
import sys
import threading

import click
import typer
from rich.markup import escape
from typer._click.exceptions import ClickException as TyperClickException  # typer vendors its own click

from ..errors import UnlearnopsError, error_document
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
    """Run the CLI and return its exit code: 0 ok, 1 invalid input or failed check, 2 usage.

    With --json, a failure (exit 1 or 2, usage errors included) prints one JSON object on stdout,
    errors.error_document: {"error", "field", "exit_code"}; the one-line `error:` goes to stderr
    as without --json.
    """
    args = [str(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    stdout = _Recorder(sys.stdout)
    with contextlib.redirect_stdout(stdout), _sigterm_unwinds():
        code, failure = _invoke(args, as_json="--json" in args)
    if "--json" in args and code != 0:
        if failure is not None:
            _print_json(failure)
        elif not stdout.written:  # the command exited non-zero without a word: say so in the contract's shape
            _print_json(error_document(f"exited with status {code}; see stderr", exit_code=code))
    return code


def _invoke(args: list[str], *, as_json: bool) -> tuple[int, dict | None]:
    """(exit code, the JSON error object for --json or None when the command printed its own)."""
    try:
        result = app(args=args, prog_name="unlearnops", standalone_mode=False)
    except UnlearnopsError as err:
        _print_error(str(err))
        return err.exit_code, err.to_json()
    except (click.exceptions.Exit, typer.Exit) as exit_:
        return exit_.exit_code, None
    except (click.ClickException, TyperClickException) as err:
        err.show()
        return err.exit_code, error_document(err.format_message(), field=_usage_field(err), exit_code=err.exit_code)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        return 130, error_document("aborted", exit_code=130)
    except _Terminated:
        err_console.print("terminated (SIGTERM): nothing half-written is left; rerun to resume")
        return 143, error_document("terminated (SIGTERM)", exit_code=143)
    except Exception as err:
        message = _environment_error(err)
        if message is None:
            if as_json:  # a bug: the reader still gets the contract's shape, and the traceback stays on stderr
                _print_json(error_document(f"internal error ({type(err).__name__}): {err}; report this as a bug", exit_code=1))
            raise
        _print_error(message)
        return 1, error_document(message, exit_code=1)
    return (result if isinstance(result, int) else 0), None


class _Terminated(BaseException):
    """SIGTERM, raised where the command is, so every `finally` runs: staging directories
    (fileio.atomic_dir, the stage runner's .partial dirs) are removed and locks released, as
    on Ctrl-C. A BaseException, so no `except Exception` swallows it."""


@contextlib.contextmanager
def _sigterm_unwinds():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum, _frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _print_json(document: dict) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _usage_field(err: Exception) -> str | None:
    """The option or argument a usage error is about (--request, MODEL), or the unknown option given."""
    param = getattr(err, "param", None)
    if param is not None:
        options = [opt for opt in getattr(param, "opts", []) if opt.startswith("-")]
        return max(options, key=len) if options else (param.name or "").upper() or None
    return getattr(err, "option_name", None)


class _Recorder(io.TextIOBase):
    """Passes stdout through untouched, noting whether the command wrote anything (its own document)."""

    def __init__(self, target):
        self.target, self.written = target, False

    def write(self, text: str) -> int:
        self.written = self.written or bool(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self):  # rich and click read it to choose how to encode
        return getattr(self.target, "encoding", "utf-8")


def _environment_error(err: Exception) -> str | None:
    """A failure of the machine, not of the code (disk full, read-only files, MLflow down, locked or corrupt): one clear line.

    MLflow's messages quote the tracking URI, so credentials in it are masked (registry.error_summary).
    """
    if isinstance(err, OSError):
        return _os_error(err)
    failing = {"mlflow.exceptions": "MlflowException", "sqlalchemy.exc": "SQLAlchemyError", "requests.exceptions": "RequestException"}
    if any(isinstance(err, getattr(sys.modules[module], name)) for module, name in failing.items() if module in sys.modules):
        from ..registry import error_summary

        summary = error_summary(err)
        if "error code 401" in summary:  # a team server with basic-auth (docs/team.md)
            return f"MLflow tracking store: {summary}; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials), then rerun"
        if "PERMISSION_DENIED" in summary or "error code 403" in summary:
            return f"MLflow tracking store: {summary}; this user lacks the permission: ask the server's admin (or a release manager for @production)"
        if any(sign in summary for sign in ("file is not a database", "malformed", "not a database")):
            return (
                f"MLflow tracking store: corrupt ({summary}); restore mlflow.db from a backup, or move it aside to start an "
                "empty registry, then rerun"
            )
        if "locked" in summary:
            return f"MLflow tracking store: {summary}; another process holds mlflow.db: wait for it to finish (or stop it), then rerun"
        return (
            f"MLflow tracking store: {summary}; check that $MLFLOW_TRACKING_URI is reachable (or unset it to use the "
            "workspace's sqlite store), then rerun"
        )
    return None


# What to do about an OSError, by its errno: the fix differs (a full disk is not a long path).
_OS_FIXES = {
    errno.ENOSPC: "free disk space (or choose another --workspace), then rerun",
    errno.EDQUOT: "free disk space or raise the quota (or choose another --workspace), then rerun",
    errno.EROFS: "the file system is read-only: make it writable or choose another --workspace, then rerun",
    errno.EACCES: "permission denied: check the path's permissions (or choose another --workspace), then rerun",
    errno.EPERM: "operation not permitted: check the path's permissions (or choose another --workspace), then rerun",
    errno.ENAMETOOLONG: "the path is too long for the file system: use a shorter path",
    errno.ENOENT: "check that the path exists",
    errno.ENOTDIR: "a part of the path is not a directory: check the path",
    errno.EISDIR: "it is a directory: name a file",
    errno.ELOOP: "too many levels of symbolic links: check the path",
}


def _os_error(err: OSError) -> str:
    where = f"{_shorten(str(err.filename))}: " if err.filename else ""
    fix = _OS_FIXES.get(err.errno, "check the path and the disk, then rerun")
    return f"{where}{err.strerror or err}; {fix}"


def _shorten(path: str, keep: int = 160) -> str:
    return path if len(path) <= keep else f"{path[: keep // 2]}...{path[-keep // 2 :]} ({len(path)} characters)"


def run() -> None:
    sys.exit(main())
