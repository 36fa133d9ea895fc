"""Loyalty benchmark against a real Postgres: a fresh database is created (and dropped at the end) on
DATABASE_URL's server, or on the local one at postgresql://postgres@127.0.0.1:5432/postgres, and given
loyalty's schema by the service's own start-up (shared.runtime.ServiceRuntime.start_database).

  (a) postings  resolved touchpoints (as identity republishes them: with the canonical customer id) of
                --customers customers, over the last 300 days: 55% purchase.completed, 30%
                booking.completed, 10% survey.answered, 5% refund.issued of an earlier purchase of the
                same customer (70% full, 30% partial), through services.loyalty.handlers.apply_touchpoints
                in batches of --batch (the consumer's max_records), one transaction each, from --workers
                processes that each own a share of the customers and their own Database (as Kafka
                partitions keyed by customer id), all started together: ledger entries posted per second
                (count(*) of loyalty.entries), events per second, batch latency, CPU of the workers and
                of Postgres; then a check that every member's balance is the sum of their entries
  (b) reads     GET /v1/members/{customer_id} for random members from (a) against `hub serve loyalty`
                (uvicorn, one process, LOYALTY_RUN_WORKERS=false, an embedded broker for its start-up; see
                bench.common.running_service): first --sequential-calls one at a time (the floor under the
                latency), then open-loop at each of --rates for --read-seconds from --clients processes
                (asyncio, keep-alive connections; see bench.common.Connection for why not httpx). Latency is taken from
                each request's scheduled send time, so a server (or client) that falls behind shows as
                latency and not as a politely lower rate; `service_latency` is from the actual send. A
                request due while --max-in-flight are outstanding is shed (counted, not sent): an
                overloaded server shows as shed requests
  profile       --profile-events more events through apply_touchpoints in-process, every statement counted
                and timed by caller (bench.common.CountingCursor): statements, SQL, commit and Python per event

Prints the results and writes bench/loyalty.json. Usage:
  python -m bench.loyalty [--events 100000] [--customers 20000] [--workers 2] [--batch 500]
                          [--rates 100,500,1000] [--read-seconds 15] [--clients 2] [--sequential-calls 1000]
                          [--max-in-flight 64] [--profile-events 2000] [--skip postings|reads|profile]
                          [--py-spy] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import traceback
import uuid
from functools import partial
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/loyalty.py` finds bench.common

from bench.common import (  # noqa: E402
    ROOT, CountingCursor, connections, fresh_database, machine_load, open_loop, percentiles, postgres_cpu_s,
    run_info, run_workers, running_service,
)
from services.loyalty import handlers  # noqa: E402
from services.loyalty.settings import LoyaltySettings  # noqa: E402
from shared.bus.consumer import Delivery  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.events import from_document  # noqa: E402
from shared.runtime import ServiceRuntime  # noqa: E402

TENANT = "bench"
SCHEMA = "loyalty"
TOPIC = "touchpoints.resolved"
HISTORY_DAYS = 300  # inside the 12-month expiry and tier window: every earn still counts
STORES = [f"store-{i:03d}" for i in range(40)]


def customer_id(i: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"hub-bench-loyalty/{i}")


# --- (a) postings ------------------------------------------------------------------------------------

def touchpoints(worker: int, workers: int, customers: int, n: int, seed: int = 11) -> tuple[list, dict]:
    """This worker's `n` events, oldest first, for the customers i with i % workers == worker."""
    rnd = random.Random(seed * 1000 + worker)
    mine = range(worker, customers, workers)
    orders: dict[int, list[tuple[str, int]]] = {}  # purchases not yet refunded, per customer
    start = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
    step = timedelta(days=HISTORY_DAYS) / max(n, 1)
    recorded = datetime.now(UTC).isoformat()
    events, kinds = [], {}
    for k in range(n):
        i = rnd.choice(mine)
        r = rnd.random()
        if r < 0.05 and orders.get(i):
            order_id, amount = orders[i].pop(rnd.randrange(len(orders[i])))
            kind, payload = "refund.issued", {"order_id": order_id, "amount_minor": amount if rnd.random() < 0.7
                                              else rnd.randint(1, amount)}
        elif r < 0.60:  # (a refund with no purchase to refund becomes a purchase)
            amount = rnd.randint(30, 800) * 100
            order_id = f"o{seed}-{worker}-{k}"  # unique per call: a refund must name one order
            orders.setdefault(i, []).append((order_id, amount))
            kind, payload = "purchase.completed", {"order_id": order_id, "amount_minor": amount}
        elif r < 0.90:
            at = (start + step * k).isoformat()
            kind, payload = "booking.completed", {
                "appointment_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "service_id": "full-groom",
                "starts_at": at, "ends_at": at, "local_start": at, "amount_minor": rnd.randint(120, 400) * 100,
                "services_performed": ["full-groom"], "performed_by": "groomer-1"}
        else:
            kind, payload = "survey.answered", {"nps": rnd.randint(0, 10)}
        kinds[kind] = kinds.get(kind, 0) + 1
        cid = customer_id(i)
        events.append(from_document({
            "event_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "type": kind,
            "occurred_at": (start + step * k).isoformat(), "recorded_at": recorded, "channel": "pos",
            "source": "pos", "store_id": rnd.choice(STORES), "tenant_id": TENANT, "customer_id": str(cid),
            "identifiers": [{"type": "member_card", "value": f"card-{i}"}], "payload": payload}))
    return events, kinds


def _posting_worker(dsn: str, worker: int, workers: int, customers: int, n: int, batch: int, barrier,
                    results) -> None:
    try:
        events, kinds = touchpoints(worker, workers, customers, n)
        db = Database(dsn, maxconn=2, application_name=f"bench-loyalty-{worker}", search_path=SCHEMA)
        with db.transaction() as cur:  # the connection open before the clock starts
            cur.execute("select 1")
        barrier.wait()
        lat = []
        cpu0 = time.process_time()
        started = time.perf_counter()
        for offset in range(0, n, batch):
            # what the consumer loop hands the handler: one poll's records of this worker's partition
            deliveries = [Delivery(e, TOPIC, worker, offset + j, {})
                          for j, e in enumerate(events[offset:offset + batch])]
            t = time.perf_counter()
            handlers.apply_touchpoints(deliveries, db=db)
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        results.put({"worker": worker, "events": n, "kinds": kinds, "elapsed": elapsed,
                     "cpu": time.process_time() - cpu0, "batches": lat})
        barrier.wait()  # keep the backend until the parent has sampled Postgres' CPU
        db.close()
    except BaseException:
        barrier.abort()  # the parent fails now instead of waiting for a worker that will never come
        results.put({"worker": worker, "error": traceback.format_exc()})
        raise


def bench_postings(db: Database, dsn: str, events: int, customers: int, workers: int, batch: int) -> dict:
    shares = [events // workers + (w < events % workers) for w in range(workers)]
    run = run_workers(dsn, _posting_worker, [(dsn, w, workers, customers, shares[w], batch) for w in range(workers)],
                      "posting", load_after_s=10)
    parts, elapsed, pg_cpu, load = run.parts, run.elapsed_s, run.postgres_cpu_s, run.load
    with db.transaction() as cur:
        cur.execute("select kind, count(*) from entries group by 1 order by 2 desc")
        by_kind = dict(cur.fetchall())
        cur.execute("select count(*), count(*) filter (where tier <> 'silver') from members")
        members, above_entry_tier = cur.fetchone()
        cur.execute("select count(*) from pending_reversals")
        pending = cur.fetchone()[0]
        # the ledger's invariant: every stored balance is the sum of the member's entries
        cur.execute("select count(*) from members m left join (select customer_id, sum(points) total from entries "
                    "group by 1) e using (customer_id) where m.balance <> coalesce(e.total, 0)")
        wrong_balances = cur.fetchone()[0]
    postings = sum(by_kind.values())
    kinds: dict[str, int] = {}
    for p in parts:
        for k, v in p["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    cpu = sum(p["cpu"] for p in parts)
    return {"via": "services.loyalty.handlers.apply_touchpoints, one transaction per batch, each worker its own "
                   "Database and customers", "workers": workers, "batch": batch, "customers": customers,
            "events": events, "event_kinds": kinds, "seconds": round(elapsed, 1),
            "postings": postings, "postings_by_kind": by_kind,
            "postings_per_s": round(postings / elapsed), "events_per_s": round(events / elapsed),
            "batch_latency": percentiles([x for p in parts for x in p["batches"]]),
            "per_worker_events_per_s": [round(p["events"] / p["elapsed"]) for p in parts],
            "worker_cpu_cores_busy": round(cpu / elapsed, 2),
            "worker_cpu_ms_per_event": round(cpu / events * 1000, 3),
            "postgres_cpu_cores_busy": round(pg_cpu / elapsed, 2),
            "postgres_cpu_ms_per_event": round(pg_cpu / events * 1000, 3),
            "load_during": load or None, "members": members, "members_above_entry_tier": above_entry_tier,
            "pending_reversals": pending, "members_with_wrong_balance": wrong_balances}


class CountingDatabase:
    """The `db` apply_touchpoints gets, with every statement of its transactions counted and timed."""

    def __init__(self, db: Database):
        self.db, self.by_label, self.statements, self.sql_s, self.commit_s = db, {}, 0, 0.0, 0.0

    @contextlib.contextmanager
    def transaction(self):
        with self.db.connection() as conn:
            with conn.cursor() as raw:
                cur = CountingCursor(raw, self.by_label)
                yield cur
            t = time.perf_counter()
            conn.commit()
            self.commit_s += time.perf_counter() - t
            self.statements += cur.statements
            self.sql_s += cur.sql_s


def profile_postings(db: Database, customers: int, events: int, batch: int) -> dict:
    """Where a posting batch's time goes, in-process and one worker: statements per event, time in them
    (driver round trip + server), the commit, and the rest (Python); each statement's share by caller.
    The events are new ones for the customers (a) enrolled, so members already hold a ledger."""
    counting = CountingDatabase(db)
    todo, _ = touchpoints(0, 1, customers, events, seed=12)
    pg0 = postgres_cpu_s(db.dsn)
    t = time.perf_counter()
    for offset in range(0, events, batch):
        handlers.apply_touchpoints([Delivery(e, TOPIC, 0, offset + j, {})
                                    for j, e in enumerate(todo[offset:offset + batch])], db=counting)
    total = time.perf_counter() - t
    pg_cpu = postgres_cpu_s(db.dsn) - pg0

    def per_event_ms(seconds: float) -> float:
        return round(seconds / events * 1000, 3)

    batches = -(-events // batch)
    return {"events": events, "batch": batch, "events_per_s_one_worker": round(events / total),
            "statements_per_batch": round(counting.statements / batches, 1), "ms_per_event": per_event_ms(total),
            "sql_ms_per_event": per_event_ms(counting.sql_s), "commit_ms_per_event": per_event_ms(counting.commit_s),
            "python_ms_per_event": per_event_ms(total - counting.sql_s - counting.commit_s),
            "postgres_cpu_ms_per_event": per_event_ms(pg_cpu),
            "statements": {label: {"per_batch": round(n / batches, 1), "ms_per_event": per_event_ms(spent)}
                           for label, (n, spent) in sorted(counting.by_label.items(), key=lambda kv: -kv[1][1])}}


# --- (b) member reads --------------------------------------------------------------------------------

def _member_request(ids: list[str], rnd: random.Random):
    return "GET", f"/v1/members/{rnd.choice(ids)}", None, "member"


def sequential_reads(http: dict, ids: list[str], calls: int) -> dict:
    """One connection, one request at a time: the floor under the latency."""
    async def run() -> dict:
        rnd = random.Random(5)
        conn = connections(http["base"], http["headers"], 1)[0]
        for _ in range(100):
            await conn.get(f"/v1/members/{rnd.choice(ids)}")
        lat = []
        started = time.perf_counter()
        for _ in range(calls):
            t = time.perf_counter()
            if (status := await conn.get(f"/v1/members/{rnd.choice(ids)}")) != 200:
                raise RuntimeError(f"GET /v1/members/{{id}} answered {status}")
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        conn.close()
        return {"via": "GET /v1/members/{customer_id}, one keep-alive connection, sequential",
                **percentiles(lat), "calls_per_s": round(calls / elapsed)}

    return asyncio.run(run())


def read_runs(args, bench, ids: list[str], workdir: Path) -> dict:
    out = {"server": "`hub serve loyalty` (uvicorn, 1 process)"}
    with running_service("loyalty", bench.dsn, workdir, tenant=TENANT, role="store_staff") as http:
        print(f"(b) GET /v1/members/{{id}} sequential, {args.sequential_calls} calls …", flush=True)
        out["sequential"] = sequential_reads(http, ids, args.sequential_calls)
        print(json.dumps(out["sequential"]), flush=True)
        out["open_loop"] = []
        for rate in [float(r) for r in args.rates.split(",")]:
            print(f"(b) GET /v1/members/{{id}} at {rate:g}/s for {args.read_seconds:g}s, {args.clients} clients …",
                  flush=True)
            spy = workdir / f"server-reads-{rate:g}.txt" if args.py_spy else None
            run = {"via": "open loop, keep-alive connections (bench.loyalty.Connection)", "members": len(ids),
                   **open_loop(http, bench, partial(_member_request, ids), rate, args.read_seconds, args.clients,
                               args.max_in_flight, spy)}
            out["open_loop"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "server_profile"}, indent=2), flush=True)
    return out


# --- main ----------------------------------------------------------------------------------------------

def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="Touchpoints posted in (a), all workers.")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="Posting processes (partitions).")
    parser.add_argument("--batch", type=int, default=500, help="Events per apply_touchpoints call (max_records).")
    parser.add_argument("--rates", default="100,500,1000",
                        help="Member reads per second, a comma list run in turn.")
    parser.add_argument("--sequential-calls", type=int, default=1000, help="Sequential reads before the rates.")
    parser.add_argument("--read-seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=2, help="HTTP client processes.")
    parser.add_argument("--max-in-flight", type=int, default=64,
                        help="Requests a client keeps outstanding; one due beyond that is shed (counted).")
    parser.add_argument("--profile-events", type=int, default=2000, help="Events of the SQL profile of (a).")
    parser.add_argument("--skip", choices=["postings", "reads", "profile"], action="append", default=[])
    parser.add_argument("--py-spy", action="store_true", help="py-spy the HTTP server during each read run.")
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    args = parser.parse_args()

    with fresh_database(args.keep) as bench:
        result = {**run_info(bench, {"postings_per_s": 2_000, "member_read_p99_ms": 20}),
                  "command": "python -m bench.loyalty " + " ".join(sys.argv[1:]), "load_at_start": machine_load()}
        # the schema as the service's start creates it: the outbox migration plus migrations/*.sql
        runtime = ServiceRuntime(LoyaltySettings(database_url=bench.dsn), schema=SCHEMA,
                                 migrations_dir=ROOT / "services" / "loyalty" / "migrations")
        db = runtime.start_database()
        workdir = Path(tempfile.mkdtemp(prefix="hub-bench-loyalty-"))
        try:
            if "postings" not in args.skip:
                print(f"(a) {args.events:,} touchpoints for {args.customers:,} customers, {args.workers} workers, "
                      f"batches of {args.batch} …", flush=True)
                result["postings"] = bench_postings(db, bench.dsn, args.events, args.customers, args.workers,
                                                    args.batch)
                print(json.dumps(result["postings"], indent=2), flush=True)
            with db.transaction() as cur:
                cur.execute("select customer_id::text from members where status = 'active'")
                ids = [r[0] for r in cur.fetchall()]
            if "reads" not in args.skip and not ids:
                print("(b) skipped: reads need the members (a) enrols", flush=True)
            elif "reads" not in args.skip:
                result["reads"] = read_runs(args, bench, ids, workdir)
            if "profile" not in args.skip and ids:
                print(f"profile: SQL statements per event over {args.profile_events:,} more events …", flush=True)
                result["postings_profile"] = profile_postings(db, args.customers, args.profile_events, args.batch)
                print(json.dumps(result["postings_profile"], indent=2), flush=True)
            # a read rate is met only if every request was sent and answered, with p99 within target
            reads = result.get("reads", {}).get("open_loop", [])
            result["targets_met"] = {
                **({"postings_per_s": result["postings"]["postings_per_s"] >= 2_000} if "postings" in result else {}),
                **{f"member_read_p99_ms_at_{r['rate_asked']:g}_per_s": bool(r["latency"]) and not r["errors"]
                   and not r["shed"] and r["latency"]["p99_ms"] <= 20 for r in reads}}
            print(json.dumps({"targets_met": result["targets_met"]}), flush=True)
            result["load_at_end"] = machine_load()
        finally:
            runtime.stop()
    (ROOT / "bench" / "loyalty.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
