"""Small helpers for integration tests (real engines only)."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

from kafka import KafkaConsumer


def wait_until(predicate, timeout_s: float = 30, interval_s: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{message} not reached within {timeout_s}s")


def read_available(bootstrap: str, topic: str, idle_ms: int = 3000) -> list:
    """Every record of a topic from the beginning, until none arrives for `idle_ms`."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=idle_ms)
    try:
        return list(consumer)
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list:
    """Read a topic from the beginning until `expected` records arrived (counts records instead of
    trusting ListOffsets, which the embedded broker reports wrongly)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=500)
    records, deadline = [], time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def touchpoint_doc(phone: str = "13912345678", **overrides) -> dict:
    doc = {
        "event_id": str(uuid.uuid4()), "type": "store.visited", "occurred_at": datetime.now(UTC).isoformat(),
        "channel": "walk_in", "store_id": "sh-jingan", "identifiers": [{"type": "phone", "value": phone}],
    }
    return {**doc, **overrides}


def run_together(*calls, timeout_s: float = 60) -> tuple[list, list[Exception]]:
    """Run the callables in threads released at the same instant; their results and errors."""
    import threading

    barrier = threading.Barrier(len(calls))
    results, errors = [], []

    def run(call):
        try:
            barrier.wait()
            results.append(call())
        except Exception as exc:  # surfaced to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    return results, errors


def walk_as_another_tenant(client, headers: dict, ids: dict[str, str], secrets: set[str], *,
                           bodies: dict | None = None, params: dict | None = None,
                           shared_names: frozenset = frozenset({"store_id", "event_type"}),
                           skip: frozenset = frozenset({"/metrics", "/healthz", "/readyz"})) -> int:
    """Call every route of the app with another tenant's key: path parameters filled with this tenant's
    ids, the given bodies (valid, so validation cannot hide a missing tenant check). No answer may
    contain any of `secrets`, and a route about one of this tenant's resources must answer 403 or 404
    (a parameter in `shared_names` names the other tenant's own thing: a store id is per tenant).
    Returns how many calls were made."""
    import re

    from tests.unit.test_every_route_checks_its_caller import routes

    bodies, params, walked = bodies or {}, params or {}, 0
    for method, path, _ in routes(client.app):
        if path in skip or ("{" not in path and method != "GET" and path not in bodies):
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        body = bodies.get(path, {} if method in ("POST", "PUT", "PATCH") else None)  # {}: a body of defaults
        response = client.request(method, url, headers=headers, json=body, params=params.get(path))
        walked += 1
        sent = url + str(bodies.get(path)) + str(params.get(path))  # echoing what the caller sent leaks nothing
        leaked = [s for s in secrets if s in response.text and s not in sent]
        assert not leaked, f"{method} {path} showed the other tenant's {leaked}: {response.text[:300]}"
        names = set(re.findall(r"\{(\w+)\}", path))
        if names - shared_names:
            assert response.status_code in (403, 404), f"{method} {path} answered {response.status_code}"
    return walked


def resolved_customer(identity, phone: str, headers: dict) -> str:
    """Post a store visit with the phone through identity's API and wait until it resolves: its customer id."""
    from datetime import UTC, datetime
    from uuid import uuid4

    event = {"event_id": str(uuid4()), "type": "store.visited", "occurred_at": datetime.now(UTC).isoformat(),
             "channel": "walk_in", "store_id": "s1", "identifiers": [{"type": "phone", "value": phone}]}
    assert identity.post("/v1/touchpoints", json={"events": [event]}, headers=headers).json()["accepted"] == 1

    def found():
        r = identity.get("/v1/customers/lookup", params={"type": "phone", "value": phone}, headers=headers)
        return r.json()["customer_id"] if r.status_code == 200 else None

    return wait_until(found, 30, message="the customer resolved")


def start_until_it_waits_on_a_row(cur, work) -> tuple[threading.Thread, list[Exception]]:
    """Run `work` in a thread until it waits for a row lock that `cur`'s open transaction holds (in this
    database: tests run in parallel on one server). Returns the thread, for the caller to join, and the
    exceptions `work` raised."""
    failures: list[Exception] = []

    def run():
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - the caller asserts there were none
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    for _ in range(200):
        cur.execute("select count(*) from pg_locks l join pg_stat_activity a using (pid) where not l.granted "
                    "and l.locktype = 'transactionid' and a.datname = current_database()")
        if cur.fetchone()[0]:
            break
        worker.join(0.05)
    return worker, failures
