"""Verification of a live endpoint: the MUSE metrics measured through its OpenAI-compatible API,
compared with the registered evaluation of the version the audit log says is deployed there.

    client.py   OpenAIEndpoint: /v1/models and /v1/completions, many requests in flight (no key ever printed)
    measure.py  the requests MUSE needs, built and scored by unlearnops.evaluate's own functions
    target.py   which deployment should answer at a URL, and what its registered evaluation measured
    verify.py   verify_endpoint(): measure, compare within the tolerance, write the document, record it
"""

from .client import EndpointError, OpenAIEndpoint
from .verify import FORMAT, TOLERANCE, VERIFICATIONS, Verification, verify_endpoint

__all__ = ["FORMAT", "TOLERANCE", "VERIFICATIONS", "EndpointError", "OpenAIEndpoint", "Verification", "verify_endpoint"]
