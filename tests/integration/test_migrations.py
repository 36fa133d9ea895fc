"""Versioned SQL migrations per schema, applied at start by every replica."""
from __future__ import annotations

import psycopg2
import pytest

from shared.db import Database, migrate

from .helpers import run_together

MIGRATIONS = [
    ("0001_pets", "create table pets (id int primary key, name text not null)"),
    ("0002_pet_size", "alter table pets add column size text"),
]


@pytest.fixture
def db(database_url):
    database = Database(database_url, maxconn=8)
    yield database
    database.close()


def applied(db, schema):
    with db.transaction() as cur:
        cur.execute(f"select name from {schema}.schema_migrations order by name")
        return [r[0] for r in cur.fetchall()]


def test_migrations_apply_in_order_once(db):
    assert migrate(db, "svc", MIGRATIONS) == ["0001_pets", "0002_pet_size"]
    assert migrate(db, "svc", MIGRATIONS) == []
    with db.transaction() as cur:
        cur.execute("insert into svc.pets values (1, 'Mochi', 'small')")


def test_replicas_starting_together_apply_each_migration_once(db):
    results, errors = run_together(*[lambda: migrate(db, "svc", MIGRATIONS)] * 4)
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, 0, 2]


def test_a_failing_migration_leaves_no_partial_state_and_is_retried_next_start(db):
    broken = MIGRATIONS[:1] + [("0002_pet_size", "alter table pets add column size text; select * from nowhere")]
    with pytest.raises(psycopg2.errors.UndefinedTable):
        migrate(db, "svc", broken)
    assert applied(db, "svc") == ["0001_pets"]
    with db.transaction() as cur:
        cur.execute("select count(*) from information_schema.columns where table_name = 'pets' and column_name = 'size'")
        assert cur.fetchone()[0] == 0
    assert migrate(db, "svc", MIGRATIONS) == ["0002_pet_size"]
