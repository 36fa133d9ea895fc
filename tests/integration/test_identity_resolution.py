"""Resolution in Postgres: idempotent, and correct when consumers race."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.identity import handlers
from services.identity.settings import IdentitySettings
from shared.bus.consumer import Delivery
from shared.bus.outbox import OUTBOX_MIGRATION
from shared.db import Database, migrate, sql_files
from shared.events import from_document

from .conftest import settings_for
from .helpers import run_together, touchpoint_doc


@pytest.fixture
def db(service_env):
    database = Database(service_env["database_url"], maxconn=8)
    migrate(database, "identity", [OUTBOX_MIGRATION] + sql_files(Path(handlers.__file__).parent / "migrations"))
    yield database
    database.close()


@pytest.fixture
def settings(service_env):
    return settings_for(IdentitySettings, service_env)


def delivery(**kw):
    doc = {**touchpoint_doc(**kw), "tenant_id": "demo", "source": "test", "recorded_at": datetime.now(UTC).isoformat()}
    return Delivery(from_document(doc), "touchpoints.raw", 0, 0, {})


def count(db, sql):
    with db.transaction() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def test_a_redelivered_batch_changes_nothing(db, settings):
    batch = [delivery(phone="13912345678"), delivery(phone="13812345678")]
    handlers.resolve_touchpoints(batch, db, settings)
    handlers.resolve_touchpoints(batch, db, settings)
    assert count(db, "select count(*) from identity.customers") == 2
    assert count(db, "select count(*) from identity.outbox where topic = 'touchpoints.resolved'") == 2
    assert count(db, "select count(*) from identity.outbox where topic = 'customers.changes'") == 2


def test_events_sharing_a_phone_resolve_to_one_customer_whatever_its_format(db, settings):
    handlers.resolve_touchpoints([delivery(phone="139 1234 5678")], db, settings)
    handlers.resolve_touchpoints([delivery(phone="+86-139-1234-5678")], db, settings)
    assert count(db, "select count(distinct customer_id) from identity.resolved_events") == 1


def test_consumers_racing_on_the_same_new_identifier_create_one_customer(db, settings):
    # Several partitions resolving at once, each with an event for the same new person.
    rounds = 15
    for i in range(rounds):
        phone = f"1391234{i:04d}"
        _, errors = run_together(*[lambda: handlers.resolve_touchpoints([delivery(phone=phone)], db, settings)] * 4)
        assert not errors
    assert count(db, "select count(*) from identity.customers") == rounds
    assert count(db, "select count(distinct customer_id) from identity.resolved_events") == rounds


def test_crossing_batches_that_share_identifiers_in_opposite_order_do_not_deadlock(db, settings):
    a, b = "13900000001", "13900000002"

    def resolve_pairs(first, second):
        for _ in range(10):
            handlers.resolve_touchpoints([delivery(phone=first), delivery(phone=second)], db, settings)

    _, errors = run_together(lambda: resolve_pairs(a, b), lambda: resolve_pairs(b, a))
    assert not errors
    assert count(db, "select count(*) from identity.customers") == 2
