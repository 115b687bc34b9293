"""Forget requests: the schema, safe loading of the data they name, and validation.

    load_request(path) -> ForgetRequest            schema only; raises UnlearnopsError naming the field
    validate_request(path) -> ValidationReport      schema + model + policy + great-expectations data suite
    request_digest(report) -> dict                  ids and SHA-256 hashes, never texts (for MLflow)
"""

from .checks import MIN_PRIVLEAK_TEXTS
from .loading import ResolvedData, load_request
from .report import Check, ValidationReport, request_digest
from .schema import ForgetRequest, request_schema
from .validate import validate_request

__all__ = [
    "MIN_PRIVLEAK_TEXTS",
    "Check",
    "ForgetRequest",
    "ResolvedData",
    "ValidationReport",
    "load_request",
    "request_digest",
    "request_schema",
    "validate_request",
]
