"""The `make run` stack as the e2e tests drive it: the real launcher in a subprocess, on free ports,
under a temporary HUB_HOME (embedded Postgres, embedded broker, ClickHouse inside insights)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from hub.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("identity", "booking", "loyalty", "feedback", "insights")
READY_TIMEOUT_S = 120  # generous on a shared machine; the measured time is printed


@contextlib.contextmanager
def temporary_home(prefix: str) -> Iterator[Path]:
    """A HUB_HOME outside pytest's temporary root: as root, pgserver runs Postgres as its own user
    and opens the path for it, but every pytest session that starts meanwhile (another worker, another
    run) makes that root private again, and Postgres then cannot reach its own data directory."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield home
    finally:
        if not os.environ.get("HUB_E2E_KEEP_HOME"):  # set it to read the services' logs after a failure
            shutil.rmtree(home, ignore_errors=True)


class Stack:
    def __init__(self, home: Path):
        self.home = home
        self.ports = {name: free_port() for name in SERVICES}
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "HUB_DEMO_API_KEY")}
        self.env.update({f"{n.upper()}_PORT": str(p) for n, p in self.ports.items()})
        self.env.update(HUB_KAFKA_PORT=str(free_port()), OTEL_TRACES_EXPORTER="console", HUB_HOME=str(home))
        self.process: subprocess.Popen | None = None
        self.ready_after_s = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, rate: int = 40) -> None:
        started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "hub", "run", "--rate", str(rate)], cwd=ROOT,
                                        env=self.env, stdout=open(self.home / "launcher.out", "ab"),
                                        stderr=subprocess.STDOUT)
        deadline = started + READY_TIMEOUT_S
        pending = set(SERVICES)
        while pending and time.monotonic() < deadline:
            assert self.process.poll() is None, (self.home / "launcher.out").read_text()
            for name in list(pending):
                try:
                    if httpx.get(self.url(name) + "/readyz", timeout=2).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        assert not pending, f"not ready: {pending}"
        self.ready_after_s = time.monotonic() - started
        print(f"\nstack ready after {self.ready_after_s:.1f}s")

    @property
    def key(self) -> str:
        return (self.home / "demo_api_key").read_text().strip()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def stop(self, sig=signal.SIGINT) -> int:
        self.process.send_signal(sig)
        return self.process.wait(90)

    def child(self, name: str):
        """The launcher's child running `hub serve <name>` (or the broker, `tansu`), as a psutil process."""
        import psutil

        for proc in psutil.Process(self.process.pid).children():
            try:
                args = proc.cmdline()
            except psutil.Error:  # a killed child the launcher has not reaped yet
                continue
            if args[-2:] == ["serve", name] or (name == "broker" and args and args[0].endswith("tansu")):
                return proc
        raise LookupError(f"no running child {name}")

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(self.url(name) + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def all_ready(self) -> bool:
        return all(self.ready(name) for name in SERVICES)

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres"

    def postgres_dsn(self) -> str:
        """The embedded Postgres's address, read from its pid file (no second handle on the server)."""
        from pgserver.utils import PostmasterInfo

        return PostmasterInfo.read_from_pgdata(self.pgdata).get_uri()


def wait_for(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return None
