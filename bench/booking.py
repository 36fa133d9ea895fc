"""Booking benchmark against a real Postgres: a fresh database is created (and dropped at the end) on
DATABASE_URL's server, or on the local one at postgresql://postgres@127.0.0.1:5432/postgres.

The catalogue is a realistic grooming chain, built through services.booking.catalog (put_store,
put_staff, put_resource, put_service): every store is open 09:00-21:00 (Asia/Shanghai) with 8 staff
(4 early 09:00-17:00, 4 late 13:00-21:00, each with a lunch or dinner break and one day off a week; 6
groom, all 8 bathe and trim nails) and 4 grooming tables; services full-groom (60 min, 90/120 for large
and long-coated dogs, +15 min buffer, a table), bath-tidy (45 min, +10 buffer, a table) and nail-trim
(20 min, no table).

  (a) availability  services.booking.appointments.availability for one store-day that already holds
                    about 40 confirmed appointments, one transaction each (as the API's in_transaction
                    runs it): p50/p99 in-process, then GET /v1/availability over HTTP
  (b) bookings      hold + confirm (services.booking.lifecycle.hold, then .confirm, each its own
                    transaction, as the API does) from P worker processes for --seconds; each worker owns
                    its stores, so bookings never collide, and walks its store-days packing them (the
                    next start is checked against a local copy of the day with the service's own pure
                    rules, so every hold is one the service accepts); then the same over HTTP
                    (POST /v1/appointments + POST /v1/appointments/{id}/confirm)
  profile           the SQL statements and SQL time per call (a counting cursor) and a pyinstrument
                    profile of both paths in-process

HTTP runs start an embedded tansu broker and `python -m hub serve booking` as deployed: a workers
process (outbox relay, consumers, clock) and --api-processes API processes on the service's port
(--api-processes 0: one process with BOOKING_RUN_WORKERS=false, nothing beside the API). Each of the
--http-workers client processes books one slot at a time (hold, then confirm), as a user at a desk.

Prints the results and writes bench/booking.json. Usage:
  python -m bench.booking [--stores 24] [--workers 4|1,2,4,8] [--seconds 20] [--availability-calls 1000]
                          [--http-workers 16] [--api-processes 2] [--skip availability|bookings|http|profile] [--py-spy]
                          [--keep]
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/booking.py` finds bench.common

from bench.common import (  # noqa: E402
    ROOT, CountingCursor, fresh_database, machine_load, percentiles, postgres_cpu_s, py_spy,
    run_info, running_service, service_cpu_s, sessions, summarize_collapsed,
)
from services.booking import appointments as appts  # noqa: E402
from services.booking import catalog, lifecycle  # noqa: E402
from services.booking.appointments import Customer  # noqa: E402
from services.booking.catalog import ResourceIn, ServiceIn, StaffIn, StoreIn  # noqa: E402
from services.booking.rules import Subject  # noqa: E402
from services.booking.slots import find_slots, why_not  # noqa: E402
from shared.bus.outbox import OUTBOX_MIGRATION  # noqa: E402
from shared.db import Database, migrate, sql_files  # noqa: E402
from shared.errors import DomainError  # noqa: E402
from shared.events.base import Identifier, utcnow  # noqa: E402
from shared.events.booking import BookedSubject  # noqa: E402

TENANT = "bench"
SCHEMA = "booking"
TZ = "Asia/Shanghai"
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STAFF_PER_STORE = 8
GROOMERS = 6
TABLES = 4
AVAILABILITY_STORE = "store-000"
SERVICES = {
    "full-groom": {"name": "Full groom", "category": "full_groom", "duration_minutes": 60,
                   "variants": [{"size": "l", "minutes": 90}, {"size": "l", "coat": "long", "minutes": 120}],
                   "buffer_after_minutes": 15, "price_minor": 28000, "required_skill": "grooming",
                   "resource_kind": "grooming_table", "rebook_interval_days": 42},
    "bath-tidy": {"name": "Bath and tidy", "category": "bath", "duration_minutes": 45,
                  "variants": [{"size": "l", "minutes": 60}], "buffer_after_minutes": 10, "price_minor": 12000,
                  "required_skill": "bathing", "resource_kind": "grooming_table", "rebook_interval_days": 28},
    "nail-trim": {"name": "Nail trim", "category": "nail_trim", "duration_minutes": 20, "price_minor": 4000,
                  "required_skill": "bathing"},
}
BENCH_PET = ("Lucky", "dog", "m", "short")  # what the booking runs book for (the planner's durations)
PETS = [("Lucky", "dog", "m", "short"), ("Momo", "dog", "s", "curly"), ("Bao", "dog", "l", "double"),
        ("Mimi", "cat", "m", "long"), ("Doudou", "dog", "l", "long"), ("Xiaobai", "dog", "xs", "wire")]


# --- catalogue ------------------------------------------------------------------------------------

def store_body(store_id: str) -> StoreIn:
    return StoreIn(name=f"Bench {store_id}", timezone=TZ,
                   opening_hours={d: [{"start": "09:00", "end": "21:00"}] for d in WEEK},
                   policy={"min_notice_minutes": 60, "hold_minutes": 10, "slot_step_minutes": 15})


def staff_body(store_id: str, j: int) -> StaffIn:
    """Staff 0-3 work 09:00-17:00 with lunch at 12:00 or 12:30; 4-7 work 13:00-21:00 with dinner at
    17:00 or 17:30; each has one day off a week (spread so most days have 7 of the 8 in)."""
    early = j < 4
    start, end = ("09:00", "17:00") if early else ("13:00", "21:00")
    b0 = ("12:00", "12:30")[j % 2] if early else ("17:00", "17:30")[j % 2]
    b1 = {"12:00": "13:00", "12:30": "13:30", "17:00": "17:30", "17:30": "18:00"}[b0]
    skills = ["bathing", "grooming"] if j < GROOMERS else ["bathing"]
    off = WEEK[(j * 3) % 7]
    return StaffIn(name=f"{store_id} staff {j}", skills=skills, schedule=[
        {"store_id": store_id, "weekday": d, "start": start, "end": end, "breaks": [{"start": b0, "end": b1}]}
        for d in WEEK if d != off])


def build_catalogue(db: Database, stores: int) -> list[str]:
    store_ids = [f"store-{i:03d}" for i in range(stores)]
    with db.transaction() as cur:
        for service_id, body in SERVICES.items():
            catalog.put_service(cur, TENANT, service_id, ServiceIn(**body))
        for store_id in store_ids:
            catalog.put_store(cur, TENANT, store_id, store_body(store_id))
            for j in range(STAFF_PER_STORE):
                catalog.put_staff(cur, TENANT, f"{store_id}-s{j}", staff_body(store_id, j))
            for t in range(1, TABLES + 1):
                catalog.put_resource(cur, TENANT, f"{store_id}-table-{t}", ResourceIn(
                    store_id=store_id, kind="grooming_table", name=f"Table {t}", capacity=1))
    return store_ids


def make_customer(n: int, pet: tuple[str, str, str, str] | None = None) -> Customer:
    name, species, size, coat = pet or PETS[n % len(PETS)]
    return Customer((Identifier(type="phone", value=f"+8613{n:09d}"),), None,
                    BookedSubject(kind="pet", name=name, species=species, size=size, coat=coat))


def seed_day(db: Database, store_id: str, day: date, wanted: int, rnd: random.Random) -> dict:
    """Book `wanted` confirmed appointments on the store-day through hold + confirm at random free slots
    (a quarter full grooms, a quarter baths, half nail trims), as customers would."""
    mix = ["full-groom", "bath-tidy", "nail-trim", "nail-trim"]
    done: dict[str, int] = {}
    attempts = 0
    while sum(done.values()) < wanted and attempts < wanted * 10:
        attempts += 1
        service_id = rnd.choice(mix)
        customer = make_customer(10_000_000 + attempts)
        now = utcnow()
        with db.transaction() as cur:
            slots = appts.availability(cur, TENANT, store_id, service_id, day, now,
                                       subject=customer.rule_subject())["slots"]
        if not slots:
            continue
        start = rnd.choice(slots)["starts_at"]
        try:
            with db.transaction() as cur:
                held = lifecycle.hold(cur, TENANT, store_id, service_id, start, customer, "app", now)
            with db.transaction() as cur:
                lifecycle.confirm(cur, TENANT, held["appointment_id"], utcnow())
        except DomainError:
            continue
        done[service_id] = done.get(service_id, 0) + 1
    return done


def off_shift_placements(db: Database) -> dict:
    """Live appointments whose staff member is not working (shift minus break) over the whole booked
    time: what services.booking.appointments.claim can produce when it picks staff by bookings only."""
    with db.transaction() as cur:
        cur.execute("select store_id, staff_id, starts_at, ends_at from appointments where status = 'confirmed'")
        rows = cur.fetchall()
        staff = {}
        for store_id in {r[0] for r in rows}:
            staff.update({(store_id, s.staff_id): s for s in catalog.staff_rules(cur, TENANT, store_id)})
        stores = {store_id: catalog.store_rules(cur, TENANT, store_id) for store_id in {r[0] for r in rows}}
    bad = 0
    example = None
    for store_id, staff_id, a, b in sorted(rows, key=lambda r: (r[0], r[2])):
        store = stores[store_id]
        day = a.astimezone(store.tz).date()
        worked = staff[(store_id, staff_id)].working(store, day)
        if not any(s <= a and b <= e for s, e in worked):
            bad += 1
            if example is None:
                example = {"store_id": store_id, "staff_id": staff_id,
                           "booked_local": f"{a.astimezone(store.tz):%a %Y-%m-%d %H:%M}-{b.astimezone(store.tz):%H:%M}",
                           "staff_works_local": [f"{s.astimezone(store.tz):%H:%M}-{e.astimezone(store.tz):%H:%M}"
                                                 for s, e in worked]}
    return {"confirmed": len(rows), "outside_staff_shift": bad, "example": example}


# --- measurement helpers ----------------------------------------------------------------------------

# --- (a) availability -------------------------------------------------------------------------------

def bench_availability(db: Database, day: date, calls: int, subject: Subject | None = None,
                       service_id: str = "full-groom") -> dict:
    for _ in range(min(50, calls)):  # warm: pool connection, zone cache, imports
        with db.transaction() as cur:
            appts.availability(cur, TENANT, AVAILABILITY_STORE, service_id, day, utcnow(), subject=subject)
    lat = []
    slots = 0
    started = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        with db.transaction() as cur:
            result = appts.availability(cur, TENANT, AVAILABILITY_STORE, service_id, day, utcnow(),
                                        subject=subject)
        lat.append(time.perf_counter() - t)
        slots = len(result["slots"])
    elapsed = time.perf_counter() - started
    return {**percentiles(lat), "calls_per_s": round(calls / elapsed), "slots_returned": slots}


def bench_availability_http(base: str, headers: dict, day: date, calls: int) -> dict:
    import httpx

    params = {"store_id": AVAILABILITY_STORE, "service_id": "full-groom", "date": day.isoformat()}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for _ in range(min(50, calls)):
            client.get("/v1/availability", params=params).raise_for_status()
        lat = []
        started = time.perf_counter()
        for _ in range(calls):
            t = time.perf_counter()
            r = client.get("/v1/availability", params=params)
            lat.append(time.perf_counter() - t)
            r.raise_for_status()
        elapsed = time.perf_counter() - started
        slots = len(r.json()["slots"])
    return {**percentiles(lat), "calls_per_s": round(calls / elapsed), "slots_returned": slots,
            "client": "one httpx.Client, sequential requests, keep-alive"}


# --- (b) bookings ------------------------------------------------------------------------------------

class Planner:
    """Where a worker books next. It keeps each store-day's DayBook (loaded once from the database, then
    updated with every placement the service made) and asks the service's own pure rules (find_slots,
    why_not) for the next start, so every hold it sends is one the service accepts."""

    ORDER = ("full-groom", "bath-tidy", "nail-trim")  # tables first, then the staff's gaps

    def __init__(self, db: Database, stores: list[str], days: list[date]):
        self.db = db
        self.customer = make_customer(0, BENCH_PET)
        self.subject = self.customer.rule_subject()
        with db.transaction() as cur:
            self.ctx = {(s, v): appts.load_context(cur, TENANT, s, v) for s in stores for v in self.ORDER}
        self.store_days = [(s, d) for d in days for s in stores]

    def bookings(self):
        """(store_id, service_id, start, placed) store-day by store-day; call placed(staff_id, resource_id)
        with what the service chose, or not at all if the hold failed (the start is then left)."""
        for store_id, day in self.store_days:
            now = utcnow()
            with self.db.transaction() as cur:
                book = appts.load_book(cur, self.ctx[(store_id, "full-groom")], day, now)
            for service_id in self.ORDER:
                ctx = self.ctx[(store_id, service_id)]
                req = ctx.request(self.subject, now)
                for slot in find_slots(req, day, book):
                    while why_not(req, slot.starts_at, book, day) is None:
                        span = ctx.service.occupied(slot.starts_at, self.subject)
                        done = []

                        def placed(staff_id: str, resource_id: str | None, span=span, done=done):
                            done.append(True)
                            book.staff_busy.setdefault(staff_id, []).append(span)
                            if resource_id:  # every table has capacity 1: unit 1
                                book.unit_busy.setdefault((resource_id, 1), []).append(span)

                        yield store_id, service_id, slot.starts_at, placed
                        if not done:  # the hold failed: leave this start
                            break


class _Client:
    """A keep-alive HTTP/1.1 client from the standard library: httpx cost these workers 2.6 ms of CPU per
    booking, on the cores the server under test needs."""

    def __init__(self, base: str, headers: dict):
        host, _, port = base.removeprefix("http://").partition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {**headers, "Content-Type": "application/json"}

    def post(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        self.conn.request("POST", path, orjson.dumps(body or {}), self.headers)
        response = self.conn.getresponse()
        return response.status, orjson.loads(response.read())

    def close(self) -> None:
        self.conn.close()


def autoanalyze(dsn: str, stop: threading.Event, every_s: float = 30) -> None:
    """ANALYZE now and every `every_s`, as autovacuum would on a server where it is on (it is off on some
    development servers). Without it the tables' statistics stay those of an empty book while the runs
    fill it with thousands of appointments, and the planner scans a store's whole window for every
    request: a hold then took 14.6 ms instead of 4.3 ms."""
    while True:
        with contextlib.suppress(psycopg2.Error), \
                contextlib.closing(psycopg2.connect(dsn, options=f"-c search_path={SCHEMA}")) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("analyze")
        if stop.wait(every_s):
            return


def _booking_worker(dsn: str, index: int, stores: list[str], days: list[date], start_at: float, seconds: float,
                    http: dict | None) -> dict:
    db = Database(dsn, maxconn=2, application_name=f"bench-booking-{index}", search_path=SCHEMA)
    planner = Planner(db, stores, days)
    client = _Client(http["base"], http["headers"]) if http else None
    holds, confirms, errors = [], [], {}
    confirmed = n = 0
    plan = planner.bookings()
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    planner_cpu = 0.0
    while time.perf_counter() < deadline:
        p0 = time.process_time()
        try:
            store_id, service_id, start, placed = next(plan)
        except StopIteration:
            errors["ran_out_of_store_days"] = 1
            break
        finally:
            planner_cpu += time.process_time() - p0
        n += 1
        customer = make_customer(index * 10_000_000 + n, BENCH_PET)
        try:
            t0 = time.perf_counter()
            if client is None:
                with db.transaction() as cur:
                    held = lifecycle.hold(cur, TENANT, store_id, service_id, start, customer, "app", utcnow())
            else:
                status, held = client.post("/v1/appointments", {
                    "store_id": store_id, "service_id": service_id, "starts_at": start.isoformat(),
                    "channel": "app", "customer": {
                        "identifiers": [i.model_dump(exclude_none=True) for i in customer.identifiers],
                        "subject": customer.subject.model_dump(exclude_none=True)}})
                if status != 201:
                    raise RuntimeError(f"hold {status}")
            t1 = time.perf_counter()
            placed(held["staff_id"], held["resource_id"])
            if client is None:
                with db.transaction() as cur:
                    lifecycle.confirm(cur, TENANT, held["appointment_id"], utcnow())
            else:
                status, _ = client.post(f"/v1/appointments/{held['appointment_id']}/confirm")
                if status != 200:
                    raise RuntimeError(f"confirm {status}")
            t2 = time.perf_counter()
        except (DomainError, RuntimeError, psycopg2.Error) as exc:
            key = str(exc)[:60] if isinstance(exc, RuntimeError) else type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
            continue
        holds.append(t1 - t0)
        confirms.append(t2 - t1)
        confirmed += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    if client:
        client.close()
    db.close()
    return {"confirmed": confirmed, "elapsed": elapsed, "cpu": cpu, "planner_cpu": planner_cpu, "holds": holds,
            "confirms": confirms, "errors": errors}


def start_delay(workers: int) -> float:
    return 8 + 0.5 * workers  # time for the spawned workers to import and plan


def _postgres_cpu(dsn: str, start_at: float, seconds: float, out: dict) -> None:
    """CPU of the benchmark database's server processes (every backend plus the WAL writer and
    checkpointer, which serve every database) from 1 s into the run until 1 s before its end, and the
    machine's load in the middle of the run."""
    time.sleep(max(0.0, start_at + 1 - time.time()))
    with contextlib.suppress(Exception):
        t0, c0 = time.time(), postgres_cpu_s(dsn)
        time.sleep(max(0.0, seconds / 2 - 2))
        out["load_during"] = machine_load()
        time.sleep(max(0.0, t0 + seconds - 2 - time.time()))
        out["cpu_s"], out["wall_s"] = postgres_cpu_s(dsn) - c0, time.time() - t0


def bench_bookings(dsn: str, stores: list[str], days: list[date], workers: int, seconds: float,
                   http: dict | None = None) -> dict:
    """`workers` processes, each owning every workers-th store; all start together and run `seconds`."""
    ctx = multiprocessing.get_context("spawn")  # no inherited connections
    start_at = time.time() + start_delay(workers)
    before = machine_load()
    postgres_cpu: dict = {}
    sampler = threading.Thread(target=_postgres_cpu, args=(dsn, start_at, seconds, postgres_cpu), daemon=True)
    sampler.start()
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        parts = list(pool.map(_booking_worker, [dsn] * workers, range(workers),
                              [stores[i::workers] for i in range(workers)], [days] * workers,
                              [start_at] * workers, [seconds] * workers, [http] * workers))
    sampler.join(5)
    confirmed = sum(p["confirmed"] for p in parts)
    elapsed = max(p["elapsed"] for p in parts)
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    holds = [x for p in parts for x in p["holds"]]
    confirms = [x for p in parts for x in p["confirms"]]
    cpu = sum(p["cpu"] for p in parts)
    return {"workers": workers, "seconds": round(elapsed, 1), "confirmed": confirmed,
            "confirmed_per_s": round(confirmed / elapsed, 1),
            "worker_cpu_ms_per_booking": round(cpu / max(confirmed, 1) * 1000, 2),
            "worker_cpu_cores_busy": round(cpu / elapsed, 2),
            "of_which_planner_cpu_ms_per_booking": round(sum(p["planner_cpu"] for p in parts) / max(confirmed, 1)
                                                         * 1000, 2),
            **({"postgres_cpu_ms_per_booking": round(postgres_cpu["cpu_s"] / postgres_cpu["wall_s"] * elapsed
                                                     / max(confirmed, 1) * 1000, 2),
                "postgres_cpu_cores_busy": round(postgres_cpu["cpu_s"] / postgres_cpu["wall_s"], 2)}
               if "cpu_s" in postgres_cpu else {}),
            "per_worker_confirmed": [p["confirmed"] for p in parts], "errors": errors,
            "hold_latency": percentiles(holds), "confirm_latency": percentiles(confirms),
            "load_before": before, "load_during": postgres_cpu.get("load_during")}


# --- profile -----------------------------------------------------------------------------------------

def sql_breakdown(db: Database, day: date, stores: list[str], days: list[date], n: int = 200) -> dict:
    """Per availability, hold and confirm: statements, time in them (driver round trip included), the
    commit, and the rest (Python); and each statement's share, by calling function."""
    parts = {name: {"calls": 0, "statements": 0, "sql_s": 0.0, "commit_s": 0.0, "total_s": 0.0, "by": {}}
             for name in ("availability", "hold", "confirm")}

    def run(name: str, fn):
        part = parts[name]
        t = time.perf_counter()
        with db.connection() as conn:
            with conn.cursor() as raw:
                cur = CountingCursor(raw, part["by"])
                value = fn(cur)
            c = time.perf_counter()
            conn.commit()
            part["commit_s"] += time.perf_counter() - c
        part["total_s"] += time.perf_counter() - t
        part["calls"] += 1
        part["statements"] += cur.statements
        part["sql_s"] += cur.sql_s
        return value

    for _ in range(n):
        run("availability", lambda cur: appts.availability(cur, TENANT, AVAILABILITY_STORE, "full-groom", day,
                                                            utcnow()))
    plan = Planner(db, stores, days).bookings()
    for i in range(n):
        store_id, service_id, start, placed = next(plan)
        customer = make_customer(90_000_000 + i, BENCH_PET)
        held = run("hold", lambda cur: lifecycle.hold(cur, TENANT, store_id, service_id, start, customer, "app",
                                                      utcnow()))
        placed(held["staff_id"], held["resource_id"])
        run("confirm", lambda cur: lifecycle.confirm(cur, TENANT, held["appointment_id"], utcnow()))
    out = {}
    for name, p in parts.items():
        k = p["calls"]
        out[name] = {"statements_per_call": round(p["statements"] / k, 1),
                     "ms_per_call": round(p["total_s"] / k * 1000, 2),
                     "sql_ms_per_call": round(p["sql_s"] / k * 1000, 2),
                     "commit_ms_per_call": round(p["commit_s"] / k * 1000, 2),
                     "python_ms_per_call": round((p["total_s"] - p["sql_s"] - p["commit_s"]) / k * 1000, 2),
                     "statements_ms_per_call": {label: round(t / k * 1000, 3) for label, (_, t) in
                                                sorted(p["by"].items(), key=lambda kv: -kv[1][1])}}
    return out


def pyinstrument_profile(db: Database, day: date, stores: list[str], days: list[date], workdir: Path) -> dict:
    from pyinstrument import Profiler

    paths = {}
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(300):
        with db.transaction() as cur:
            appts.availability(cur, TENANT, AVAILABILITY_STORE, "full-groom", day, utcnow())
    profiler.stop()
    paths["availability"] = workdir / "booking-profile-availability.txt"
    paths["availability"].write_text(profiler.output_text(unicode=True, show_all=False))
    planner = Planner(db, stores, days)
    plan = planner.bookings()
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for i in range(300):
        store_id, service_id, start, placed = next(plan)
        with db.transaction() as cur:
            held = lifecycle.hold(cur, TENANT, store_id, service_id, start, make_customer(80_000_000 + i, BENCH_PET), "app",
                                  utcnow())
        placed(held["staff_id"], held["resource_id"])
        with db.transaction() as cur:
            lifecycle.confirm(cur, TENANT, held["appointment_id"], utcnow())
    profiler.stop()
    paths["bookings"] = workdir / "booking-profile-bookings.txt"
    paths["bookings"].write_text(profiler.output_text(unicode=True, show_all=False))
    return {k: str(v) for k, v in paths.items()}


# --- the HTTP service -------------------------------------------------------------------------------

def running_booking(dsn: str, workdir: Path, api_processes: int):
    """`hub serve booking` as bench.common.running_service runs it."""
    return running_service("booking", dsn, workdir, tenant=TENANT, role="store_staff", api_processes=api_processes)


def served_by(api_processes: int) -> str:
    return (f"`hub serve booking` ({api_processes} API processes beside the workers process)" if api_processes
            else "`hub serve booking` (uvicorn, 1 process)")


def http_bookings(args, dsn: str, admin, name: str, workdir: Path, stores: list[str], days: list[date],
                  spy: Path | None = None) -> dict:
    with running_booking(dsn, workdir, args.api_processes) as http:
        print(f"(b/http) POST hold + confirm, {args.http_workers} client processes for {args.seconds:g}s …",
              flush=True)
        before = sessions(admin, name)
        cpu_before = service_cpu_s(http["pid"])
        spying = py_spy(http["pid"], spy, start_delay(args.http_workers) + args.seconds) if spy else None
        with spying or contextlib.nullcontext():
            out = {"via": "POST /v1/appointments + POST /v1/appointments/{id}/confirm, http.client clients with "
                          f"keep-alive, {args.http_workers} client processes, against {served_by(args.api_processes)}",
                   **bench_bookings(dsn, stores, days, args.http_workers, args.seconds,
                                    http={"base": http["base"], "headers": http["headers"]})}
        out["postgres_sessions_opened"] = sessions(admin, name) - before - args.http_workers  # less the clients'
        for k in ("postgres_cpu_ms_per_booking", "postgres_cpu_cores_busy"):
            out.pop(k, None)  # the server's backends open during the run, after the CPU sample started
        server_cpu = service_cpu_s(http["pid"]) - cpu_before  # includes the clients' start-up wait (idle)
        out["server_cpu_ms_per_booking"] = round(server_cpu / max(out["confirmed"], 1) * 1000, 2)
        out["server_cpu_cores_busy"] = round(server_cpu / out["seconds"], 2)
    return out


def http_phase(args, dsn: str, admin, name: str, workdir: Path, day: date, stores: list[str],
               days: list[date]) -> dict:
    out = {}
    spy_a, spy_b = workdir / "server-availability.txt", workdir / "server-bookings.txt"
    with running_booking(dsn, workdir, args.api_processes) as http:
        print(f"(a/http) GET /v1/availability, {args.availability_calls} calls …", flush=True)
        before = sessions(admin, name)
        with py_spy(http["pid"], spy_a, 10) if args.py_spy else contextlib.nullcontext():
            out["availability_http"] = {
                "via": f"GET /v1/availability against {served_by(args.api_processes)}",
                "load_before": machine_load(),
                **bench_availability_http(http["base"], http["headers"], day, args.availability_calls)}
        out["availability_http"]["postgres_sessions_opened"] = sessions(admin, name) - before
        print(json.dumps(out["availability_http"], indent=2), flush=True)
    out["bookings_http"] = http_bookings(args, dsn, admin, name, workdir, stores, days,
                                         spy=spy_b if args.py_spy else None)
    print(json.dumps(out["bookings_http"], indent=2), flush=True)
    if args.py_spy:
        out["server_profile"] = {"availability": summarize_collapsed(spy_a), "bookings": summarize_collapsed(spy_b)}
        print(json.dumps(out["server_profile"], indent=2), flush=True)
    return out


# --- main ----------------------------------------------------------------------------------------------

def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=24, help="Stores in the chain (8 staff and 4 tables each).")
    parser.add_argument("--existing", type=int, default=24,
                        help="Appointments already on the measured day (it keeps free slots for every service).")
    parser.add_argument("--availability-calls", type=int, default=1000)
    parser.add_argument("--workers", default="4",
                        help="Booking processes (in-process run); a comma list (e.g. 1,2,4,8) runs each in turn.")
    parser.add_argument("--http-workers", type=int, default=16,
                        help="Client processes (HTTP run), each one booking at a time, as a user would.")
    parser.add_argument("--api-processes", type=int, default=2,
                        help="BOOKING_API_PROCESSES of the served service (0: one process, no workers).")
    parser.add_argument("--seconds", type=float, default=20, help="How long each booking run lasts.")
    parser.add_argument("--skip", choices=["availability", "bookings", "http", "profile"], action="append",
                        default=[])
    parser.add_argument("--py-spy", action="store_true", help="py-spy the HTTP server during the HTTP runs.")
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    args = parser.parse_args()

    with fresh_database(args.keep) as bench:
        dsn, admin, name = bench.dsn, bench.admin, bench.name
        result = {**run_info(bench, {"availability_p99_ms": 20, "confirmed_bookings_per_s": 300}),
                  "command": "python -m bench.booking " + " ".join(sys.argv[1:]), "load_at_start": machine_load()}
        db = Database(dsn, maxconn=4, application_name="bench-booking", search_path=SCHEMA)
        workdir = Path(tempfile.mkdtemp(prefix="hub-bench-booking-"))
        stop_analyzing = threading.Event()
        try:
            migrate(db, SCHEMA, [OUTBOX_MIGRATION] + sql_files(ROOT / "services" / "booking" / "migrations"))
            t = time.perf_counter()
            stores = build_catalogue(db, args.stores)
            tz = ZoneInfo(TZ)
            day = (datetime.now(UTC) + timedelta(days=7)).astimezone(tz).date()
            if day.weekday() == 0:  # staff 0 and 7 are both off on Mondays: take a day 7 of the 8 work
                day += timedelta(days=1)
            seeded = seed_day(db, AVAILABILITY_STORE, day, args.existing, random.Random(7))
            analyzer = threading.Thread(target=autoanalyze, args=(dsn, stop_analyzing), daemon=True)
            analyzer.start()
            with db.transaction() as cur:
                working = sum(bool(s.working(catalog.store_rules(cur, TENANT, AVAILABILITY_STORE), day))
                              for s in catalog.staff_rules(cur, TENANT, AVAILABILITY_STORE))
            result["setup"] = {"stores": len(stores), "staff": len(stores) * STAFF_PER_STORE,
                               "tables": len(stores) * TABLES, "availability_day": day.isoformat(),
                               "availability_weekday": WEEK[day.weekday()], "staff_working_that_day": working,
                               "existing_appointments_that_day": seeded, "seconds": round(time.perf_counter() - t, 1)}
            print(json.dumps(result["setup"], indent=2), flush=True)
            # booking runs use the other stores, on days from tomorrow + 1 on (the measured day left alone)
            booking_stores = [s for s in stores if s != AVAILABILITY_STORE]
            today = datetime.now(UTC).astimezone(tz).date()
            days_inproc = [d for d in (today + timedelta(days=n) for n in range(2, 62)) if d != day]
            days_http = [today + timedelta(days=d) for d in range(62, 122)]
            days_profile = [today + timedelta(days=d) for d in range(122, 182)]

            if "availability" not in args.skip:
                print(f"(a) availability, {args.availability_calls} calls in-process …", flush=True)
                result["availability"] = {
                    "via": "services.booking.appointments.availability, one db.transaction() each (as in_transaction)",
                    "service": "full-groom", "subject": None, "load_before": machine_load(),
                    **bench_availability(db, day, args.availability_calls)}
                result["availability_large_long_coat"] = {
                    "service": "full-groom", "subject": "pet size l, coat long (120 min)",
                    **bench_availability(db, day, args.availability_calls // 2, Subject("pet", "l", "long"))}
                result["availability_nail_trim"] = {
                    "service": "nail-trim (20 min, no table: many slots)", "subject": None,
                    **bench_availability(db, day, args.availability_calls // 2, service_id="nail-trim")}
                print(json.dumps({k: result[k] for k in ("availability", "availability_large_long_coat",
                                                         "availability_nail_trim")}, indent=2), flush=True)
            if "bookings" not in args.skip:
                runs = []
                for workers in [int(w) for w in str(args.workers).split(",")]:
                    print(f"(b) hold + confirm, {workers} processes for {args.seconds:g}s in-process …", flush=True)
                    runs.append({"via": "services.booking.lifecycle.hold then .confirm, each its own db.transaction()",
                                 **bench_bookings(dsn, booking_stores, days_inproc, workers, args.seconds)})
                    print(json.dumps(runs[-1], indent=2), flush=True)
                result["bookings"] = max(runs, key=lambda r: r["confirmed_per_s"])
                if len(runs) > 1:
                    result["bookings_by_workers"] = {r["workers"]: r["confirmed_per_s"] for r in runs}
            if "http" not in args.skip:
                result.update(http_phase(args, dsn, admin, name, workdir, day, booking_stores, days_http))
            if "profile" not in args.skip:
                print("profile: SQL statements and time per call, pyinstrument …", flush=True)
                result["sql_per_call"] = sql_breakdown(db, day, booking_stores[:4], days_profile)
                result["pyinstrument"] = pyinstrument_profile(db, day, booking_stores[4:8], days_profile, workdir)
                print(json.dumps(result["sql_per_call"], indent=2), flush=True)
                print(f"pyinstrument text profiles: {result['pyinstrument']}", flush=True)
            result["placement_check"] = off_shift_placements(db)
            print(json.dumps({"placement_check": result["placement_check"]}), flush=True)
            result["load_at_end"] = machine_load()
        finally:
            stop_analyzing.set()
            db.close()
    (ROOT / "bench" / "booking.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
