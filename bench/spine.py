"""Preliminary spine benchmark: start the embedded stack (the `make run` launcher, no simulator), post
N generated touchpoints over HTTP from this separate process, and measure ingest rate and how long
until all of them are in ClickHouse. Writes bench/spine.json. Usage: python bench/spine.py [N]."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from hub.embedded import free_port
from hub.simulate import generate

ROOT = Path(__file__).resolve().parents[1]


def main(total: int = 50_000, batch: int = 1000, posters: int = 2) -> dict:
    home = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    ports = {n: free_port() for n in ("identity", "booking", "loyalty", "feedback", "insights")}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update({f"{n.upper()}_PORT": str(p) for n, p in ports.items()}, HUB_KAFKA_PORT=str(free_port()))
    launcher = subprocess.Popen([sys.executable, "-m", "hub", "run", "--no-simulate", "--home", str(home)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    identity, insights = f"http://127.0.0.1:{ports['identity']}", f"http://127.0.0.1:{ports['insights']}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if all(httpx.get(f"http://127.0.0.1:{p}/readyz").status_code == 200 for p in ports.values()):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        headers = {"Authorization": f"Bearer {(home / 'demo_api_key').read_text().strip()}"}
        events = generate(total, seed=11)
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
            "ingest_s": round(ingest_s, 1), "end_to_end_s": round(end_to_end_s, 1),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
        }
        (ROOT / "bench" / "spine.json").write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(120)


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000), indent=2))
