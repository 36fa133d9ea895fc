"""Resolution in Postgres: idempotent, merges that survive races, households, and the stored decisions."""
from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from psycopg2.extensions import TransactionRollbackError

from services.identity import resolution, store
from services.identity.pii import Vault
from services.identity.policy import TenantPolicy, TypePolicy
from services.identity.settings import IdentitySettings
from shared.bus.consumer import Delivery
from shared.bus.outbox import OUTBOX_MIGRATION
from shared.db import Database, migrate, sql_files
from shared.events import decode, from_document

from .conftest import settings_for
from .helpers import run_together, touchpoint_doc


@pytest.fixture
def db(service_env):
    database = Database(service_env["database_url"], maxconn=12)
    migrate(database, "identity", [OUTBOX_MIGRATION] + sql_files(Path(resolution.__file__).parent / "migrations"))
    yield database
    database.close()


@pytest.fixture
def settings(service_env):
    return settings_for(IdentitySettings, service_env)


@pytest.fixture
def resolve(db, settings):
    vault = Vault("test-pii-key")

    def run(*deliveries):
        for attempt in range(10):  # what the consumer loop does with a deadlock victim
            try:
                return resolution.resolve_touchpoints(list(deliveries), db, settings, vault)
            except TransactionRollbackError:
                if attempt == 9:
                    raise
    return run


def delivery(identifiers=None, **kw):
    doc = {**touchpoint_doc(**kw), "tenant_id": kw.pop("tenant_id", "demo"), "source": "test",
           "recorded_at": datetime.now(UTC).isoformat()}
    if identifiers:
        doc["identifiers"] = [{"type": t, "value": v} for t, v in identifiers]
    return Delivery(from_document(doc), "touchpoints.raw", 0, 0, {})


def rows(db, sql, *args):
    with db.transaction() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def count(db, sql, *args):
    return rows(db, sql, *args)[0][0]


def customer_of(db, event):
    return count(db, "select coalesce(c.merged_into, c.customer_id) from identity.resolved_events r "
                     "join identity.customers c using (customer_id) where r.event_id = %s", event.event.event_id)


def test_a_redelivered_batch_changes_nothing(db, resolve):
    batch = [delivery(phone="13912345678"), delivery(phone="13812345678")]
    resolve(*batch)
    resolve(*batch)
    assert count(db, "select count(*) from identity.customers") == 2
    assert count(db, "select count(*) from identity.outbox where topic = 'touchpoints.resolved'") == 2
    assert count(db, "select count(*) from identity.outbox where topic = 'customers.changes'") == 2


def test_events_sharing_a_phone_resolve_to_one_customer_whatever_its_format(db, resolve):
    resolve(delivery(phone="139 1234 5678"))
    resolve(delivery(phone="+86-139-1234-5678"))
    assert count(db, "select count(distinct customer_id) from identity.resolved_events") == 1


def test_identifier_values_are_stored_only_encrypted_and_published_only_as_tokens(db, resolve):
    resolve(delivery(identifiers=[("phone", "13912345678"), ("email", "lily@example.cn")]))
    dump = str(rows(db, "select * from identity.identifiers")) + str([bytes(b) for (b,) in rows(db, "select body from identity.outbox")])
    assert "13912345678" not in dump and "lily@example.cn" not in dump
    published = [decode(bytes(p)) for (p,) in rows(db, "select body from identity.outbox "
                                                     "where topic = 'touchpoints.resolved'")]
    assert all(i.value.startswith("tok:") for i in published[0].identifiers)


def test_a_touchpoint_linking_two_profiles_merges_them_into_the_older_and_records_the_decision(db, resolve):
    app_event, pos_event = delivery(phone="13912345678"), delivery(identifiers=[("email", "lily@example.cn")])
    resolve(app_event)
    resolve(pos_event)
    older, newer = customer_of(db, app_event), customer_of(db, pos_event)
    link = delivery(identifiers=[("phone", "13912345678"), ("email", "lily@example.cn")])
    resolve(link)
    assert customer_of(db, pos_event) == customer_of(db, link) == older
    assert rows(db, "select status, merged_into from identity.customers where customer_id = %s", newer) == [
        ("merged", older)]
    (decision,) = rows(db, "select kind, rule, customer_id, other_customer_ids, triggering_event_ids, evidence "
                           "from identity.decisions")
    assert decision[:5] == ("merge", "shared_strong_identifier", older, [newer], [link.event.event_id])
    assert {e["type"] for e in decision[5]} == {"phone", "email"}
    merged = [decode(bytes(p)) for (p,) in rows(db, "select body from identity.outbox where topic = "
                                                    "'customers.changes' and event_type = 'customer.merged'")]
    assert [(m.customer_id, m.payload.merged_customer_ids) for m in merged] == [(older, (newer,))]


def test_two_consumers_racing_to_merge_the_same_pair_merge_it_once(db, resolve):
    for i in range(8):
        phone, email = f"1391234{i:04d}", f"p{i}@example.cn"
        resolve(delivery(phone=phone))
        resolve(delivery(identifiers=[("email", email)]))
        _, errors = run_together(*[lambda: resolve(delivery(identifiers=[("phone", phone), ("email", email)]))] * 3)
        assert not errors
    assert count(db, "select count(*) from identity.customers where status = 'active'") == 8
    assert count(db, "select count(*) from identity.decisions where kind = 'merge'") == 8


def test_a_merge_chain_resolved_by_racing_partitions_in_shuffled_order_is_one_customer(db, resolve):
    with db.transaction() as cur:  # six e-mail addresses per person must be allowed for one chain to be one person
        store.save_policy(cur, "demo", TenantPolicy(types={"email": TypePolicy(max_per_profile=10)}))
    rnd = random.Random(7)
    for chain in range(4):
        ids = [("email", f"c{chain}-{n}@example.cn") for n in range(6)]
        events = [delivery(identifiers=[i]) for i in ids]
        events += [delivery(identifiers=[a, b]) for a, b in itertools.pairwise(ids)]
        rnd.shuffle(events)
        lanes = [events[n::3] for n in range(3)]  # three partitions, each in its own order
        _, errors = run_together(*[lambda lane=lane: [resolve(e) for e in lane] for lane in lanes])
        assert not errors
        assert len({customer_of(db, e) for e in events}) == 1


def test_merged_ids_keep_resolving_to_the_survivor_after_a_second_merge(db, resolve):
    a, b, c = delivery(phone="13900000001"), delivery(phone="13900000002"), delivery(phone="13900000003")
    for e in (a, b, c):
        resolve(e)
    resolve(delivery(identifiers=[("phone", "13900000002"), ("phone", "13900000003")]))
    resolve(delivery(identifiers=[("phone", "13900000001"), ("phone", "13900000003")]))
    survivor = customer_of(db, a)
    assert rows(db, "select distinct merged_into from identity.customers where status = 'merged'") == [(survivor,)]


def test_a_family_phone_makes_a_household_not_a_mega_profile(db, resolve):
    mom = delivery(identifiers=[("phone", "13912345678"), ("app_user_id", "mom-1")])
    dad = delivery(identifiers=[("phone", "13912345678"), ("app_user_id", "dad-1")])
    resolve(mom)
    resolve(dad)
    assert customer_of(db, mom) != customer_of(db, dad)
    households = rows(db, "select household_id from identity.customers where customer_id in (%s, %s)",
                      customer_of(db, mom), customer_of(db, dad))
    assert len({h for (h,) in households}) == 1 and households[0][0] is not None
    assert count(db, "select count(*) from identity.decisions where kind = 'household'") == 1
    assert count(db, "select shared from identity.identifiers where id_type = 'phone'") is True


def test_no_operation_merges_customers_of_two_tenants(db, resolve):
    resolve(delivery(phone="13912345678", tenant_id="chain-a"))
    resolve(delivery(identifiers=[("phone", "13912345678"), ("email", "x@example.cn")], tenant_id="chain-b"))
    assert count(db, "select count(*) from identity.customers where status = 'active'") == 2
    assert count(db, "select count(*) from identity.decisions") == 0


def _queued_after(db, resolve, identifiers):
    """Resolve a first touchpoint carrying `identifiers`, empty the match queue, and return a check of
    whether that profile is queued again."""
    first = delivery(identifiers)
    resolve(first)
    cid = customer_of(db, first)
    assert count(db, "select count(*) from identity.match_queue where customer_id = %s", cid) == 1  # new
    with db.transaction() as cur:
        cur.execute("delete from identity.match_queue")
    return lambda: count(db, "select count(*) from identity.match_queue where customer_id = %s", cid) == 1


def test_a_profile_is_queued_for_matching_when_what_matching_compares_changes_not_on_every_visit(db, resolve):
    """A car seen again under its known plate adds nothing to compare; a new plate does."""
    queued = _queued_after(db, resolve, [("phone", "13912345991"), ("license_plate", "沪A12345")])
    resolve(delivery([("phone", "13912345991"), ("license_plate", "沪A 12345")]))
    assert not queued()
    resolve(delivery([("phone", "13912345991"), ("license_plate", "沪B67890")]))
    assert queued()


def test_a_profile_is_queued_for_matching_when_it_gains_a_phone_or_email(db, resolve):
    """Near-identical phones and e-mails are what matching compares: a new one (it may be one character
    off another customer's) queues the profile; a new app account does not."""
    queued = _queued_after(db, resolve, [("phone", "13912345992")])
    resolve(delivery([("phone", "13912345992"), ("app_user_id", "u-992")]))
    assert not queued()
    resolve(delivery([("phone", "13912345992"), ("email", "mei.lin@example.com")]))
    assert queued()
