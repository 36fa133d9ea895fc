"""Identity benchmark against a real Postgres: a fresh database is created (and dropped at the end) on
DATABASE_URL's server, or on the local one at postgresql://postgres@127.0.0.1:5432/postgres.

  (c) import    N generated customer records from a CSV through the `hub import customers` code path
                (services.identity.bulk_import.import_file: parsing, validation, record_ingested, resolve_events, checkpoints)
  (a) lookups   identifier -> customer through services.identity.profiles.lookup (what GET
                /v1/customers/lookup calls before it builds the 360), as the API runs it with the tenant's
                policy cached: the lookup's one statement on an autocommit connection (its own transaction,
                see api.in_autocommit), the policy loaded once per process; P processes, each with its own
                connection; then the same through profiles.lookup_many, --lookup-batch identifiers per
                statement (what POST /v1/customers/lookups runs), and over HTTP: that endpoint of
                `hub serve identity` (P API processes) from P keep-alive client processes
  (b) merges    events that each carry the phone of one existing profile and the email of another, so every
                event merges two persisted profiles, through resolve_events in batches of resolve_batch

Prints the results and writes bench/identity.json. Usage:
  python bench/identity.py [--records 1000000] [--workers 1] [--batch 2000] [--lookup-seconds 20]
                           [--lookup-batch 1000] [--processes N] [--merges 20000]
                           [--skip import|lookups|merges] [--keep]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/identity.py` finds bench.common

from bench.common import ROOT, fresh_database, run_info, running_service  # noqa: E402
from services.identity import bulk_import as importer  # noqa: E402
from services.identity import profiles, store  # noqa: E402
from services.identity.pii import Vault  # noqa: E402
from services.identity.resolution import resolve_events  # noqa: E402
from services.identity.settings import IdentitySettings  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.events import from_document  # noqa: E402

TENANT = "bench"
MAPPING = """
source: legacy_crm
record_key: cust_no
identifiers:
  - {type: phone, column: mobile}
  - {type: email, column: email}
attributes:
  name: [given, surname]
  birth_date: {column: dob, format: "%Y-%m-%d"}
  gender: sex
  address: [street, city]
"""
GIVEN = ["Li", "Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Hua", "Jun", "Mei", "Tao", "Ying", "Chao", "Xin"]
SURNAMES = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun", "Ma", "Zhu"]
CITIES = ["Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu", "Nanjing", "Wuhan", "Suzhou"]


def phone(i: int) -> str:
    return f"139{i:08d}"


def write_customers(path: Path, n: int, seed: int = 5) -> dict:
    """n records: mostly distinct people; 4% repeat an earlier person's phone (joins it) and 1% carry one
    earlier person's phone and another's email (merges two profiles), as legacy CRMs do."""
    rnd = random.Random(seed)
    kinds = {"new": 0, "repeat": 0, "bridge": 0}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cust_no", "given", "surname", "mobile", "email", "dob", "sex", "street", "city"])
        for i in range(n):
            r = rnd.random()
            mobile, email = phone(i), f"user{i}@example.com"
            if i > 100 and r < 0.04:
                mobile, email, kind = phone(rnd.randrange(i)), "", "repeat"
            elif i > 100 and r < 0.05:
                mobile, email, kind = phone(rnd.randrange(i)), f"user{rnd.randrange(i)}@example.com", "bridge"
            else:
                kind = "new"
            kinds[kind] += 1
            w.writerow([f"R{i:08d}", rnd.choice(GIVEN), rnd.choice(SURNAMES), mobile, email,
                        f"{rnd.randint(1950, 2005)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                        rnd.choice("MF"), f"{rnd.randint(1, 999)} Road {rnd.randint(1, 300)}", rnd.choice(CITIES)])
    return kinds


def bench_import(db, settings, records: int, batch: int, workers: int, workdir: Path) -> dict:
    csv_path = workdir / "customers.csv"
    t = time.perf_counter()
    kinds = write_customers(csv_path, records)
    generated_s = time.perf_counter() - t
    mapping_path = workdir / "customers.yaml"
    mapping_path.write_text(MAPPING)
    mapping = importer.load_mapping(mapping_path, "customers")
    last = [time.perf_counter()]

    def progress(p):
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            print(f"  import: {p.rows_done:,} rows, {p.report.rows_per_s:,.0f} rows/s", flush=True)

    t = time.perf_counter()
    report = importer.import_file(db, settings, "customers", csv_path, mapping, tenant=TENANT,
                                  batch_size=batch, workers=workers, on_progress=progress)
    total_s = time.perf_counter() - t
    return {"via": "services.identity.bulk_import.import_file (the `hub import customers` code path)", "records": records,
            "batch_asked": batch, "batch_used": report.batch_size, "workers": workers, "row_kinds": kinds,
            "csv_generation_s": round(generated_s, 1),
            "total_s": round(total_s, 1), "records_per_s": round(records / total_s),
            "imported": report.imported, "rejected": report.rejected,
            "customers_created": report.customers_created, "profiles_merged": report.profiles_merged,
            "projected_s_for_1m": round(1_000_000 / (records / total_s))}


def _lookup_worker(dsn: str, secret: str, values: list[str], seconds: float,
                   batch: int = 1) -> tuple[int, int, float]:
    settings = IdentitySettings(database_url=dsn)
    vault = Vault(secret)
    conn = psycopg2.connect(dsn, application_name="bench-lookup")
    with conn.cursor() as cur:
        policy = store.tenant_policies(cur, {TENANT}, settings.default_region)[TENANT]
    conn.commit()
    conn.autocommit = True  # as api.in_autocommit runs a lookup
    done = found = 0
    started = time.perf_counter()
    deadline = started + seconds
    def one(value: str):  # a cursor per lookup, as api.in_autocommit runs it
        with conn.cursor() as cur:
            return profiles.lookup(cur, vault, policy, TENANT, "phone", value, None)

    while time.perf_counter() < deadline:
        if batch > 1:  # as POST /v1/customers/lookups runs them
            wanted = [("phone", v, None) for v in _window(values, done, batch)]
            with conn.cursor() as cur:
                customers = [c for c, _ in profiles.lookup_many(cur, vault, policy, TENANT, wanted)]
        else:  # 200 between clock reads
            customers = [one(v) for v in _window(values, done, 200)]
        done += len(customers)
        found += sum(c is not None for c in customers)
    elapsed = time.perf_counter() - started
    conn.close()
    return done, found, elapsed


def _window(values: list[str], start: int, n: int) -> list[str]:
    """`n` values from `start` on, wrapping around."""
    start %= len(values)
    return (values[start:] + values)[:n]


def _summary(parts: list[tuple[int, int, float]]) -> dict:
    """The workers' (lookups, found, seconds) together."""
    done, elapsed = sum(p[0] for p in parts), max(p[2] for p in parts)
    return {"lookups": done, "hit_ratio": round(sum(p[1] for p in parts) / done, 3), "seconds": round(elapsed, 1),
            "lookups_per_s": round(done / elapsed)}


def _lookup_values(known: int) -> list[str]:
    """90% phones a customer holds, 10% unknown ones (a miss also checks the weak identifiers)."""
    rnd = random.Random(9)
    return [phone(rnd.randrange(known)) if rnd.random() < 0.9 else phone(50_000_000 + rnd.randrange(10**7))
            for _ in range(20_000)]


def bench_lookups(dsn: str, settings, known: int, processes: int, seconds: float, batch: int = 1) -> dict:
    secret = settings.pii_master_key.get_secret_value()
    values = _lookup_values(known)
    with ProcessPoolExecutor(processes) as pool:
        parts = list(pool.map(_lookup_worker, [dsn] * processes, [secret] * processes,
                              [values[i::processes] for i in range(processes)], [seconds] * processes,
                              [batch] * processes))
    via = ("services.identity.profiles.lookup, one autocommit statement per lookup (as GET /v1/customers/lookup "
           "runs it)" if batch == 1 else
           f"services.identity.profiles.lookup_many, {batch} identifiers per autocommit statement (as POST "
           "/v1/customers/lookups runs them)")
    return {"via": via, "processes": processes, "batch": batch, **_summary(parts)}


def _http_lookup_worker(base: str, headers: dict, values: list[str], seconds: float,
                        batch: int) -> tuple[int, int, float]:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {**headers, "Content-Type": "application/json"}
    done = found = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        body = json.dumps({"identifiers": [{"type": "phone", "value": v} for v in _window(values, done, batch)]})
        conn.request("POST", "/v1/customers/lookups", body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"lookups answered {response.status}: {answer[:500]!r}")
        results = json.loads(answer)["results"]
        done += len(results)
        found += sum(r["customer_id"] is not None for r in results)
    elapsed = time.perf_counter() - started
    conn.close()
    return done, found, elapsed


def bench_lookups_http(dsn: str, known: int, processes: int, seconds: float, batch: int, workdir: Path) -> dict:
    """POST /v1/customers/lookups against `hub serve identity` as deployed, from `processes` clients."""
    values = _lookup_values(known)
    with running_service("identity", dsn, workdir, tenant=TENANT, api_processes=processes) as http:
        with ProcessPoolExecutor(processes) as pool:
            parts = list(pool.map(_http_lookup_worker, [http["base"]] * processes, [http["headers"]] * processes,
                                  [values[i::processes] for i in range(processes)], [seconds] * processes,
                                  [batch] * processes))
    return {"via": f"POST /v1/customers/lookups, {batch} phones per request, {processes} keep-alive clients, against "
                   f"`hub serve identity` ({processes} API processes beside the workers and ingestion processes)",
            "processes": processes, "batch": batch, **_summary(parts)}


def _event(i: int, identifiers: list[dict], now: str):
    return from_document({"event_id": str(uuid.uuid4()), "type": "store.visited", "occurred_at": now,
                          "recorded_at": now, "tenant_id": TENANT, "source": "bench", "channel": "walk_in",
                          "store_id": "bench-1", "identifiers": identifiers})


def bench_merges(db, settings, vault, merges: int) -> dict:
    now = datetime.now(UTC).isoformat()
    base = 80_000_000
    a = [_event(i, [{"type": "phone", "value": phone(base + i)}], now) for i in range(merges)]
    b = [_event(i, [{"type": "email", "value": f"merge{i}@example.org"}], now) for i in range(merges)]
    both = [_event(i, [{"type": "phone", "value": phone(base + i)},
                       {"type": "email", "value": f"merge{i}@example.org"}], now) for i in range(merges)]
    size = settings.resolve_batch
    for events in (a, b):  # 2 x merges existing profiles, not timed
        for i in range(0, merges, 2000):
            with db.transaction() as cur:
                resolve_events(cur, events[i:i + 2000], settings, vault)
    done = 0
    t = time.perf_counter()
    for i in range(0, merges, size):
        with db.transaction() as cur:
            plan = resolve_events(cur, both[i:i + size], settings, vault)
        done += sum(len(m.losers) for m in plan.merges)
    elapsed = time.perf_counter() - t
    return {"via": "services.identity.resolution.resolve_events, one transaction per batch",
            "batch": size, "events": merges, "merges": done, "seconds": round(elapsed, 1),
            "merges_per_s": round(done / elapsed)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1, help="Import worker processes (hub import --workers).")
    parser.add_argument("--lookup-seconds", type=float, default=20)
    parser.add_argument("--lookup-batch", type=int, default=1000, help="Identifiers per call in the batched lookups.")
    parser.add_argument("--merges", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="Lookup processes.")
    parser.add_argument("--skip", choices=["import", "lookups", "merges"], action="append", default=[])
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    args = parser.parse_args()

    with fresh_database(args.keep) as bench:
        dsn = bench.dsn
        settings = IdentitySettings(database_url=dsn)
        vault = Vault(settings.pii_master_key.get_secret_value())
        db = Database(dsn, maxconn=4, application_name="bench-identity")
        result = run_info(bench, {"lookups_per_s": 20_000, "merges_per_s": 1_000, "import_1m_records_s": 120})
        try:
            importer.ensure_schema(db)
            with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
                if "import" not in args.skip:
                    print(f"(c) importing {args.records:,} customer records …", flush=True)
                    result["import"] = bench_import(db, settings, args.records, args.batch, args.workers,
                                                    Path(tmp))
                    print(json.dumps(result["import"], indent=2), flush=True)
            if "lookups" not in args.skip:
                known = args.records if "import" not in args.skip else 0
                if not known:
                    print("(a) skipped: lookups need the imported customers", flush=True)
                else:
                    print(f"(a) lookups for {args.lookup_seconds:g}s in {args.processes} processes …", flush=True)
                    result["lookups"] = bench_lookups(dsn, settings, known, args.processes, args.lookup_seconds)
                    print(json.dumps(result["lookups"], indent=2), flush=True)
                    print(f"(a) lookups of {args.lookup_batch} per call …", flush=True)
                    result["lookups_batched"] = bench_lookups(dsn, settings, known, args.processes,
                                                              args.lookup_seconds, args.lookup_batch)
                    print(json.dumps(result["lookups_batched"], indent=2), flush=True)
                    print(f"(a/http) POST /v1/customers/lookups, {args.lookup_batch} per request …", flush=True)
                    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
                        result["lookups_http"] = bench_lookups_http(dsn, known, args.processes, args.lookup_seconds,
                                                                    args.lookup_batch, Path(tmp))
                    print(json.dumps(result["lookups_http"], indent=2), flush=True)
            if "merges" not in args.skip:
                print(f"(b) {args.merges:,} merging events …", flush=True)
                result["merges"] = bench_merges(db, settings, vault, args.merges)
                print(json.dumps(result["merges"], indent=2), flush=True)
        finally:
            db.close()
    (ROOT / "bench" / "identity.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
