"""Webhook delivery benchmark against a real Postgres and real local HTTP receivers.

A fresh database gets identity's schema; --customers customers are written straight into it (the bench
measures delivery, not resolution), all consenting to marketing_sms. Then:

  (a) fan-out   --events customer.lifecycle_changed events through the consumer's handler
                (services.identity.webhooks.fanout.enqueue_deliveries) in batches of 1000: rows queued/s
  (b) delivery  the dispatcher (the same class identity runs, real clock, default concurrency) sends
                them to a fast receiver in another process (asyncio, keep-alive, answers 204): from the
                dispatcher's start until every delivery is marked delivered in Postgres, deliveries/s,
                and the CPU of this process and the receiver's
  (c) isolation the same again with two more subscriptions, one whose receiver is down (connection
                refused) and one whose receiver hangs past the timeout: the healthy subscriber's rate

Prints the results and writes bench/webhooks.json. Usage:
  python -m bench.webhooks [--events 40000] [--customers 4000] [--skip isolation] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import fresh_database, process_cpu_s, run_info  # noqa: E402
from services.identity.pii import Vault  # noqa: E402
from services.identity.settings import IdentitySettings  # noqa: E402
from services.identity.app import dispatch_policy  # noqa: E402
from services.identity.webhooks import subscriptions  # noqa: E402
from services.identity.webhooks.dispatcher import Dispatcher  # noqa: E402
from services.identity.webhooks.fanout import enqueue_deliveries  # noqa: E402
from shared.bus.consumer import Delivery  # noqa: E402
from shared.bus.outbox import OUTBOX_MIGRATION  # noqa: E402
from shared.db import Database, migrate, sql_files  # noqa: E402
from shared.events.scores import CustomerLifecycleChanged, LifecycleChangedPayload  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET_PER_S = 2000
_RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


def serve(port_out, count, mode: str) -> None:
    """A receiver that parses just enough HTTP/1.1 to answer every request on a kept-alive connection."""
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if mode == "hang":
                    await asyncio.sleep(3600)
                with count.get_lock():
                    count.value += 1
                writer.write(_RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_out.value = server.sockets[0].getsockname()[1]
        await server.serve_forever()

    asyncio.run(main())


def start_receiver(mode: str = "ok"):
    port, count = multiprocessing.Value("i", 0), multiprocessing.Value("q", 0)
    process = multiprocessing.Process(target=serve, args=(port, count, mode), daemon=True)
    process.start()
    while not port.value:
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port.value}/hook", count


def seed_customers(db: Database, n: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    now = datetime.now(UTC)
    with db.transaction() as cur:
        cur.execute("insert into identity.customers (customer_id, tenant_id, first_event_id) "
                    "select id, 'bench', id from unnest(%s::uuid[]) id", (ids,))
        cur.execute("insert into identity.consents (consent_id, tenant_id, customer_id, purpose, granted, source, "
                    "effective_at) select gen_random_uuid(), 'bench', id, 'marketing_sms', true, 'bench', %s "
                    "from unnest(%s::uuid[]) id", (now, ids))
    return ids


def subscribe(db: Database, vault: Vault, url: str) -> uuid.UUID:
    request = subscriptions.SubscriptionRequest(url=url, event_types=["customer.lifecycle_changed"],
                                                purpose="marketing_sms")
    with db.transaction() as cur:
        created, _ = subscriptions.create(cur, vault, "bench", request, datetime.now(UTC))
    return created["subscription_id"]


def fan_out(db: Database, customers: list[uuid.UUID], events: int) -> dict:
    now = datetime.now(UTC)
    batch, queued, started = [], 0, time.perf_counter()
    for i in range(events):
        event = CustomerLifecycleChanged(
            event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id="bench", source="bench",
            customer_id=customers[i % len(customers)], payload=LifecycleChangedPayload(to_stage="at_risk", reason="b"))
        batch.append(Delivery(event, "customers.scores", 0, i, {}))
        if len(batch) == 1000 or i == events - 1:
            queued += enqueue_deliveries(batch, db)
            batch = []
    elapsed = time.perf_counter() - started
    return {"events": events, "rows_queued": queued, "seconds": round(elapsed, 2),
            "rows_per_s": round(queued / elapsed)}


def delivered(db: Database, subscription_id: uuid.UUID) -> int:
    with db.transaction() as cur:
        cur.execute("select count(*) from identity.webhook_deliveries where subscription_id = %s and "
                    "state = 'delivered'", (subscription_id,))
        return cur.fetchone()[0]


def deliver(db: Database, vault: Vault, subscription_id: uuid.UUID, expected: int, count) -> dict:
    policy = dispatch_policy(IdentitySettings(webhook_timeout_s=2.0))
    dispatcher = Dispatcher(db, vault, policy)
    cpu_before, started = process_cpu_s(os.getpid()), time.perf_counter()
    dispatcher.start()
    try:
        while delivered(db, subscription_id) < expected:
            time.sleep(0.2)
            if time.perf_counter() - started > 600:
                raise RuntimeError("not delivered within 10 minutes")
        elapsed = time.perf_counter() - started
    finally:
        dispatcher.stop()
    return {"deliveries": expected, "received": count.value, "seconds": round(elapsed, 2),
            "deliveries_per_s": round(expected / elapsed),
            "dispatcher_cpu_s": round(process_cpu_s(os.getpid()) - cpu_before, 1),
            "concurrency_per_subscription": policy.concurrency}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--customers", type=int, default=4_000)
    parser.add_argument("--skip", action="append", default=[])
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    vault = Vault("bench-only-master-key")
    results: dict = {}
    with fresh_database(keep=args.keep) as bench:
        db = Database(bench.dsn, maxconn=8, application_name="bench-webhooks", search_path="identity")
        migrate(db, "identity", [OUTBOX_MIGRATION] + sql_files(ROOT / "services" / "identity" / "migrations"))
        results["run"] = run_info(bench, {"deliveries_per_s": TARGET_PER_S})
        customers = seed_customers(db, args.customers)

        receiver, url, count = start_receiver()
        healthy = subscribe(db, vault, url)
        results["fan_out"] = fan_out(db, customers, args.events)
        print("fan-out", results["fan_out"], flush=True)
        receiver_cpu = process_cpu_s(receiver.pid)
        results["delivery"] = deliver(db, vault, healthy, args.events, count)
        results["delivery"]["receiver_cpu_s"] = round(process_cpu_s(receiver.pid) - receiver_cpu, 1)
        results["delivery"]["met"] = results["delivery"]["deliveries_per_s"] >= TARGET_PER_S
        print("delivery", results["delivery"], flush=True)

        if "isolation" not in args.skip:
            hanging, hanging_url, _ = start_receiver("hang")
            down_url = "http://127.0.0.1:9/hook"  # the discard port: nothing listens, connection refused
            for bad in (hanging_url, down_url):
                subscribe(db, vault, bad)
            second = subscribe(db, vault, url)
            with db.transaction() as cur:  # only new events reach the new subscriptions
                cur.execute("update identity.webhook_subscriptions set state = 'paused' where subscription_id = %s",
                            (healthy,))
            count.value = 0
            fan_out(db, customers, args.events)
            results["isolation"] = deliver(db, vault, second, args.events, count)
            results["isolation"]["other_subscribers"] = "one refusing connections, one hanging past the timeout"
            results["isolation"]["met"] = results["isolation"]["deliveries_per_s"] >= TARGET_PER_S
            print("isolation", results["isolation"], flush=True)
            hanging.terminate()
        receiver.terminate()
        db.close()
    (ROOT / "bench" / "webhooks.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
