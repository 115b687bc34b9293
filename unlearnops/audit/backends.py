"""Which storage holds a workspace's audit log: the one place that decides.

    (default)                        <workspace>/audit.jsonl (storage.FileStorage): one user
    UNLEARNOPS_AUDIT_URL=postgresql://user@host:port/db?log=NAME
                                     a shared, database-enforced append-only log
                                     (postgres.PostgresStorage): a team's machines write one chain

The record format, hashes and everything `AuditLog` does above the storage are the same on
both, so `audit verify/status/show/export` work the same way on either.
"""

from __future__ import annotations

import os

from ..errors import UnlearnopsError
from .storage import AuditStorage, FileStorage

AUDIT_URL_ENV = "UNLEARNOPS_AUDIT_URL"


def storage_for(workspace) -> AuditStorage:
    """The workspace's audit storage: $UNLEARNOPS_AUDIT_URL when set, else its audit.jsonl."""
    url = os.environ.get(AUDIT_URL_ENV, "").strip()
    return open_storage(url) if url else FileStorage(workspace.audit_log)


def open_storage(url: str) -> AuditStorage:
    from .postgres import PostgresStorage, is_postgres_url

    if is_postgres_url(url):
        return PostgresStorage(url)
    scheme = url.split(":", 1)[0] if ":" in url else url[:20]
    raise UnlearnopsError(
        f"${AUDIT_URL_ENV}: scheme '{scheme}' is not an audit backend; use postgresql://USER@HOST:PORT/DB?log=NAME, "
        "or unset it to keep the log in the workspace"
    )
