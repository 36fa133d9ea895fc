"""Faults while touchpoints pour in, on the stack `make run` starts: kill -9 of every service (the faust
worker runs inside insights), the broker killed (the embedded one forgets everything: the launcher
starts a new one and the outboxes replay), Postgres restarted without a checkpoint. Afterwards every
accepted touchpoint is in ClickHouse exactly once, no ledger entry is posted twice and every balance is
the sum of its entries, no two live appointments overlap, and each service became ready by itself.

`make test` runs one round; `make soak` runs rounds for HUB_SOAK_MINUTES with the simulator at a higher rate."""
from __future__ import annotations

import os
import random
import threading
import time

import httpx
import psycopg2
import pytest

from hub.simulate import generate
from tests.e2e.stack import SERVICES, Stack, temporary_home, wait_for

SOAK_MINUTES = float(os.environ.get("HUB_SOAK_MINUTES", "0"))
pytestmark = pytest.mark.e2e
DRILL_STORE = "fault-drill"
BACK_WITHIN_S = 180  # a restart on a busy 2-core machine; the measured times are printed


class Driver(threading.Thread):
    """Posts tagged touchpoints at a steady pace whatever happens to the stack, and keeps what the hub
    said: an event it answered accepted (or duplicate) must arrive; a refused connection never reached
    it; a timeout or a 5xx is ambiguous, so those events are looked up one by one at the end."""

    def __init__(self, stack: Stack, batch: int = 20, pause_s: float = 0.25):
        super().__init__(name="fault-driver", daemon=True)
        self.stack, self.batch, self.pause_s = stack, batch, pause_s
        self.accepted: set[str] = set()
        self.ambiguous: set[str] = set()
        self.refused = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        seed = 10_000
        with httpx.Client(timeout=20, headers=self.stack.headers) as client:
            while not self.stopping.is_set():
                seed += 1
                events = [{**e, "store_id": DRILL_STORE} for e in generate(self.batch, seed=seed)]
                ids = {e["event_id"] for e in events}
                try:
                    r = client.post(self.stack.url("identity") + "/v1/touchpoints", json={"events": events})
                except httpx.ConnectError:
                    self.refused += 1
                except httpx.TransportError:
                    self.ambiguous |= ids
                else:
                    if r.status_code >= 500:
                        self.ambiguous |= ids
                    else:
                        assert r.status_code == 200, r.text
                        self.accepted |= {x["event_id"] for x in r.json()["results"]
                                          if x["status"] in ("accepted", "duplicate")}
                self.stopping.wait(self.pause_s)


def stored_in_drill(stack: Stack) -> int:
    r = httpx.get(stack.url("insights") + "/v1/touchpoints/summary", headers=stack.headers, timeout=30)
    return r.json()["by_store"].get(DRILL_STORE, 0) if r.status_code == 200 else -1


def is_stored(stack: Stack, event_id: str) -> bool:
    return httpx.get(f"{stack.url('insights')}/v1/touchpoints/{event_id}", headers=stack.headers,
                     timeout=30).status_code == 200


def back_ready(stack: Stack, what: str, log: list) -> None:
    started = time.monotonic()
    assert wait_for(stack.all_ready, BACK_WITHIN_S), \
        f"after {what}: not ready: {[n for n in SERVICES if not stack.ready(n)]}"
    log.append((what, round(time.monotonic() - started, 1)))


def kill_service(stack: Stack, name: str, log: list) -> None:
    old = stack.child(name)
    old.kill()
    old.wait(30)
    # The launcher notices within a second; wait for the new process before asking for readiness.
    assert wait_for(lambda: _pid_of(stack, name) not in (None, old.pid), 60), f"{name} was not restarted"
    back_ready(stack, f"kill -9 {name}", log)


def _pid_of(stack: Stack, name: str) -> int | None:
    try:
        return stack.child(name).pid
    except LookupError:
        return None


def kill_broker(stack: Stack, log: list) -> None:
    broker = stack.child("broker")
    broker.kill()
    broker.wait(30)
    assert wait_for(lambda: _pid_of(stack, "broker") not in (None, broker.pid), 60), "no new broker"
    back_ready(stack, "kill -9 broker", log)


def restart_postgres(stack: Stack, log: list) -> None:
    from pgserver._commands import pg_ctl

    # -m immediate: no checkpoint, every backend dropped, crash recovery on start. As root, pgserver
    # runs the server as its own system user, so pg_ctl must run as that user too.
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-m", "immediate", "-w", "-l", str(stack.pgdata / "log"), "restart"], pgdata=stack.pgdata,
           user=user, timeout=60)
    back_ready(stack, "Postgres restart", log)


def one_round(stack: Stack, rnd: random.Random, log: list) -> None:
    for name in rnd.sample(SERVICES, len(SERVICES)):
        kill_service(stack, name, log)
        time.sleep(2)
    kill_broker(stack, log)
    time.sleep(5)
    restart_postgres(stack, log)


def sql(dsn: str, query: str):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


@pytest.fixture(scope="module")
def stack():
    with temporary_home("hub-faults-") as home:
        s = Stack(home)
        s.start(rate=60 if SOAK_MINUTES else 30)
        yield s
        if s.process and s.process.poll() is None:
            s.stop()


@pytest.mark.timeout(int(900 + SOAK_MINUTES * 60 * 1.5))  # every recovery may take minutes on a busy machine
def test_after_crashes_of_every_part_nothing_accepted_is_lost_or_doubled(stack):
    driver = Driver(stack)
    driver.start()
    recoveries: list[tuple[str, float]] = []
    rnd = random.Random(7)
    try:
        assert wait_for(lambda: len(driver.accepted) >= 200, 60), "ingestion did not start"
        deadline = time.monotonic() + SOAK_MINUTES * 60
        one_round(stack, rnd, recoveries)
        while time.monotonic() < deadline:
            one_round(stack, rnd, recoveries)
        time.sleep(5)  # ingestion continues on the recovered stack
    finally:
        driver.stopping.set()
        driver.join(60)
    print(f"\nrecoveries (s): {recoveries}\naccepted {len(driver.accepted)}, ambiguous "
          f"{len(driver.ambiguous)}, refused batches {driver.refused}")

    accepted = len(driver.accepted)
    assert wait_for(lambda: stored_in_drill(stack) >= accepted, 300), \
        f"only {stored_in_drill(stack)} of {accepted} accepted touchpoints reached ClickHouse"
    ambiguous_stored = sum(is_stored(stack, e) for e in driver.ambiguous - driver.accepted)
    time.sleep(3)
    assert stored_in_drill(stack) == accepted + ambiguous_stored, "each accepted touchpoint exactly once"
    missing = [e for e in rnd.sample(sorted(driver.accepted), 50) if not is_stored(stack, e)]
    assert not missing, f"accepted but not stored: {missing}"


def test_no_ledger_entry_is_posted_twice_and_every_balance_is_its_entries(stack):
    dsn = stack.postgres_dsn()
    assert sql(dsn, "select count(*) from loyalty.entries")[0][0] > 0, "the simulated chain earned nothing"
    doubled = sql(dsn, "select source_event_id, kind, count(*) from loyalty.entries where source_event_id is "
                       "not null and kind in ('earn', 'reverse') group by 1, 2 having count(*) > 1")
    assert doubled == []
    off = sql(dsn, "select m.customer_id, m.balance, coalesce(sum(e.points), 0) from loyalty.members m "
                   "left join loyalty.entries e on e.customer_id = m.customer_id "
                   "group by m.customer_id, m.balance having m.balance <> coalesce(sum(e.points), 0)")
    assert off == []


def test_no_two_live_appointments_overlap(stack):
    dsn = stack.postgres_dsn()
    live = "('held', 'confirmed', 'checked_in', 'completed')"
    assert sql(dsn, f"select count(*) from booking.appointments where status in {live}")[0][0] > 0, \
        "the simulated front desk booked nothing"
    overlaps = sql(dsn, f"""
        select a.appointment_id, b.appointment_id from booking.appointments a
        join booking.appointments b on a.appointment_id < b.appointment_id and a.occupied && b.occupied
         and (a.staff_key = b.staff_key
              or (a.resource_key = b.resource_key and a.resource_unit = b.resource_unit))
        where a.status in {live} and b.status in {live}""")
    assert overlaps == []


def test_every_service_is_ready_and_nothing_is_stuck_in_an_outbox(stack):
    # the drill's own bar: one /readyz probe (2 s) can miss under CI's load, a stuck service cannot pass
    assert wait_for(stack.all_ready, BACK_WITHIN_S), f"not ready: {[n for n in SERVICES if not stack.ready(n)]}"
    dsn = stack.postgres_dsn()
    assert wait_for(lambda: sum(sql(dsn, f"select count(*) from {schema}.outbox where published_at is null")[0][0]
                                for schema in ("identity", "booking", "loyalty", "feedback")) == 0, 120)


def test_the_new_broker_has_every_topic_with_its_registered_partitions(stack):
    """Clients of the lost broker that reach the new one would create topics with the broker's default
    partition count (and commit offsets of the lost broker into its groups)."""
    from kafka.admin import KafkaAdminClient

    from shared.topics import all_topics

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{stack.env['HUB_KAFKA_PORT']}")
    try:
        found = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()
    wanted = {spec.name: spec.partitions for spec in all_topics()}
    assert {name: found.get(name) for name in wanted} == wanted
