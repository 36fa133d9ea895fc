"""The end-to-end benchmark behind `make bench` / `hub bench`: the embedded stack (the `make run` launcher,
no simulator) driven from separate processes.

  ingest    simulated touchpoints (identifier overlap, several channels, bookings, surveys) posted to
            identity at --rate per second for --seconds, open loop in 500-event batches: HTTP ingest →
            Kafka → identity resolution → faust → ClickHouse. Sustained rate = accepted / time until the
            last one is in ClickHouse; freshness = stored_at - recorded_at of every touchpoint of the run
            (insights' /v1/touchpoints/freshness)
  reads     at the same time GET /v1/customers/{id} at --reads per second, open loop (latency from the
            scheduled send time), for customers of a warm-up batch

Then `results.json` gathers these figures with the latest of the component benchmarks (bench/*.json:
identity lookups, merges and import, the dashboard over 10M touchpoints, webhooks), each with the
commit it was measured at, and the README's table between its markers is rewritten.
Usage: python -m bench.e2e [--rate 5000] [--seconds 60] [--reads 1000] [--no-readme]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from bench.common import connections, git_commit, machine_load
from bench.customer360 import _customer_ids, read_customers
from bench.stack import chain_events, running_stack
from hub.simulate import set_up_services

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"sustained_touchpoints_per_s": 5000, "freshness_p99_s": 5.0, "customer360_p99_ms": 25,
           "backfill_1m_s": 120}
BATCH = 500
STALL_S = 120  # the wait for the last touchpoint ends only when ClickHouse gained none for this long


def _ingest(identity: str, headers: dict, rate: float, seconds: float, out) -> None:
    """Open loop: batch n is due at start + n * BATCH / rate; a batch posted late shows in `behind_s`."""
    events = chain_events(int(rate * seconds), seed=31)
    bodies = [orjson.dumps({"events": events[i:i + BATCH]}) for i in range(0, len(events), BATCH)]

    async def run():
        pool = asyncio.Queue()
        for conn in connections(identity, headers, 8):
            pool.put_nowait(conn)
        accepted, worst_behind, start = 0, 0.0, time.perf_counter()

        async def post(body: bytes):
            nonlocal accepted
            conn = await pool.get()
            try:
                if await conn.request("POST", "/v1/touchpoints", body, timeout=60) == 200:
                    accepted += orjson.loads(conn.body)["accepted"]  # a batch may hold refused events
            finally:
                pool.put_nowait(conn)

        tasks = []
        for n, body in enumerate(bodies):
            delay = start + n * BATCH / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            worst_behind = max(worst_behind, -delay)
            tasks.append(asyncio.create_task(post(body)))
        await asyncio.gather(*tasks)
        return accepted, time.perf_counter() - start, worst_behind

    accepted, elapsed, behind = asyncio.run(run())
    out.put({"accepted": accepted, "posting_s": round(elapsed, 1), "behind_s": round(behind, 2)})


def stored(insights: str, headers: dict) -> int:
    return httpx.get(insights + "/v1/touchpoints/summary", headers=headers, timeout=60).json()["total"]


def sink_count(insights: str) -> float:
    """Touchpoints the processors have stored so far, from their counter (a redelivered one counts twice).
    The progress signal while waiting: a count over ClickHouse every half second took the warehouse's
    lock and a core's third from the processors being measured (the summary's four FINAL scans took
    175 ms at 300k rows)."""
    for line in httpx.get(insights + "/metrics", timeout=60).text.splitlines():
        if line.startswith("hub_messages_processed_total{") and 'service="insights"' in line \
                and 'topic="touchpoints.resolved"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def stored_since(insights: str, headers: dict, since: datetime) -> dict:
    """The run's touchpoints in ClickHouse, each counted once, with their freshness."""
    return httpx.get(insights + "/v1/touchpoints/freshness", headers=headers, timeout=120,
                     params={"since": since.isoformat()}).json()


def wait_stored(insights: str, headers: dict, since: datetime, counted_before: float, accepted: int) -> tuple[dict, float]:
    """Wait until ClickHouse holds all `accepted` touchpoints recorded since `since`, or gained none for
    STALL_S; returns their freshness and the monotonic time the last one was seen stored."""
    counted, progressed = 0.0, time.monotonic()
    while time.monotonic() - progressed < STALL_S:
        time.sleep(0.5)
        if (now_counted := sink_count(insights) - counted_before) > counted:
            counted, progressed = now_counted, time.monotonic()
        if counted >= accepted:  # the counter may be ahead by redeliveries: the exact count decides
            if (fresh := stored_since(insights, headers, since))["count"] >= accepted:
                return fresh, time.monotonic()
            time.sleep(1.5)
    return stored_since(insights, headers, since), progressed


def run_stack(rate: float, seconds: float, reads: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    with running_stack() as stack:
        identity, insights, headers = stack.urls["identity"], stack.urls["insights"], stack.headers
        # configured as `make run`'s simulator configures its chain: without the loyalty program's rates for
        # the currencies other than the yuan, those stores' purchases would all go to the dead-letter topic
        set_up_services(headers, stack.urls["loyalty"], stack.urls["feedback"], insights)
        warm = chain_events(5_000, seed=30)
        for i in range(0, len(warm), BATCH):
            httpx.post(identity + "/v1/touchpoints", json={"events": warm[i:i + BATCH]}, headers=headers, timeout=60)
        deadline = time.monotonic() + 120
        while stored(insights, headers) < len(warm) and time.monotonic() < deadline:
            time.sleep(1)
        ids = _customer_ids(identity, headers, warm, 1000)
        counted_before, since = sink_count(insights), datetime.now(UTC)
        results = ctx.Queue()
        workers = [ctx.Process(target=_ingest, args=(identity, headers, rate, seconds, results))]
        if reads:
            workers.append(ctx.Process(target=read_customers, args=(identity, headers, ids, reads, seconds, results)))
        started = time.monotonic()
        for w in workers:
            w.start()
        load = machine_load(min(10.0, seconds / 2))
        parts = [results.get() for _ in workers]
        for w in workers:
            w.join()
        ingest = next(p for p in parts if "accepted" in p)
        read = next((p for p in parts if "accepted" not in p), None)
        fresh, stored_at = wait_stored(insights, headers, since, counted_before, ingest["accepted"])
        in_clickhouse, until_stored = fresh["count"], stored_at - started
    return {
        "commit": git_commit(), "date": datetime.now(UTC).date().isoformat(),
        "offered_rate_per_s": rate, "seconds": seconds, **ingest, "stored": in_clickhouse,
        "until_all_stored_s": round(until_stored, 1),
        "sustained_touchpoints_per_s": round(in_clickhouse / until_stored),
        "freshness": fresh, "customer360_reads": read, "machine_during": load,
    }


def _latest(name: str) -> dict:
    path = ROOT / "bench" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def gather(e2e: dict) -> dict:
    """The figures the README's table shows, each with where it comes from."""
    identity, insights, webhooks = _latest("identity"), _latest("insights"), _latest("webhooks")
    read = e2e.get("customer360_reads") or {}
    rows = [
        ("end-to-end touchpoints/s, sustained (HTTP → Kafka → identity → faust → ClickHouse)",
         e2e["sustained_touchpoints_per_s"], "≥ 5,000", "e2e"),
        ("event → ClickHouse freshness p50 / p99 (s)",
         f"{e2e['freshness']['p50_s']} / {e2e['freshness']['p99_s']}", "p99 ≤ 5", "e2e"),
        (f"customer-360 read p99 at {read.get('rate_per_s', 0):g}/s during ingestion (ms)", read.get("p99_ms"),
         "≤ 25", "e2e"),
        ("identity lookups/s, one per call", identity.get("lookups", {}).get("lookups_per_s"), "≥ 20,000", "identity"),
        (f"identity lookups/s, {identity.get('lookups_http', {}).get('batch', 1000):,} per request over HTTP",
         identity.get("lookups_http", {}).get("lookups_per_s"), "≥ 20,000", "identity"),
        ("persisted merges/s", identity.get("merges", {}).get("merges_per_s"), "≥ 1,000", "identity"),
        ("backfill of 1,000,000 records (s)", identity.get("import", {}).get("projected_s_for_1m"), "≤ 120",
         "identity"),
        ("dashboard p95 over 10M touchpoints (ms, worst endpoint)",
         max((v.get("p95_ms", 0) for v in insights.get("dashboard", {}).get("endpoints", {}).values()), default=None),
         "≤ 300", "insights"),
        ("webhook deliveries/s", webhooks.get("delivery", {}).get("deliveries_per_s"), "≥ 2,000", "webhooks"),
    ]
    commits = {"e2e": e2e.get("commit", git_commit()), "identity": identity.get("commit"),
               "insights": insights.get("commit"), "webhooks": webhooks.get("run", {}).get("commit")}
    return {"date": datetime.now(UTC).date().isoformat(), "cpu_count": os.cpu_count(), "commit": git_commit(),
            "table": [{"what": w, "measured": m, "target": t, "source": s, "commit": commits[s]} for w, m, t, s in rows],
            "e2e": e2e}


def markdown(results: dict) -> str:
    lines = [f"Measured {results['date']} on {results['cpu_count']} CPUs (`make bench`, `bench/results.json`):", "",
             "| what | measured | target | from (commit) |", "|---|---|---|---|"]
    for row in results["table"]:
        measured = "—" if row["measured"] is None else (f"{row['measured']:,}" if isinstance(row["measured"], int)
                                                       else row["measured"])
        lines.append(f"| {row['what']} | {measured} | {row['target']} | {row['source']} ({row['commit'] or '—'}) |")
    e2e = results["e2e"]
    lines += ["", f"The e2e run offered {e2e['offered_rate_per_s']:,.0f}/s for {e2e['seconds']:.0f} s: identity accepted "
              f"{e2e['accepted']:,} (posting took {e2e['posting_s']} s), {e2e['stored']:,} were in ClickHouse after "
              f"{e2e['until_all_stored_s']} s; busy cores meanwhile {e2e['machine_during'].get('busy_cores')} of "
              f"{results['cpu_count']}."]
    return "\n".join(lines)


def write_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")


def render(readme: bool = True) -> str:
    """The table again from bench/e2e.json and the component results, without running anything (after a
    component benchmark)."""
    results = gather(json.loads((ROOT / "bench" / "e2e.json").read_text()))
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results)
    if readme:
        write_readme(table)
    return table


def main(rate: float = 5000, seconds: float = 60, reads: float = 1000, readme: bool = True) -> dict:
    e2e = run_stack(rate, seconds, reads)
    (ROOT / "bench" / "e2e.json").write_text(json.dumps(e2e, indent=2, default=str) + "\n")
    results = gather(e2e)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results)
    print(table)
    if readme:
        write_readme(table)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--reads", type=float, default=1000)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    main(args.rate, args.seconds, args.reads, not args.no_readme)
