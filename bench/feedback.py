"""Feedback benchmark against a real Postgres: a fresh database is created (and dropped at the end) on
DATABASE_URL's server, or on the local one at postgresql://postgres@127.0.0.1:5432/postgres, and given
feedback's schema by the service's own start-up (shared.runtime.ServiceRuntime.start_database).

Survey answers are a kiosk/staff mix over 50 stores and 200 staff (4 per store), on the default
template: NPS 0–10 skewed high (~20% detractors, 0–6, which open cases), CSAT correlated with it, 3–4
of the 4 step ratings, a comment on ~15%, a known customer on ~60%.

  (a) ingest    responses through services.feedback.surveys.record (what POST /v1/responses runs):
                in-process from --workers processes, each with its own Database(search_path=feedback),
                one transaction per response and one per --batch responses; then over HTTP, POST
                /v1/responses against `hub serve feedback` (bench.common.running_service) open-loop at each
                of --rates for --seconds from --clients processes (bench.common.Connection, keep-alive):
                latency from each request's scheduled send time, requests due while --max-in-flight are
                outstanding are shed (counted, not sent). A SQL profile (bench.common.CountingCursor) of
                --profile-responses more responses in-process says where one response's time goes.
  (b) cases     feedback.cases topped up to --cases with insert … select generate_series (50 stores
                skewed, 4 states by age, opened over 180 days, some breached flags), analyzed; then
                GET /v1/cases for the common filters (none; store_id; store_id+state=open;
                breached=true; limit 50): --sequential-calls per filter one at a time, then open-loop at
                --case-rate mixed filters for --seconds; EXPLAIN ANALYZE of each filter's query (the SQL
                services.feedback.cases.listing sends) with the indexes it uses.

Prints the results and writes bench/feedback.json. Usage:
  python -m bench.feedback [--responses 20000] [--workers 2] [--batch 100] [--rates 500,1000]
                           [--seconds 15] [--clients 2] [--max-in-flight 64] [--cases 100000]
                           [--sequential-calls 300] [--case-rate 100] [--profile-responses 1000]
                           [--skip inprocess|http|cases|profile] [--py-spy] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import traceback
import uuid
from functools import partial
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/feedback.py` finds bench.common

from bench.common import (  # noqa: E402
    ROOT, CountingCursor, connections, fresh_database, machine_load, open_loop, percentiles, run_info, run_workers,
    running_service,
)
from services.feedback import cases, surveys  # noqa: E402
from services.feedback.settings import FeedbackSettings  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.runtime import ServiceRuntime  # noqa: E402

TENANT = "bench"
SCHEMA = "feedback"
STORES = [f"store-{i:03d}" for i in range(50)]
STAFF = [f"staff-{i:03d}" for i in range(200)]  # staff i works at store i % 50
SERVICES = ["full-groom", "bath", "nail-trim", "haircut", "spa", "consult"]
STEPS = ["reception", "waiting_time", "service_quality", "result"]
# NPS 0..10: ~20% detractors (0–6), ~25% passives, ~55% promoters
NPS_WEIGHTS = [2, 1, 1, 2, 2, 4, 8, 10, 15, 25, 30]
TARGETS = {"responses_per_s": 1_000, "case_list_p99_ms": 50, "cases": 100_000}


# --- the answers --------------------------------------------------------------------------------------

def answers(rnd: random.Random) -> dict:
    score = rnd.choices(range(11), NPS_WEIGHTS)[0]
    out: dict = {"nps": score}
    if rnd.random() < 0.8:
        base = 1 + score * 4 / 10  # 1..5, correlated with the NPS
        out["csat"] = max(1, min(5, round(base + rnd.uniform(-1, 1))))
    for step in rnd.sample(STEPS, rnd.choice((3, 4))):
        out[step] = max(1, min(5, round(1 + score * 4 / 10 + rnd.uniform(-1.5, 1))))
    if rnd.random() < (0.5 if score <= 6 else 0.1):
        out["comment"] = rnd.choice(["等太久了", "Great service, thank you!", "The groomer was rough with my dog.",
                                     "价格有点贵", "Very clean store.", "Booking was confusing."]) * rnd.randint(1, 3)
    return out


def response_body(rnd: random.Random, customers: list[str]) -> dict:
    staff = rnd.randrange(len(STAFF))
    return {"source": "kiosk" if rnd.random() < 0.7 else "staff", "store_id": STORES[staff % len(STORES)],
            "staff_id": STAFF[staff], "service_id": rnd.choice(SERVICES),
            "customer_id": rnd.choice(customers) if rnd.random() < 0.6 else None,
            "answers": answers(rnd), "response_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4))}


def customer_pool(n: int = 20_000) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"hub-bench-feedback/{i}")) for i in range(n)]


def record_body(cur, body: dict, now: datetime) -> dict:
    """What record_entered does with a validated body (the visit from the caller)."""
    visit = {k: (uuid.UUID(body[k]) if k == "customer_id" and body[k] else body.get(k))
             for k in ("customer_id", "store_id", "staff_id", "service_id", "appointment_id")}
    return surveys.record(cur, TENANT, body["answers"], now, source=body["source"], visit=visit,
                          response_id=uuid.UUID(body["response_id"]), entered_by="bench")


# --- (a) in-process ingest ---------------------------------------------------------------------------

def _ingest_worker(dsn: str, worker: int, n: int, batch: int, seed: int, barrier, results) -> None:
    try:
        rnd = random.Random(seed * 1000 + worker)
        customers = customer_pool()
        bodies = [response_body(rnd, customers) for _ in range(n)]
        db = Database(dsn, maxconn=2, application_name=f"bench-feedback-{worker}", search_path=SCHEMA)
        with db.transaction() as cur:  # the connection open before the clock starts
            cur.execute("select 1")
        barrier.wait()
        lat = []
        cpu0 = time.process_time()
        started = time.perf_counter()
        for offset in range(0, n, batch):
            t = time.perf_counter()
            with db.transaction() as cur:
                for body in bodies[offset:offset + batch]:
                    record_body(cur, body, datetime.now(UTC))
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        results.put({"worker": worker, "responses": n, "elapsed": elapsed, "cpu": time.process_time() - cpu0,
                     "transactions": lat})
        barrier.wait()  # keep the backend until the parent has sampled Postgres' CPU
        db.close()
    except BaseException:
        barrier.abort()
        results.put({"worker": worker, "error": traceback.format_exc()})
        raise


def counts(db: Database) -> dict:
    with db.transaction() as cur:
        cur.execute("select (select count(*) from responses), (select count(*) from cases), "
                    "(select count(*) from outbox)")
        r, c, o = cur.fetchone()
    return {"responses": r, "cases": c, "outbox": o}


def bench_inprocess(db: Database, dsn: str, responses: int, workers: int, batch: int, seed: int) -> dict:
    shares = [responses // workers + (w < responses % workers) for w in range(workers)]
    before = counts(db)
    run = run_workers(dsn, _ingest_worker, [(dsn, w, shares[w], batch, seed) for w in range(workers)], "ingest",
                      load_after_s=3)
    parts, elapsed, pg_cpu, load = run.parts, run.elapsed_s, run.postgres_cpu_s, run.load
    after = counts(db)
    stored = after["responses"] - before["responses"]
    cpu = sum(p["cpu"] for p in parts)
    return {"via": f"services.feedback.surveys.record, {batch} response(s) per transaction, each worker its own "
                   "Database", "workers": workers, "batch": batch, "responses": responses,
            "seconds": round(elapsed, 2), "responses_stored": stored,
            "cases_opened": after["cases"] - before["cases"], "outbox_rows": after["outbox"] - before["outbox"],
            "responses_per_s": round(stored / elapsed),
            "transaction_latency": percentiles([x for p in parts for x in p["transactions"]]),
            "per_worker_responses_per_s": [round(p["responses"] / p["elapsed"]) for p in parts],
            "worker_cpu_cores_busy": round(cpu / elapsed, 2),
            "worker_cpu_ms_per_response": round(cpu / responses * 1000, 3),
            "postgres_cpu_cores_busy": round(pg_cpu / elapsed, 2),
            "postgres_cpu_ms_per_response": round(pg_cpu / responses * 1000, 3), "load_during": load or None}


def profile_record(db: Database, n: int) -> dict:
    """Where one response's time goes, in-process, one worker, a transaction each: statements, SQL round
    trips (driver + server) by caller, the commit, and the rest (Python)."""
    rnd = random.Random(99)
    customers = customer_pool()
    bodies = [response_body(rnd, customers) for _ in range(n)]
    by_label: dict = {}
    statements, sql_s, commit_s = 0, 0.0, 0.0
    t0 = time.perf_counter()
    for body in bodies:
        with db.connection() as conn:
            with conn.cursor() as raw:
                cur = CountingCursor(raw, by_label)
                record_body(cur, body, datetime.now(UTC))
            t = time.perf_counter()
            conn.commit()
            commit_s += time.perf_counter() - t
            statements += cur.statements
            sql_s += cur.sql_s
    total = time.perf_counter() - t0

    def ms(seconds: float) -> float:
        return round(seconds / n * 1000, 3)

    return {"responses": n, "responses_per_s_one_worker": round(n / total), "ms_per_response": ms(total),
            "statements_per_response": round(statements / n, 2), "sql_ms_per_response": ms(sql_s),
            "commit_ms_per_response": ms(commit_s), "python_ms_per_response": ms(total - sql_s - commit_s),
            "statements": {label: {"per_response": round(k / n, 2), "ms_per_response": ms(spent)}
                           for label, (k, spent) in sorted(by_label.items(), key=lambda kv: -kv[1][1])}}


# --- open loop over HTTP (POST /v1/responses and GET /v1/cases) -------------------------------------

_CUSTOMERS: list[str] = []


def _requests(kind: str, rnd: random.Random):
    """(method, path, body, label) of the next request."""
    if kind == "responses":
        customers = _CUSTOMERS or _CUSTOMERS.extend(customer_pool(2000)) or _CUSTOMERS
        return "POST", "/v1/responses", orjson.dumps(response_body(rnd, customers)), "responses"
    if kind.startswith("batch:"):  # a kiosk syncing its queue: N answers in one request
        customers = _CUSTOMERS or _CUSTOMERS.extend(customer_pool(2000)) or _CUSTOMERS
        # Fresh ids (not from the seeded stream), so a second run's answers are new ones, not retries.
        body = {"responses": [{**response_body(rnd, customers), "response_id": str(uuid.uuid4())}
                              for _ in range(int(kind.split(":")[1]))]}
        return "POST", "/v1/responses/batch", orjson.dumps(body), "batch"
    label, query = case_filter(rnd, rnd.choice(list(CASE_FILTERS)))
    return "GET", f"/v1/cases?{urlencode(query)}", None, label


# --- (b) cases -----------------------------------------------------------------------------------------

CASE_FILTERS = ("none", "store", "store_open", "breached")


def case_filter(rnd: random.Random, name: str) -> tuple[str, dict]:
    store = rnd.choice(STORES)
    query = {"none": {}, "store": {"store_id": store}, "store_open": {"store_id": store, "state": "open"},
             "breached": {"breached": "true"}}[name]
    return name, {**query, "limit": 50}


def seed_cases(db: Database, total: int) -> dict:
    """Top feedback.cases up to `total` rows (the ingest runs opened some): stores skewed (the busiest a
    few times the quietest), opened over the last 180 days, old cases mostly closed, recent ones open or in
    progress; deadlines from opened_at; ~12% first-response and ~8% resolution breaches flagged."""
    with db.transaction() as cur:
        cur.execute("select count(*) from cases")
        have = cur.fetchone()[0]
        todo = max(0, total - have)
        t = time.perf_counter()
        cur.execute("""
            insert into cases (case_id, tenant_id, store_id, customer_id, reason, source_ref, response_id, priority,
                               owner, state, opened_at, first_response_due, resolution_due, first_response_at,
                               resolved_at, closed_at, first_response_breached, resolution_breached, root_cause,
                               service_step, updated_at)
            select gen_random_uuid(), %(tenant)s, s.store, case when random() < 0.6 then gen_random_uuid() end,
                   (array['detractor', 'low_csat', 'complaint:staff', 'complaint:waiting_time'])[1 + (i %% 4)],
                   'seed:' || i, gen_random_uuid(),
                   (array['low', 'medium', 'medium', 'high'])[1 + (i %% 4)], 'manager:' || s.store, s.state,
                   s.opened_at, s.opened_at + interval '1 hour', s.opened_at + interval '1 day',
                   case when s.state <> 'open' then s.opened_at + interval '30 minutes' end,
                   case when s.state in ('resolved', 'closed') then s.opened_at + interval '20 hours' end,
                   case when s.state = 'closed' then s.opened_at + interval '2 days' end,
                   random() < 0.12, random() < 0.08,
                   case when s.state in ('resolved', 'closed') then 'staff_training' end,
                   case when s.state in ('resolved', 'closed') then 'service_quality' end, s.opened_at
            from (select i, 'store-' || lpad((floor(50 * power(random(), 1.6)))::int::text, 3, '0') store,
                         g.opened_at,
                         case when g.age_days < 2 then
                                (array['open', 'open', 'in_progress', 'resolved'])[1 + floor(random() * 4)::int]
                              when g.age_days < 14 then
                                (array['open', 'in_progress', 'resolved', 'closed', 'closed', 'closed',
                                       'closed', 'closed'])[1 + floor(random() * 8)::int]
                              else case when random() < 0.02 then 'open' when random() < 0.05 then 'in_progress'
                                        when random() < 0.15 then 'resolved' else 'closed' end end state
                  from (select i, a.age_days, now() - a.age_days * interval '1 day' opened_at
                        from generate_series(1, %(n)s) i,
                             lateral (select random() * 180 + i * 0 age_days) a) g) s
        """, {"tenant": TENANT, "n": todo})
        seeded_s = time.perf_counter() - t
    with db.connection() as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("analyze cases")
        conn.autocommit = False
    with db.transaction() as cur:
        cur.execute("select state, count(*) from cases group by 1 order by 2 desc")
        by_state = dict(cur.fetchall())
        cur.execute("select count(*), count(distinct store_id), min(opened_at), "
                    "count(*) filter (where first_response_breached or resolution_breached), "
                    "pg_size_pretty(pg_total_relation_size('cases')) from cases")
        n, stores, oldest, flagged, size = cur.fetchone()
        cur.execute("select store_id, count(*) from cases group by 1 order by 2 desc")
        per_store = [c for _, c in cur.fetchall()]
    return {"existing_before_seed": have, "seeded": todo, "seed_seconds": round(seeded_s, 1), "cases": n,
            "stores": stores, "cases_per_store_max_min": [per_store[0], per_store[-1]],
            "oldest_opened_at": oldest, "by_state": by_state, "breach_flagged": flagged, "table_and_indexes": size}


class _Capture:
    """A cursor that keeps what cases.listing would send instead of sending it."""

    def __init__(self):
        self.sql = self.params = None

    def execute(self, sql, params=None):
        self.sql, self.params = sql, params

    def fetchall(self):
        return []


def _plan_indexes(node: dict, found: list) -> None:
    if "Index Name" in node:
        found.append(f"{node['Node Type']}: {node['Index Name']}")
    elif node.get("Node Type") in ("Seq Scan", "Bitmap Heap Scan"):
        found.append(f"{node['Node Type']}: {node.get('Relation Name')}")
    for child in node.get("Plans", []):
        _plan_indexes(child, found)


def explain_filters(db: Database) -> dict:
    out = {}
    rnd = random.Random(3)
    store = "store-010"
    for name in CASE_FILTERS:
        _, query = case_filter(rnd, name)
        if "store_id" in query:
            query["store_id"] = store
        capture = _Capture()
        cases.listing(capture, TENANT, store_id=query.get("store_id"), state=query.get("state"),
                      breached=True if query.get("breached") else None, limit=query["limit"], before=None,
                      now=datetime.now(UTC))
        with db.transaction() as cur:
            cur.execute("explain (analyze, buffers, format json) " + capture.sql, capture.params)
            plan = cur.fetchone()[0][0]
            cur.execute("explain (costs off) " + capture.sql, capture.params)
            text = [r[0] for r in cur.fetchall()]
        used: list = []
        _plan_indexes(plan["Plan"], used)
        top = plan["Plan"]
        out[name] = {"query": query, "scans": used, "execution_ms": round(plan["Execution Time"], 2),
                     "planning_ms": round(plan["Planning Time"], 2),
                     "rows_read": _rows_read(top), "plan": text}
    return out


def _rows_read(node: dict) -> int:
    here = node.get("Actual Rows", 0) * node.get("Actual Loops", 1) + node.get("Rows Removed by Filter", 0) \
        if "Scan" in node.get("Node Type", "") else 0
    return here + sum(_rows_read(c) for c in node.get("Plans", []))


def sequential_cases(http: dict, calls: int) -> dict:
    async def run() -> dict:
        conn = connections(http["base"], http["headers"], 1)[0]
        out = {}
        for name in CASE_FILTERS:
            rnd = random.Random(7)
            for _ in range(20):
                await conn.get(f"/v1/cases?{urlencode(case_filter(rnd, name)[1])}")
            lat = []
            for _ in range(calls):
                path = f"/v1/cases?{urlencode(case_filter(rnd, name)[1])}"
                t = time.perf_counter()
                if (status := await conn.get(path)) != 200:
                    raise RuntimeError(f"GET {path} answered {status}")
                lat.append(time.perf_counter() - t)
            out[name] = {"example": case_filter(random.Random(1), name)[1], **percentiles(lat)}
        conn.close()
        return out

    return asyncio.run(run())


def http_runs(args, bench, db: Database, workdir: Path, result: dict) -> None:
    with running_service("feedback", bench.dsn, workdir, tenant=TENANT, role="store_staff") as http:
        if "http" not in args.skip:
            runs = []
            for rate in [float(r) for r in args.rates.split(",")]:
                print(f"(a) POST /v1/responses at {rate:g}/s for {args.seconds:g}s, {args.clients} clients …",
                      flush=True)
                before = counts(db)
                spy = workdir / f"server-responses-{rate:g}.txt" if args.py_spy else None
                run = {"via": "POST /v1/responses, open loop, keep-alive connections (bench.common.Connection)",
                       **open_loop(http, bench, partial(_requests, "responses"), rate, args.seconds, args.clients, args.max_in_flight,
                                   spy)}
                after = counts(db)
                run["responses_stored"] = after["responses"] - before["responses"]
                run["cases_opened"] = after["cases"] - before["cases"]
                runs.append(run)
                print(json.dumps({k: v for k, v in run.items() if k != "server_profile"}, indent=2), flush=True)
            batches = []
            for rate in [float(r) for r in args.batch_rates.split(",") if r]:
                print(f"(a) POST /v1/responses/batch of {args.batch_size} at {rate:g}/s for {args.seconds:g}s …",
                      flush=True)
                before = counts(db)
                run = {"via": f"POST /v1/responses/batch, {args.batch_size} answers each, open loop",
                       **open_loop(http, bench, partial(_requests, f"batch:{args.batch_size}"), rate, args.seconds,
                                   args.clients, args.max_in_flight, None)}
                after = counts(db)
                # Answered batches only: the warm-up requests before the timed window store answers too.
                run["responses_per_s"] = round(run["ok"] * args.batch_size / run["elapsed_s"])
                run["responses_stored_incl_warmup"] = after["responses"] - before["responses"]
                batches.append(run)
                print(json.dumps({k: v for k, v in run.items() if k != "server_profile"}, indent=2), flush=True)
            result["ingest_http"] = {"server": "`hub serve feedback` (uvicorn, 1 process)", "open_loop": runs,
                                     "batches": batches}
        if "cases" not in args.skip:
            print(f"(b) seeding cases up to {args.cases:,} …", flush=True)
            out: dict = {"seed": seed_cases(db, args.cases)}
            print(json.dumps(out["seed"], default=str), flush=True)
            out["explain"] = explain_filters(db)
            print(json.dumps({k: {"scans": v["scans"], "execution_ms": v["execution_ms"]}
                              for k, v in out["explain"].items()}), flush=True)
            print(f"(b) GET /v1/cases sequential, {args.sequential_calls} calls per filter …", flush=True)
            out["sequential"] = sequential_cases(http, args.sequential_calls)
            print(json.dumps(out["sequential"]), flush=True)
            print(f"(b) GET /v1/cases at {args.case_rate:g}/s mixed filters for {args.seconds:g}s …", flush=True)
            spy = workdir / "server-cases.txt" if args.py_spy else None
            out["open_loop"] = {"via": "GET /v1/cases, filters mixed evenly, open loop, keep-alive connections",
                                **open_loop(http, bench, partial(_requests, "cases"), args.case_rate, args.seconds, args.clients,
                                            args.max_in_flight, spy)}
            print(json.dumps({k: v for k, v in out["open_loop"].items() if k != "server_profile"}, indent=2),
                  flush=True)
            result["case_list"] = out


# --- main ----------------------------------------------------------------------------------------------

def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--responses", type=int, default=20_000, help="Responses per in-process run, all workers.")
    parser.add_argument("--workers", type=int, default=2, help="In-process ingest processes.")
    parser.add_argument("--batch", type=int, default=100, help="Responses per transaction of the batched run.")
    parser.add_argument("--rates", default="500,1000", help="POST /v1/responses per second, a comma list.")
    parser.add_argument("--batch-size", type=int, default=50, help="Answers per POST /v1/responses/batch.")
    parser.add_argument("--batch-rates", default="20,30", help="Batch requests per second, a comma list.")
    parser.add_argument("--seconds", type=float, default=15, help="Length of each open-loop run.")
    parser.add_argument("--clients", type=int, default=2, help="HTTP client processes.")
    parser.add_argument("--max-in-flight", type=int, default=64,
                        help="Requests a client keeps outstanding; one due beyond that is shed (counted).")
    parser.add_argument("--cases", type=int, default=100_000, help="Cases in the table for the case-list runs.")
    parser.add_argument("--sequential-calls", type=int, default=300, help="Sequential case-list calls per filter.")
    parser.add_argument("--case-rate", type=float, default=100, help="Case-list requests per second, open loop.")
    parser.add_argument("--profile-responses", type=int, default=1000, help="Responses of the SQL profile.")
    parser.add_argument("--skip", choices=["inprocess", "http", "cases", "profile"], action="append", default=[])
    parser.add_argument("--py-spy", action="store_true", help="py-spy the HTTP server during each open-loop run.")
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    args = parser.parse_args()

    with fresh_database(args.keep) as bench:
        result = {**run_info(bench, TARGETS), "command": "python -m bench.feedback " + " ".join(sys.argv[1:]),
                  "load_at_start": machine_load()}
        runtime = ServiceRuntime(FeedbackSettings(database_url=bench.dsn), schema=SCHEMA,
                                 migrations_dir=ROOT / "services" / "feedback" / "migrations")
        db = runtime.start_database()
        workdir = Path(tempfile.mkdtemp(prefix="hub-bench-feedback-"))
        try:
            if "inprocess" not in args.skip:
                result["ingest_inprocess"] = []
                for seed, batch in ((1, 1), (2, args.batch)):
                    print(f"(a) {args.responses:,} responses in-process, {args.workers} workers, {batch} per "
                          f"transaction …", flush=True)
                    run = bench_inprocess(db, bench.dsn, args.responses, args.workers, batch, seed)
                    result["ingest_inprocess"].append(run)
                    print(json.dumps(run, indent=2), flush=True)
            if "profile" not in args.skip:
                print(f"profile: SQL statements per response over {args.profile_responses:,} responses …", flush=True)
                result["ingest_profile"] = profile_record(db, args.profile_responses)
                print(json.dumps(result["ingest_profile"], indent=2), flush=True)
            if not {"http", "cases"} <= set(args.skip):
                http_runs(args, bench, db, workdir, result)
            met: dict = {}
            for run in result.get("ingest_inprocess", []):
                met[f"inprocess_responses_per_s_batch_{run['batch']}"] = run["responses_per_s"] >= 1_000
            for run in result.get("ingest_http", {}).get("open_loop", []):
                if run["rate_asked"] >= 1_000:
                    met[f"http_responses_per_s_at_{run['rate_asked']:g}"] = (
                        run["ok_per_s"] >= 1_000 * 0.98 and not run["errors"] and not run["shed"])
            for run in result.get("ingest_http", {}).get("batches", []):
                met[f"http_batch_responses_per_s_at_{run['rate_asked']:g}"] = (
                    run["responses_per_s"] >= 1_000 and not run["errors"] and not run["shed"])
            if "case_list" in result:
                cl = result["case_list"]
                for name, r in cl["sequential"].items():
                    met[f"case_list_p99_ms_{name}_sequential"] = r["p99_ms"] <= 50
                ol = cl["open_loop"]
                met[f"case_list_p99_ms_at_{ol['rate_asked']:g}_per_s"] = (
                    bool(ol["latency"]) and not ol["errors"] and not ol["shed"] and ol["latency"]["p99_ms"] <= 50)
            result["targets_met"] = met
            print(json.dumps({"targets_met": met}, indent=2), flush=True)
            result["workdir"] = str(workdir)
            result["load_at_end"] = machine_load()
        finally:
            runtime.stop()
    (ROOT / "bench" / "feedback.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
