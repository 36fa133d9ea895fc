"""Postgres access: a small thread-safe pool, transactions, and versioned migrations per schema."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extras
import psycopg2.pool

log = logging.getLogger(__name__)
psycopg2.extras.register_uuid()

TRANSIENT_DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class DatabaseBusy(RuntimeError):
    """Every connection stayed in use for the whole wait: the caller should answer 503, not fail."""


class Database:
    """Owns a connection pool; built by a composition root, never at import time."""

    def __init__(self, dsn: str, *, minconn: int = 1, maxconn: int = 8, application_name: str = "hub",
                 wait_s: float = 30, search_path: str | None = None):
        self.dsn = dsn
        # A service's own schema first, so its SQL names its tables unqualified.
        options = {"options": f"-c search_path={search_path},public"} if search_path else {}
        self._pool = psycopg2.pool.ThreadedConnectionPool(
            minconn, maxconn, dsn, application_name=application_name, connect_timeout=5, **options
        )
        # psycopg2's pool raises when exhausted; more request threads than connections must queue instead.
        self._slots = threading.BoundedSemaphore(maxconn)
        self._wait_s = wait_s

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        if not self._slots.acquire(timeout=self._wait_s):
            raise DatabaseBusy(f"no database connection free within {self._wait_s:.0f}s")
        try:
            conn = self._pool.getconn()
        except BaseException:
            self._slots.release()
            raise
        broken = False
        try:
            yield conn
        except TRANSIENT_DB_ERRORS:
            broken = True
            raise
        finally:
            if not broken and conn.closed == 0:
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()  # never hand an open transaction back to the pool
            self._pool.putconn(conn, close=broken or conn.closed != 0)
            self._slots.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction: commits when the block ends, rolls back on any exception."""
        with self.connection() as conn:
            try:
                with conn.cursor() as cur:
                    yield cur
                conn.commit()
            except BaseException:
                if conn.closed == 0:
                    conn.rollback()
                raise

    def ping(self) -> bool:
        try:
            with self.transaction() as cur:
                cur.execute("select 1")
            return True
        except psycopg2.Error:
            return False

    def close(self) -> None:
        self._pool.closeall()


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"migrate:{schema}".encode()).digest()[:8], "big", signed=True)


def migrate(db: Database, schema: str, migrations: list[tuple[str, str]]) -> list[str]:
    """Apply (name, sql) migrations not yet recorded in `<schema>.schema_migrations`, in order.

    An advisory lock serialises concurrent starts of several replicas; each migration commits with
    its bookkeeping row, so a failed one leaves no partial state and is retried next start.
    """
    applied: list[str] = []
    with db.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (_lock_key(schema),))
            try:
                cur.execute(f'create schema if not exists "{schema}"')
                cur.execute(
                    f'create table if not exists "{schema}".schema_migrations '
                    "(name text primary key, applied_at timestamptz not null default now())"
                )
                conn.commit()
                cur.execute(f'select name from "{schema}".schema_migrations')
                done = {row[0] for row in cur.fetchall()}
                for name, sql in migrations:
                    if name in done:
                        continue
                    cur.execute(f'set local search_path to "{schema}", public')
                    cur.execute(sql)
                    cur.execute(f'insert into "{schema}".schema_migrations (name) values (%s)', (name,))
                    conn.commit()
                    applied.append(name)
                    log.info("applied migration", extra={"schema": schema, "migration": name})
            finally:
                conn.rollback()
                cur.execute("select pg_advisory_unlock(%s)", (_lock_key(schema),))
                conn.commit()
    return applied


def sql_files(directory: Path) -> list[tuple[str, str]]:
    """`NNNN_name.sql` files of a migrations folder, in order."""
    return [(p.stem, p.read_text()) for p in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))]
