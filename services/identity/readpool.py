"""Single-statement reads on the event loop: a small pool of psycopg2 asynchronous connections, polled
with the loop's add_reader/add_writer. The customer 360 is one autocommit statement; on a worker thread
it cost a hop there and back (thread wake-ups, two more GIL hand-offs, which under ingestion's CPU-bound
threads are what a read waits for), on the loop it costs one wait on the socket.

Asynchronous connections are always in autocommit, so only statements that are their own transaction
belong here. Each statement is prepared once per connection (the session keeps its plan).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import psycopg2
import psycopg2.extensions

from shared.db import DatabaseBusy, Prepared

_POLL_OK, _POLL_READ, _POLL_WRITE = (psycopg2.extensions.POLL_OK, psycopg2.extensions.POLL_READ,
                                     psycopg2.extensions.POLL_WRITE)


async def _ready(conn) -> None:
    """Drive an asynchronous connection until its pending connect or statement is done."""
    loop = asyncio.get_running_loop()
    fd = conn.fileno()
    while True:
        state = conn.poll()
        if state == _POLL_OK:
            return
        waiter = loop.create_future()

        def wake(w=waiter):
            if not w.done():
                w.set_result(None)

        if state == _POLL_READ:
            watch, unwatch = loop.add_reader, loop.remove_reader
        elif state == _POLL_WRITE:
            watch, unwatch = loop.add_writer, loop.remove_writer
        else:  # pragma: no cover - libpq answers one of the three
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        watch(fd, wake)
        try:
            await waiter
        finally:
            unwatch(fd)


class _Connection:
    def __init__(self, conn):
        self.conn, self.cursor, self.prepared = conn, conn.cursor(), set()


class ReadPool:
    """Up to `size` asynchronous connections; callers beyond that queue up to `wait_s`, then get
    DatabaseBusy (a 503), as with the threaded pool. A connection that failed, or whose statement
    was interrupted, is closed, never reused."""

    def __init__(self, dsn: str, *, size: int = 8, application_name: str = "hub-reads",
                 search_path: str | None = None, connect_timeout_s: float = 5, wait_s: float = 30):
        self._dsn = dsn
        self._kwargs = {"application_name": application_name,
                        **({"options": f"-c search_path={search_path},public"} if search_path else {})}
        self._connect_timeout_s, self._wait_s = connect_timeout_s, wait_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._closed = False

    async def _connect(self) -> _Connection:
        conn = psycopg2.connect(self._dsn, async_=True, **self._kwargs)
        try:
            async with asyncio.timeout(self._connect_timeout_s):  # libpq's connect_timeout is for blocking connects
                await _ready(conn)
        except BaseException:
            conn.close()
            raise
        return _Connection(conn)

    async def fetchone(self, statement: str | Prepared, params: Sequence) -> tuple | None:
        """One statement's first row; a Prepared one is prepared first on a connection that has not yet."""
        if self._slots.locked():  # asyncio.timeout, not wait_for: a timeout racing the grant cannot lose a slot
            try:
                async with asyncio.timeout(self._wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise DatabaseBusy(f"no database connection free within {self._wait_s:.0f}s") from None
        else:
            await self._slots.acquire()
        try:
            c = self._idle.pop() if self._idle else await self._connect()
            try:
                sql = statement
                if isinstance(statement, Prepared):
                    if statement.name not in c.prepared:
                        c.cursor.execute(statement.prepare)
                        await _ready(c.conn)
                        c.prepared.add(statement.name)
                    sql = statement.execute_sql
                c.cursor.execute(sql, params)
                await _ready(c.conn)
                row = c.cursor.fetchone()
            except BaseException:  # also a cancellation mid-statement: the session's state is unknown
                with contextlib.suppress(psycopg2.Error):
                    c.conn.close()
                raise
            if self._closed or c.conn.closed:
                c.conn.close()
            else:
                self._idle.append(c)
            return row
        finally:
            self._slots.release()

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for c in idle:
            with contextlib.suppress(psycopg2.Error):
                c.conn.close()
