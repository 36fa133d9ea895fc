"""The connection pool queues callers instead of failing them, and says so when it cannot."""
from __future__ import annotations

import threading

import pytest

from shared.db import Database, DatabaseBusy

from .helpers import run_together


def test_more_callers_than_connections_wait_their_turn(service_env):
    db = Database(service_env["database_url"], maxconn=2)

    def query():
        with db.transaction() as cur:
            cur.execute("select pg_sleep(0.05), 1")
            return cur.fetchone()[1]

    results, errors = run_together(*[query] * 12)
    db.close()
    assert not errors and results == [1] * 12


def test_a_caller_that_waits_too_long_gets_a_busy_error_not_a_pool_crash(service_env):
    db = Database(service_env["database_url"], maxconn=1, wait_s=0.2)
    held, release = threading.Event(), threading.Event()

    def hold():
        with db.transaction():
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    with pytest.raises(DatabaseBusy):
        with db.transaction():
            pass
    release.set()
    holder.join()
    with db.transaction() as cur:  # the slot came back
        cur.execute("select 1")
    db.close()


def test_connections_are_reused_after_a_burst_up_to_the_idle_limit(service_env):
    name = f"pool-test-{threading.get_ident()}"
    db = Database(service_env["database_url"], maxconn=6, keep_idle=2, application_name=name)

    def backend():
        with db.transaction() as cur:
            cur.execute("select pg_sleep(0.05), pg_backend_pid()")
            return cur.fetchone()[1]

    burst, errors = run_together(*[backend] * 6)
    assert not errors and len(set(burst)) == 6
    after = {backend() for _ in range(5)}
    assert len(after) == 1 and after <= set(burst)  # no new backend per request: one kept connection serves
    with db.transaction() as cur:  # the rest of the burst's connections were closed, not hoarded
        cur.execute("select count(*) from pg_stat_activity where application_name = %s", (name,))
        assert cur.fetchone()[0] == 2
    db.close()


def test_a_prepared_statement_is_prepared_once_per_session_and_outlives_a_rollback(service_env):
    import psycopg2

    from shared.db import Prepared

    twice = Prepared("test_twice", ("int",), "select $1 * 2")
    conn = psycopg2.connect(service_env["database_url"])
    try:
        with conn.cursor() as cur:
            twice.execute(cur, (3,))
            assert cur.fetchone() == (6,)
        conn.rollback()  # PREPARE is not transactional: a second PREPARE here would fail
        with conn.cursor() as cur:
            twice.execute(cur, (4,))
            assert cur.fetchone() == (8,)
            cur.execute("select count(*) from pg_prepared_statements where name = 'test_twice'")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    other = psycopg2.connect(service_env["database_url"])  # a new session prepares it for itself
    try:
        with other.cursor() as cur:
            twice.execute(cur, (5,))
            assert cur.fetchone() == (10,)
    finally:
        other.close()


def test_a_server_without_autovacuum_is_named_in_a_warning_at_start(service_env, caplog):
    import logging

    from shared.runtime import warn_without_autovacuum

    db = Database(service_env["database_url"], maxconn=1)
    try:
        with db.transaction() as cur:
            cur.execute("select setting from pg_settings where name = 'autovacuum'")
            server_runs_it = cur.fetchone()[0] == "on"
        with caplog.at_level(logging.WARNING, logger="shared.runtime"):
            assert warn_without_autovacuum(db) is server_runs_it
    finally:
        db.close()
    warned = [r for r in caplog.records if "autovacuum off" in r.getMessage()]
    assert len(warned) == (0 if server_runs_it else 1)
