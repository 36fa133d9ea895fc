"""Insights benchmark: the faust processors (touchpoints → digests → scores → ClickHouse) on the embedded
broker and the embedded ClickHouse engine, fed from a separate producer process, and the dashboard's
queries over a large warehouse.

  drain       N resolved touchpoints are produced first; the processors drain them: touchpoints/s.
  open loop   touchpoints at a fixed rate for S seconds: freshness (stored_at - recorded_at) p50/p99 and
              whether the processors kept up.
  dashboard   M synthetic touchpoints and a customer_scores row per customer inserted in bulk; p50/p95 of
              every dashboard endpoint (random store and period) through the API in-process.

Usage: python -m bench.insights [--events N] [--rate R --seconds S] [--dashboard-rows M] [--skip part]
Writes bench/insights.json."""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import tempfile
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

from bench.common import git_commit, machine_load, percentiles, uncommitted_files
from hub.embedded import start_broker
from hub.simulate import generate

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"processor_touchpoints_per_s": 5000, "freshness_p99_s": 5.0, "dashboard_p95_ms": 300}


def wire_templates(n: int, customers: int, seed: int = 11) -> list[dict]:
    """Resolved touchpoints in wire form (as identity publishes them), spread over `customers`."""
    from shared.events import encode, from_document

    rng = random.Random(seed)
    pool = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(customers)]
    now = datetime.now(UTC).isoformat()
    return [orjson.loads(encode(from_document({**doc, "tenant_id": "demo", "source": "bench", "recorded_at": now,
                                               "customer_id": rng.choice(pool)})))
            for doc in generate(n, seed=seed, start=datetime.now(UTC) - timedelta(days=365), spacing_s=300)]


def _produce(bootstrap: str, topic: str, templates: list[dict], rate: float | None, seconds: float | None,
             start_at: float, sent_count) -> None:
    """Child process: send templates (fresh event ids, recorded_at = send time), as fast as possible or at
    `rate` per second in 10 ms ticks."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=256 * 1024)
    while time.time() < start_at:
        time.sleep(0.001)
    sent, i, began = 0, 0, time.monotonic()
    while True:
        elapsed = time.monotonic() - began
        if seconds is not None and elapsed >= seconds or rate is None and i >= len(templates):
            break
        due = len(templates) if rate is None else int(rate * elapsed) + 1
        while sent < due and (rate is not None or i < len(templates)):
            doc = templates[i % len(templates)]
            i += 1
            doc = {**doc, "event_id": str(uuid.uuid4()), "recorded_at": datetime.now(UTC).isoformat()}
            producer.send(topic, key=doc["customer_id"].encode(), value=orjson.dumps(doc))
            sent += 1
        if rate is not None:
            time.sleep(0.01)
    producer.flush()
    producer.close()
    sent_count.value = sent


class Processors:
    """The insights processors in their own event loop thread, like the API process runs them."""

    def __init__(self, settings, warehouse):
        from services.insights.processors import build_processor

        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.app = build_processor(settings, warehouse)
            self.loop.run_until_complete(self.app.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(120)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def _wait_stored(warehouse, expected: int, timeout_s: float) -> tuple[int, float]:
    """Poll a cheap count (no FINAL: the bench sends no duplicates) so the polling costs the processors
    little; the first time it reaches `expected`, confirm with the deduplicated count."""
    started = time.monotonic()
    while True:
        _, [(stored,)] = warehouse.query("SELECT count() FROM {db}.touchpoints")
        if stored >= expected:
            stored = warehouse.count_touchpoints("demo")
        if stored >= expected or time.monotonic() - started > timeout_s:
            return stored, time.monotonic() - started
        time.sleep(0.2)


def bench_processors(events: int, customers: int, rate: float, seconds: float, flush_max_rows: int) -> dict:
    from services.insights.settings import InsightsSettings
    from services.insights.warehouse import Warehouse
    from shared.bus.producer import ensure_topics
    from shared.topics import all_topics

    work = Path(tempfile.mkdtemp(prefix="bench-insights-"))
    broker = start_broker(log_path=work / "broker.log")
    try:
        settings = InsightsSettings(kafka_bootstrap_servers=broker.bootstrap, topic_prefix="b.",
                                    clickhouse_path=str(work / "clickhouse"), data_dir=str(work / "faust"),
                                    flush_max_rows=flush_max_rows)
        ensure_topics(broker.bootstrap, all_topics(), prefix="b.")
        warehouse = Warehouse.open(settings)
        templates = wire_templates(min(events, 50_000), customers)
        topic = settings.topic("touchpoints.resolved")
        ctx = multiprocessing.get_context("spawn")
        result: dict = {"customers": customers, "flush_max_rows": flush_max_rows}

        # Drain: a backlog produced first, then the processors start.
        sent = ctx.Value("i", 0)
        backlog = (templates * (events // len(templates) + 1))[:events]
        producer = ctx.Process(target=_produce, args=(broker.bootstrap, topic, backlog, None, None, time.time(), sent))
        producer.start()
        producer.join()
        processors = Processors(settings, warehouse)
        started, cpu_before = time.monotonic(), time.process_time()
        stored, elapsed = _wait_stored(warehouse, sent.value, timeout_s=900)
        load = machine_load(1.0)
        result["drain"] = {"events": sent.value, "stored": stored, "seconds": round(elapsed, 1),
                           "touchpoints_per_s": round(stored / elapsed), "process_cpu_s": round(
                               time.process_time() - cpu_before, 1), "wall_s": round(time.monotonic() - started, 1),
                           "customers_scored": warehouse.query(
                               "SELECT count() FROM {db}.customer_scores FINAL")[1][0][0]}

        # Open loop at a fixed rate: freshness of each touchpoint from send to ClickHouse.
        before = stored
        sent = ctx.Value("i", 0)
        run_started = datetime.now(UTC)
        producer = ctx.Process(target=_produce, args=(broker.bootstrap, topic, templates, rate, seconds,
                                                      time.time() + 1, sent))
        producer.start()
        producer.join()
        stored, waited = _wait_stored(warehouse, before + sent.value, timeout_s=300)
        _, [(p50, p95, p99, worst)] = warehouse.query(
            "SELECT quantile(0.5)(f), quantile(0.95)(f), quantile(0.99)(f), max(f) FROM (SELECT "
            "dateDiff('millisecond', recorded_at, stored_at) / 1000 AS f FROM {db}.touchpoints "
            "WHERE recorded_at >= {since:DateTime64(3)})", {"since": run_started})
        result["open_loop"] = {"rate_per_s": rate, "seconds": seconds, "sent": sent.value,
                               "stored": stored - before, "drained_s_after_producer": round(waited, 1),
                               "freshness_p50_s": round(p50, 2), "freshness_p95_s": round(p95, 2),
                               "freshness_p99_s": round(p99, 2), "freshness_max_s": round(worst, 2),
                               "kept_up": waited < 5}
        result["machine_after_drain"] = load
        processors.stop()
        warehouse.close()
        return result
    finally:
        broker.stop()


def bench_dashboard(rows: int, customers: int, samples: int) -> dict:
    """Bulk synthetic data, then every dashboard endpoint through the API (in-process, real engine)."""
    from fastapi.testclient import TestClient

    from services.insights.app import create_app
    from services.insights.settings import InsightsSettings

    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    settings = InsightsSettings(clickhouse_path=str(work / "clickhouse"), run_processors=False,
                                demo_api_key="bench-key", auth_secret="bench-secret")
    app = create_app(settings)
    stores = [f"store-{i}" for i in range(20)]
    with TestClient(app) as client:
        warehouse = app.state.warehouse
        started = time.monotonic()
        _fill(warehouse, rows, customers, stores)
        fill_s = time.monotonic() - started
        headers = {"Authorization": "Bearer bench-key"}
        rng = random.Random(3)
        today = date.today()
        endpoints = {
            "nps_week": lambda p: ("/v1/dashboard/nps", {**p, "grain": "week"}),
            "nps_day": lambda p: ("/v1/dashboard/nps", {**p, "grain": "day"}),
            "funnel": lambda p: ("/v1/dashboard/funnel", p),
            "churn": lambda p: ("/v1/dashboard/churn", {k: v for k, v in p.items() if k == "store_id"}),
            "channels": lambda p: ("/v1/dashboard/channels", p),
            "complaints": lambda p: ("/v1/dashboard/complaints", p),
            "tiers": lambda p: ("/v1/dashboard/tiers", {k: v for k, v in p.items() if k == "store_id"}),
            "customer": lambda p: (f"/v1/dashboard/customers/{bench_customer(rng.randrange(customers) + 1)}", {}),
        }
        timings: dict = {}
        for name, make in endpoints.items():
            samples_s = []
            for i in range(samples):
                start_day = today - timedelta(days=rng.randint(30, 360))
                params = {"from": start_day.isoformat(), "to": (start_day + timedelta(days=rng.randint(7, 90))).isoformat()}
                if i % 2:
                    params["store_id"] = rng.choice(stores)
                path, query = make(params)
                t0 = time.perf_counter()
                response = client.get(path, params=query, headers=headers)
                samples_s.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text
            timings[name] = percentiles(samples_s)
    worst = max(t["p95_ms"] for t in timings.values())
    return {"touchpoints": rows, "customers": customers, "stores": len(stores), "fill_s": round(fill_s, 1),
            "endpoints": timings, "worst_p95_ms": worst}


def bench_customer(n: int) -> uuid.UUID:
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012d}")


def _sql_customer(number: str) -> str:
    """bench_customer(n) in ClickHouse SQL."""
    return f"toUUID(concat('00000000-0000-4000-8000-', leftPad(toString({number}), 12, '0')))"


def _fill(warehouse, rows: int, customers: int, stores: list[str], chunk: int = 500_000) -> None:
    """Touchpoints, one scores row per customer, answers and cases, inserted by ClickHouse itself
    (INSERT … SELECT FROM numbers) so the fill takes seconds, not hours of Python."""
    types = "['store.visited','booking.created','booking.completed','service.performed','purchase.completed'," \
            "'survey.answered','ad.exposed','consultation.held']"
    channels = "['app','wechat_miniprogram','web','pos','phone','walk_in','social','ads']"
    store_array = "[" + ",".join(f"'{s}'" for s in stores) + "]"
    day_s = 86_400
    for offset in range(0, rows, chunk):
        warehouse.query(
            "INSERT INTO {db}.touchpoints (event_id, tenant_id, store_id, customer_id, type, schema_version, channel, "
            "source, occurred_at, recorded_at, identifier_types, payload, trace_id, attribution_version) "
            f"SELECT generateUUIDv4(), 'demo', {store_array}[1 + number % {len(stores)}], "
            f"{_sql_customer(f'1 + number % {customers}')}, "
            f"{types}[1 + intHash32(number) % 8], 1, {channels}[1 + intHash32(number + 1) % 8], 'bench', "
            f"now64(3) - toIntervalSecond(intHash32(number + 2) % {400 * day_s}), now64(3), ['phone'], "
            "'{\"amount_minor\": 30000}', '', 0 "
            f"FROM numbers({offset}, {min(chunk, rows - offset)})")
    warehouse.query(
        "INSERT INTO {db}.customer_scores SELECT 'demo', "
        f"{_sql_customer('number + 1')}, "
        "1, 0, now64(3), ['awareness','interest','consideration','purchase','repeat','loyal','at_risk','churned']"
        "[1 + intHash32(number) % 8], now64(3), 'repeat', (intHash32(number) % 1000) / 1000, "
        "['low','medium','high'][1 + intHash32(number) % 3], ['overdue 10 days vs expected 42 (full_groom)'], "
        "toInt32(intHash32(number) % 300), toUInt32(intHash32(number) % 10), toInt64(intHash32(number) % 100000), "
        "1 + intHash32(number) % 5, 1 + intHash32(number + 1) % 5, 1 + intHash32(number + 2) % 5, 'loyal', "
        f"['high','medium','low'][1 + intHash32(number) % 3], {store_array}[1 + number % {len(stores)}], "
        f"{channels}[1 + intHash32(number + 1) % 8], now64(3) - toIntervalSecond(intHash32(number) % {400 * day_s}), "
        "now64(3), intHash32(number) % 2, now64(3), ['','silver','gold','diamond','vip'][1 + intHash32(number) % 5], "
        "'full_groom', 42, toInt32(intHash32(number) % 100) - 50, toUInt32(1 + intHash32(number) % 10) "
        f"FROM numbers({customers})")
    answers = rows // 20
    warehouse.query(
        "INSERT INTO {db}.survey_answers SELECT generateUUIDv4(), 'demo', generateUUIDv4(), "
        f"{store_array}[1 + number % {len(stores)}], concat('staff-', toString(number % 50)), 'full-groom', 'link', "
        f"now64(3) - toIntervalSecond(intHash32(number) % {400 * day_s}) AS at, toDate(at), "
        "toInt8(intHash32(number) % 11), toInt8(1 + intHash32(number + 1) % 5), map('reception', 4) "
        f"FROM numbers({answers})")
    warehouse.query(
        "INSERT INTO {db}.case_events SELECT generateUUIDv4(), 'demo', generateUUIDv4(), "
        f"{store_array}[1 + number % {len(stores)}], generateUUIDv4(), ['opened','breached','resolved'][1 + number % 3], "
        f"now64(3) - toIntervalSecond(intHash32(number) % {400 * day_s}) AS at, toDate(at), 'high', 'detractor', "
        f"'first_response', toInt32(number % 600) FROM numbers({answers // 10})")


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--flush-max-rows", type=int, default=5000)
    parser.add_argument("--dashboard-rows", type=int, default=10_000_000)
    parser.add_argument("--dashboard-customers", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--skip", action="append", default=[], choices=["processors", "dashboard"])
    args = parser.parse_args()
    out_path = ROOT / "bench" / "insights.json"
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    result.update({"cpu_count": os.cpu_count(), "commit": git_commit(),
                   "uncommitted_files_outside_bench": uncommitted_files(), "targets": TARGETS,
                   "measured_at": datetime.now(UTC).isoformat(timespec="seconds")})
    if "processors" not in args.skip:
        result["processors"] = bench_processors(args.events, args.customers, args.rate, args.seconds,
                                                args.flush_max_rows)
    if "dashboard" not in args.skip:
        result["dashboard"] = bench_dashboard(args.dashboard_rows, args.dashboard_customers, args.samples)
    met = {}
    if "processors" in result:
        met["processor_touchpoints_per_s"] = result["processors"]["drain"]["touchpoints_per_s"] >= 5000
        met["freshness_p99_s"] = result["processors"]["open_loop"]["freshness_p99_s"] <= 5.0
    if "dashboard" in result:
        met["dashboard_p95_ms"] = result["dashboard"]["worst_p95_ms"] <= 300
    result["targets_met"] = met
    out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, default=str))
