"""Preliminary spine benchmark: start the embedded stack (the `make run` launcher, no simulator), post
N generated touchpoints over HTTP from this separate process, and measure ingest rate and how long
until all of them are in ClickHouse. Writes bench/spine.json. Usage: python -m bench.spine [N]."""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.stack import ROOT, chain_events, commit, running_stack


def main(total: int = 50_000, batch: int = 1000, posters: int = 2) -> dict:
    with running_stack() as stack:
        identity, insights, headers = stack.urls["identity"], stack.urls["insights"], stack.headers
        events = chain_events(total, seed=11)
        batches = [events[i:i + batch] for i in range(0, total, batch)]
        started = time.monotonic()

        def post(chunk):
            with httpx.Client(timeout=60) as client:
                return client.post(identity + "/v1/touchpoints", json={"events": chunk}, headers=headers).json()["accepted"]

        with ThreadPoolExecutor(posters) as pool:
            accepted = sum(pool.map(post, batches))
        ingest_s = time.monotonic() - started
        while True:
            stored = httpx.get(insights + "/v1/touchpoints/summary", headers=headers).json()["total"]
            if stored >= accepted or time.monotonic() - started > 600:
                break
            time.sleep(0.25)
        end_to_end_s = time.monotonic() - started
        result = {
            "cpu_count": os.cpu_count(), "events": total, "accepted": accepted, "stored": stored,
            "ingest_per_s": round(accepted / ingest_s), "end_to_end_per_s": round(stored / end_to_end_s),
            "ingest_s": round(ingest_s, 1), "end_to_end_s": round(end_to_end_s, 1), "commit": commit(),
        }
        (ROOT / "bench" / "spine.json").write_text(json.dumps(result, indent=2) + "\n")
        return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000), indent=2))
