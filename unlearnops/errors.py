"""The one exception type the CLI turns into a clear one-line error and an exit code."""

from __future__ import annotations

import re
from typing import Any


_LEADING_FIELD = re.compile(r"^(--[a-z][a-z0-9-]*|\$[A-Z][A-Z0-9_]*)[\s:/]")


class UnlearnopsError(Exception):
    """A user-facing failure: the message names the file or field and the fix.

    exit_code follows the CLI contract: 1 = invalid input or failed check, 2 = usage error.
    `field` names what to fix (a request field, an option such as --out) for `--json` readers.
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None, field: str | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        # A message that starts with the option or variable to fix ("--request X: ...") names it.
        leading = _LEADING_FIELD.match(message)
        self.field = field or (leading.group(1) if leading else None)

    def to_json(self) -> dict[str, Any]:
        return error_document(str(self), field=self.field, exit_code=self.exit_code)


class UsageError(UnlearnopsError):
    exit_code = 2


def error_document(message: str, *, field: str | None = None, exit_code: int = 1, **more: Any) -> dict[str, Any]:
    """The JSON object every `--json` command prints on stdout when it exits 1 or 2 (one shape, one home).

    A command whose own report is the output (an invalid request, a failed gate) passes the report's keys
    in `more`, so a reader finds the reason under the same three keys whichever command failed.
    """
    return {**more, "error": message, "field": field, "exit_code": exit_code}


def did_you_mean(name: object, choices, *, cutoff: float = 0.6) -> str:
    """"did you mean 'x'? " for a mistyped registry name, or "" when nothing is close."""
    import difflib

    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'? " if close else ""


def first_validation_error(err) -> tuple[str, str]:
    """(dotted field path, message) of a pydantic ValidationError's first error, for one-line errors."""
    first = err.errors()[0]
    return ".".join(str(part) for part in first["loc"]) or "(root)", first["msg"]
