"""Start the embedded stack (the `make run` launcher, no simulator) on free ports for a benchmark."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from hub.embedded import free_port
from hub.simulate import generate
from shared.settings import SERVICE_PORTS

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    home: Path
    urls: dict[str, str]
    headers: dict[str, str]


def chain_events(n: int, seed: int) -> list[dict]:
    """n events of the simulated chain from its busiest hour: the last 04:00 UTC, when seven of its eight
    stores are open. The simulator only sends in-store touchpoints while a store is open, so with events
    from "now" the mix would depend on the hour the benchmark runs."""
    now = datetime.now(UTC)
    busiest = now.replace(hour=4, minute=0, second=0, microsecond=0)
    return generate(n, seed=seed, start=busiest if busiest <= now else busiest - timedelta(days=1))


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


@contextlib.contextmanager
def running_stack(ready_timeout_s: float = 180):
    home = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    ports = {name: free_port() for name in SERVICE_PORTS}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update({f"{n.upper()}_PORT": str(p) for n, p in ports.items()}, HUB_KAFKA_PORT=str(free_port()))
    launcher = subprocess.Popen([sys.executable, "-m", "hub", "run", "--no-simulate", "--home", str(home)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if all(httpx.get(f"http://127.0.0.1:{p}/readyz").status_code == 200 for p in ports.values()):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the stack did not become ready")
            time.sleep(0.5)
        headers = {"Authorization": f"Bearer {(home / 'demo_api_key').read_text().strip()}"}
        yield Stack(home, {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}, headers)
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(120)
