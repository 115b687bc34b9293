"""The audit log in PostgreSQL: one shared, append-only chain for a team's machines.

    UNLEARNOPS_AUDIT_URL=postgresql://unlearnops@db.example:5432/unlearnops?log=team

Each record is one row of `audit.records` (deploy/postgres/20-audit.sql): the log's name, the
record's line (its canonical JSON, byte for byte what the file backend writes) and, filled in by
the database from that line, its seq, prev and hash. The database, not this client, makes the
table append-only and the chain unforkable (see the SQL file): the role the application logs in
with can SELECT and INSERT, nothing else, and an insert that does not extend the head is
refused.

Writers queue on a PostgreSQL advisory lock per log, held by the connection across "read the
head, append": concurrent appends from several processes or machines are serialised, and a
crashed writer's lock goes with its connection. Each appended line is committed before
`append_line` returns (durable, like the file backend's fsync).

The password never goes in the URL: libpq reads it from $PGPASSWORD, a pgpass file
($PGPASSFILE or ~/.pgpass, `host:port:database:user:password`) or a service file. A password
that is in the URL anyway is used, and masked wherever the URL is printed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import UnlearnopsError
from .storage import LOCK_TIMEOUT_S, AppendSession, AuditStorage

SCHEMES = ("postgresql", "postgres")
DEFAULT_LOG = "default"
PAGE_ROWS = 2000  # rows per round trip when reading a whole log
CONNECT_TIMEOUT_S = 10
_LOG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SCHEMA_FIX = "apply deploy/postgres/10-team-roles.sql and 20-audit.sql as a superuser (docs/team.md)"


def is_postgres_url(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


class PostgresStorage(AuditStorage):
    """One named log in a PostgreSQL `audit.records` table."""

    shared = True  # a team's machines all append to it, each with a witness of its own

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise UnlearnopsError(f"audit URL '{_printable(parts)}': not a postgresql:// URL")
        query = parse_qsl(parts.query, keep_blank_values=True)
        self.log = next((value for key, value in query if key == "log"), DEFAULT_LOG)
        if not _LOG_NAME.match(self.log):
            raise UnlearnopsError(
                f"audit URL '{_printable(parts)}': log name '{self.log[:80]}' must be 1-64 letters, digits, '.', '_' or '-'"
            )
        # libpq rejects query parameters it does not know: `log` is ours.
        self._conninfo = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "log"])))
        # Printable and stable across processes and machines (the witness keys checkpoints by it):
        # the server, database and log name, never the user or a password.
        host = parts.hostname or "localhost"
        self.location = f"postgresql://{host}:{parts.port or 5432}{parts.path or '/'}#{self.log}"
        self._connection = None

    # ---- connection ------------------------------------------------------------------------------
    def _connect(self):
        if self._connection is not None and not self._connection.closed:
            return self._connection
        import psycopg

        try:
            self._connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as err:
            raise UnlearnopsError(f"audit log {self.location}: cannot connect ({_first_line(err)})") from None
        return self._connection

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.errors.UndefinedTable:
            raise UnlearnopsError(f"audit log {self.location}: the database has no audit.records table; {_SCHEMA_FIX}") from None
        except psycopg.errors.InsufficientPrivilege as err:
            raise UnlearnopsError(f"audit log {self.location}: {doing} refused by the database ({_first_line(err)})") from None
        except psycopg.errors.LockNotAvailable:
            raise UnlearnopsError(
                f"audit log {self.location}: another writer has held the log's lock for {LOCK_TIMEOUT_S:.0f} s; retry"
            ) from None
        except psycopg.Error as err:
            raise UnlearnopsError(f"audit log {self.location}: {doing} failed ({_first_line(err)})") from None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ---- reading ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        with self._errors("reading"):
            row = self._connect().execute("SELECT 1 FROM audit.records WHERE log = %s LIMIT 1", (self.log,)).fetchone()
        return row is not None

    def last_line(self) -> bytes | None:
        with self._errors("reading"):
            return _last_line(self._connect(), self.log)

    def lines(self) -> Iterator[bytes]:
        """Every line in seq order, a page at a time (the first line costs one small query)."""
        after = 0
        while True:
            with self._errors("reading"):
                rows = self._connect().execute(
                    "SELECT seq, line FROM audit.records WHERE log = %s AND seq > %s ORDER BY seq LIMIT %s",
                    (self.log, after, PAGE_ROWS),
                ).fetchall()
            for seq, line in rows:
                yield line.encode("utf-8")
                after = seq
            if len(rows) < PAGE_ROWS:
                return

    # ---- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def appending(self) -> Iterator[AppendSession]:
        connection = self._connect()
        with self._errors("taking the append lock"):
            connection.execute(f"SET lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
            connection.execute("SELECT pg_advisory_lock(audit.lock_class(), hashtext(%s))", (self.log,))
        try:
            yield _PostgresSession(self, connection)
        finally:
            if not connection.closed:
                with contextlib.suppress(Exception):
                    connection.execute("SELECT pg_advisory_unlock(audit.lock_class(), hashtext(%s))", (self.log,))


class _PostgresSession(AppendSession):
    def __init__(self, storage: PostgresStorage, connection):
        self.storage, self.connection = storage, connection

    def last_line(self) -> bytes | None:
        with self.storage._errors("reading"):
            return _last_line(self.connection, self.storage.log)

    def lines(self) -> Iterator[bytes]:
        return self.storage.lines()

    def append_line(self, line: bytes) -> None:
        if b"\n" in line:
            raise ValueError("an audit line cannot contain a newline")
        with self.storage._errors("appending"):
            # autocommit: the row is committed (durable) when execute returns.
            self.connection.execute("INSERT INTO audit.records (log, line) VALUES (%s, %s)", (self.storage.log, line.decode("utf-8")))


def _last_line(connection, log: str) -> bytes | None:
    row = connection.execute("SELECT line FROM audit.records WHERE log = %s ORDER BY seq DESC LIMIT 1", (log,)).fetchone()
    return row[0].encode("utf-8") if row else None


def _printable(parts) -> str:
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
