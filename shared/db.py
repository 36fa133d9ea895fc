"""Postgres access: a small thread-safe pool, transactions, and versioned migrations per schema."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extras

log = logging.getLogger(__name__)
psycopg2.extras.register_uuid()

TRANSIENT_DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class DatabaseBusy(RuntimeError):
    """Every connection stayed in use for the whole wait: the caller should answer 503, not fail."""


class Database:
    """Owns a connection pool; built by a composition root, never at import time.

    Callers beyond `maxconn` queue (up to `wait_s`) instead of failing. Returned connections stay open
    for the next caller, up to `keep_idle` of them: psycopg2's own pool closes every connection beyond
    `minconn`, so each concurrent request paid for a new Postgres backend."""

    def __init__(self, dsn: str, *, minconn: int = 1, maxconn: int = 8, application_name: str = "hub",
                 wait_s: float = 30, search_path: str | None = None, keep_idle: int | None = None):
        self.dsn = dsn
        # A service's own schema first, so its SQL names its tables unqualified.
        options = {"options": f"-c search_path={search_path},public"} if search_path else {}
        self._connect_kwargs = {"application_name": application_name, "connect_timeout": 5, **options}
        self._slots = threading.BoundedSemaphore(maxconn)
        self._wait_s = wait_s
        self._keep_idle = maxconn if keep_idle is None else keep_idle
        self._idle: list[psycopg2.extensions.connection] = []
        self._idle_lock = threading.Lock()
        self._idle.extend(self._connect() for _ in range(min(minconn, maxconn)))  # fail fast on a bad DSN

    def _connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(self.dsn, **self._connect_kwargs)

    def _take(self) -> psycopg2.extensions.connection:
        with self._idle_lock:
            while self._idle:
                conn = self._idle.pop()  # the most recently used: the likeliest to be warm
                if conn.closed == 0:
                    return conn
        return self._connect()

    def _give_back(self, conn, broken: bool) -> None:
        if not broken and conn.closed == 0:
            with self._idle_lock:
                if len(self._idle) < self._keep_idle:
                    self._idle.append(conn)
                    return
        with contextlib.suppress(psycopg2.Error):
            conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        if not self._slots.acquire(timeout=self._wait_s):
            raise DatabaseBusy(f"no database connection free within {self._wait_s:.0f}s")
        try:
            conn = self._take()
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
                try:
                    conn.rollback()  # never hand an open transaction back to the pool
                except psycopg2.Error:
                    broken = True
            self._give_back(conn, broken)
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
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg2.Error):
                conn.close()


@contextlib.contextmanager
def savepoint(cur, name: str = "item") -> Iterator[None]:
    """Undo only this block's writes if it raises; the transaction around it goes on."""
    cur.execute(f"savepoint {name}")
    try:
        yield
    except BaseException:
        cur.execute(f"rollback to savepoint {name}")
        raise
    cur.execute(f"release savepoint {name}")


class Prepared:
    """A statement each connection prepares once, so the session keeps its plan: for hot reads whose
    planning costs Postgres as much as running them. `sql` names its parameters $1..$n, one per type.
    PREPARE is not undone by a rollback, and a new or reconnected session is a new connection object."""

    def __init__(self, name: str, types: tuple[str, ...], sql: str):
        self.name = name
        self.prepare = f"prepare {name} ({', '.join(types)}) as {sql}"
        self.execute_sql = f"execute {name} ({', '.join(['%s'] * len(types))})"
        self._prepared_on: weakref.WeakSet = weakref.WeakSet()

    def execute(self, cur, params) -> None:
        if cur.connection not in self._prepared_on:
            cur.execute(self.prepare)
            self._prepared_on.add(cur.connection)
        cur.execute(self.execute_sql, params)


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
