"""Customer-360 read latency while ingestion runs: start the embedded stack, load simulated history,
then for `--seconds` fire GET /v1/customers/{id} at a fixed open-loop rate (latency counted from the
scheduled send time, so a stalled server cannot hide its queue) while another process-thread keeps
posting touchpoints. Writes bench/customer360.json. Usage: python -m bench.customer360 [--rate 1000].

The reads come from their own process over bench.common's raw keep-alive connections: httpx.AsyncClient's
pool rescans every queued request on each event (quadratic), so at a few hundred queued reads the client,
sharing its GIL with the posting thread, was the bottleneck and the server sat idle."""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import threading
import time
from functools import partial

import httpx

from bench.common import _open_loop_client, machine_load, percentiles
from bench.stack import ROOT, chain_events, commit, running_stack


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


def _customer_request(ids: list[str], rnd: random.Random):
    return "GET", f"/v1/customers/{rnd.choice(ids)}", None, "customer360"


def read_customers(identity: str, headers: dict, ids: list[str], rate: float, seconds: float, out) -> None:
    """bench.common's open-loop client (latency from the scheduled send time) in its own process: a read
    due while 64 are outstanding is shed and counted."""
    part = _open_loop_client(identity, headers, partial(_customer_request, ids), rate, seconds, time.time(), 5, 64)
    out.put({**percentiles(part["lat"]), "errors": part["errors"], "shed": part["shed"], "rate_per_s": rate})


def main(rate: int, seconds: float, history: int) -> dict:
    with running_stack() as stack:
        identity, headers = stack.urls["identity"], stack.headers
        events = chain_events(history, seed=21)
        _post_all(identity + "/v1/touchpoints", headers, events)
        time.sleep(5)  # let resolution catch up before sampling ids
        ids = _customer_ids(identity, headers, events, 2000)
        background = chain_events(200_000, seed=22)
        stop = threading.Event()
        ingested: dict = {}

        def ingest():
            started = time.perf_counter()
            ingested["accepted"] = _post_all(identity + "/v1/touchpoints", headers, background, stop)
            ingested["seconds"] = time.perf_counter() - started

        ingesting = threading.Thread(target=ingest)
        ingesting.start()
        load: dict = {}  # what else ran: on a shared machine the numbers mean little without it
        threading.Thread(target=lambda: (time.sleep(seconds / 2 + 3), load.update(machine_load())),
                         daemon=True).start()
        try:
            results = multiprocessing.get_context("spawn").Queue()
            reader = multiprocessing.get_context("spawn").Process(
                target=read_customers, args=(identity, headers, ids, rate, seconds, results))
            reader.start()
            reads = results.get()
            reader.join()
        finally:
            stop.set()
            ingesting.join()
    result = {
        "cpu_count": os.cpu_count(), "commit": commit(), "target_rate_per_s": rate, "seconds": seconds,
        "customers_sampled": len(ids), "reads": reads, "while": "posting simulated touchpoints in 500-event batches",
        "touchpoints_accepted_per_s": round(ingested.get("accepted", 0) / max(ingested.get("seconds", 1), 1e-9)),
        "load_during": load or None,
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
