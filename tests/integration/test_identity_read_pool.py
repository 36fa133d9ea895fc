"""Identity's reads on the event loop (services/identity/readpool.py) over real Postgres: prepared once
per connection, a connection that failed or was interrupted is never reused, and callers beyond the
pool wait, then are told the service is busy."""
from __future__ import annotations

import asyncio

import psycopg2
import pytest

from services.identity.readpool import ReadPool
from shared.db import DatabaseBusy, Prepared

BACKEND = "select pg_backend_pid()"


def test_a_statement_is_prepared_once_per_connection_and_the_connection_is_reused(database_url):
    async def reads():
        pool = ReadPool(database_url, size=2)
        twice = Prepared("twice", ("int",), "select $1 * 2")
        try:
            rows = [await pool.fetchone(twice, (i,)) for i in range(5)]
            backends = {await pool.fetchone(BACKEND, ()) for _ in range(3)}
            return rows, backends
        finally:
            pool.close()

    rows, backends = asyncio.run(reads())
    assert rows == [(2 * i,) for i in range(5)]
    assert len(backends) == 1  # one at a time: the idle connection is taken again


def test_a_failed_statement_closes_its_connection_and_the_next_read_gets_a_new_one(database_url):
    async def reads():
        pool = ReadPool(database_url, size=1)
        try:
            first = await pool.fetchone(BACKEND, ())
            with pytest.raises(psycopg2.errors.DivisionByZero):
                await pool.fetchone("select 1 / 0", ())
            return first, await pool.fetchone(BACKEND, ())
        finally:
            pool.close()

    first, second = asyncio.run(reads())
    assert first != second


def test_a_read_interrupted_mid_statement_does_not_leave_its_connection_to_the_next(database_url):
    async def reads():
        pool = ReadPool(database_url, size=1)
        try:
            first = await pool.fetchone(BACKEND, ())
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.fetchone("select pg_sleep(5)", ()), 0.2)
            started = asyncio.get_running_loop().time()
            second = await pool.fetchone(BACKEND, ())
            return first, second, asyncio.get_running_loop().time() - started
        finally:
            pool.close()

    first, second, waited = asyncio.run(reads())
    assert first != second and waited < 2  # not queued behind the abandoned pg_sleep


def test_readers_beyond_the_pool_wait_their_turn_and_one_that_waits_too_long_is_told_busy(database_url):
    async def reads():
        patient = ReadPool(database_url, size=1)
        hurried = ReadPool(database_url, size=1, wait_s=0.1)
        try:
            together = await asyncio.gather(*[patient.fetchone("select pg_sleep(0.05), %s", (i,)) for i in range(4)])
            slow = asyncio.create_task(hurried.fetchone("select pg_sleep(0.5)", ()))
            await asyncio.sleep(0.05)
            with pytest.raises(DatabaseBusy):
                await hurried.fetchone("select 1", ())
            await slow
            return [row[1] for row in together], await hurried.fetchone("select 1", ())
        finally:
            patient.close()
            hurried.close()

    values, after = asyncio.run(reads())
    assert values == [0, 1, 2, 3] and after == (1,)
