"""The one exception type the CLI turns into a clear one-line error and an exit code."""


class UnlearnopsError(Exception):
    """A user-facing failure: the message names the file or field and the fix.

    exit_code follows the CLI contract: 1 = invalid input or failed check, 2 = usage error.
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(UnlearnopsError):
    exit_code = 2


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
