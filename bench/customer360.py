"""Customer-360 read latency while ingestion runs: start the embedded stack, load simulated history,
then for `--seconds` fire GET /v1/customers/{id} at a fixed open-loop rate (latency counted from the
scheduled send time, so a stalled server cannot hide its queue) while another process-thread keeps
posting touchpoints. Writes bench/customer360.json. Usage: python -m bench.customer360 [--rate 1000]."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import threading
import time

import httpx

from bench.stack import ROOT, commit, running_stack
from hub.simulate import generate


def _post_all(url: str, headers: dict, events: list[dict], stop: threading.Event | None = None) -> int:
    accepted = 0
    with httpx.Client(timeout=60) as client:
        for i in range(0, len(events), 500):
            if stop is not None and stop.is_set():
                break
            accepted += client.post(url, json={"events": events[i:i + 500]}, headers=headers).json()["accepted"]
    return accepted


def _customer_ids(identity: str, headers: dict, events: list[dict], want: int) -> list[str]:
    phones = list(dict.fromkeys(i["value"] for e in events for i in e["identifiers"] if i["type"] == "phone"))
    ids = set()
    with httpx.Client(timeout=30) as client:
        for phone in phones[: want * 2]:
            r = client.get(identity + "/v1/customers/lookup", params={"type": "phone", "value": phone},
                           headers=headers)
            if r.status_code == 200:
                ids.add(r.json()["customer_id"])
            if len(ids) >= want:
                break
    return sorted(ids)


async def _fire(identity: str, headers: dict, ids: list[str], rate: int, seconds: float) -> tuple[list, int]:
    latencies, errors = [], 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=identity, headers=headers, timeout=10, limits=limits) as client:
        start = time.perf_counter()
        rnd = random.Random(5)

        async def one(scheduled: float):
            nonlocal errors
            try:
                r = await client.get(f"/v1/customers/{rnd.choice(ids)}")
                if r.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        tasks = []
        for n in range(int(rate * seconds)):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    return latencies, errors


def main(rate: int, seconds: float, history: int) -> dict:
    with running_stack() as stack:
        identity, headers = stack.urls["identity"], stack.headers
        events = generate(history, seed=21)
        _post_all(identity + "/v1/touchpoints", headers, events)
        time.sleep(5)  # let resolution catch up before sampling ids
        ids = _customer_ids(identity, headers, events, 2000)
        background = generate(200_000, seed=22)
        stop = threading.Event()
        ingesting = threading.Thread(target=_post_all, args=(identity + "/v1/touchpoints", headers, background, stop))
        ingesting.start()
        try:
            latencies, errors = asyncio.run(_fire(identity, headers, ids, rate, seconds))
        finally:
            stop.set()
            ingesting.join()
    q = statistics.quantiles(latencies, n=100)
    result = {
        "cpu_count": os.cpu_count(), "commit": commit(), "target_rate_per_s": rate, "seconds": seconds,
        "requests": len(latencies), "errors": errors, "customers_sampled": len(ids),
        "p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1), "while": "posting simulated touchpoints in 500-event batches",
    }
    (ROOT / "bench" / "customer360.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--history", type=int, default=30_000)
    args = parser.parse_args()
    print(json.dumps(main(args.rate, args.seconds, args.history), indent=2))
