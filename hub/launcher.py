"""`hub run`: the whole platform on one machine with no Docker.

Starts (or uses, when their variables are set) Postgres and a Kafka-protocol broker, the five services
and a simulated chain; prints the URLs and the demo API key; supervises the children (a crashed service
is restarted); on Ctrl-C stops the simulator, lets the pipeline drain, then stops every child in order.
State lives under HUB_HOME (default .hub/); a second run resumes it.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from hub.embedded import (EmbeddedBroker, embedded_postgres_running, spawn, start_broker, start_postgres,
                          stop_process)
from hub.serve import service_host, service_port
from hub.simulate import CNY_PER_UNIT
from shared.settings import SERVICE_PORTS

console = Console(stderr=True)
OUTBOX_SCHEMAS = ("identity", "booking", "loyalty", "feedback")


def _secret_file(path: Path, make) -> str:
    if path.exists():
        return path.read_text().strip()
    path.write_text(make())
    path.chmod(0o600)
    return path.read_text().strip()


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    demo_key: str
    broker: EmbeddedBroker | None = None
    broker_started_at: datetime | None = None
    replay_since: str | None = None  # for the services' next start only, never for a later restart
    postgres: object | None = None
    postgres_down_since: float | None = None
    children: dict[str, object] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://{service_host(name)}:{service_port(name)}"

    @property
    def state_file(self) -> Path:
        return self.home / "run_state.json"


def prepare(home: Path) -> Stack:
    """Secrets, Postgres and broker: everything the services need before they start."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("HUB_AUTH_SECRET", _secret_file(home / "auth_secret", lambda: secrets.token_urlsafe(32)))
    env.setdefault("IDENTITY_PII_MASTER_KEY", _secret_file(home / "pii_master_key", lambda: secrets.token_urlsafe(32)))
    demo_key = env.get("HUB_DEMO_API_KEY") or _secret_file(home / "demo_api_key",
                                                            lambda: "demo_" + secrets.token_urlsafe(24))
    env["HUB_DEMO_API_KEY"] = demo_key
    env.setdefault("INSIGHTS_CLICKHOUSE_PATH", str(home / "clickhouse"))
    env.setdefault("INSIGHTS_DATA_DIR", str(home / "faust"))
    env["PYTHONUNBUFFERED"] = "1"
    stack = Stack(home=home, env=env, demo_key=demo_key)

    if "DATABASE_URL" not in env:
        console.print("• Postgres: embedded (pgserver) under", home / "postgres")
        stack.postgres, env["DATABASE_URL"] = start_postgres(home / "postgres")
    if "KAFKA_BOOTSTRAP_SERVERS" not in env:
        start_embedded_broker(stack, int(env.get("HUB_KAFKA_PORT", "19092")))
        env["KAFKA_BOOTSTRAP_SERVERS"] = stack.broker.bootstrap
        console.print(f"• Kafka: embedded broker (tansu, in-memory) on {stack.broker.bootstrap}")
        stack.replay_since = _replay_since(stack)
        if stack.replay_since:
            console.print(f"• previous run did not drain: replaying outboxes since {stack.replay_since}")
    write_state(stack)
    return stack


def start_embedded_broker(stack: Stack, port: int) -> None:
    stack.broker = start_broker(port, log_path=stack.home / "logs" / "broker.log")
    stack.broker_started_at = datetime.now(UTC)


def write_state(stack: Stack, drained: bool = False) -> None:
    """What the next run needs to know: since when this run's (in-memory) broker holds messages."""
    since = stack.broker_started_at or datetime.now(UTC)
    stack.state_file.write_text(json.dumps({"started_at": since.isoformat(), "drained": drained}))


def _replay_since(stack: Stack) -> str | None:
    """The embedded broker forgets everything: if the last run stopped before its pipeline drained,
    re-publish what its outboxes sent since it started (every consumer is idempotent)."""
    try:
        state = json.loads(stack.state_file.read_text())
    except (OSError, ValueError):
        return None
    return None if state.get("drained") else state.get("started_at")


def start_service(stack: Stack, name: str) -> None:
    env = {**stack.env, "HUB_OUTBOX_REPLAY_SINCE": stack.replay_since} if stack.replay_since else stack.env
    stack.children[name] = spawn([sys.executable, "-m", "hub", "serve", name], env=env,
                                 log_path=stack.home / "logs" / f"{name}.log")


def wait_ready(stack: Stack, names: list[str], timeout_s: float) -> dict[str, bool]:
    ready = {n: False for n in names}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as client:
        while not all(ready.values()) and time.monotonic() < deadline:
            for name in names:
                if ready[name]:
                    continue
                if stack.children[name].poll() is not None:
                    raise RuntimeError(f"{name} exited during start; see {stack.home / 'logs' / (name + '.log')}")
                try:
                    ready[name] = client.get(stack.url(name) + "/readyz").status_code == 200
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
    return ready


def drain(stack: Stack, timeout_s: float = 30, quiet_s: float = 3) -> bool:
    """Wait until no outbox has unpublished rows for `quiet_s` (so every consumer caught up)."""
    from shared.bus.outbox import pending_count
    from shared.db import Database

    db = Database(stack.env["DATABASE_URL"], maxconn=2, application_name="hub-launcher")
    try:
        deadline, quiet_since = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            pending = sum(pending_count(db, s) for s in OUTBOX_SCHEMAS)
            if pending:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return True
            time.sleep(0.5)
        return False
    except Exception:
        return False
    finally:
        db.close()


def shutdown(stack: Stack) -> None:
    sim = stack.children.pop("simulator", None)
    if sim is not None:
        stop_process(sim, 5)
    drained = drain(stack) if all(p.poll() is None for p in stack.children.values()) else False
    for name in ("identity", "booking", "loyalty", "feedback", "insights"):
        if name in stack.children:
            stop_process(stack.children.pop(name), 25)
    if stack.broker:
        stack.broker.stop()
    if stack.postgres is not None:
        stack.postgres.cleanup()
    write_state(stack, drained)
    console.print("stopped" + ("" if drained else " (pipeline had not drained: the next run replays)"))


def print_banner(stack: Stack, elapsed: float) -> None:
    table = Table(title=f"Customer hub is ready ({elapsed:.1f}s)")
    table.add_column("service")
    table.add_column("url")
    table.add_column("api docs")
    for name in SERVICE_PORTS:
        table.add_row(name, stack.url(name), stack.url(name) + "/docs")
    console.print(table)
    console.print(f"Demo API key (tenant 'demo'): [bold]{stack.demo_key}[/bold]")
    console.print(f"Ops dashboard: {stack.url('insights')}/dashboard?key={stack.demo_key}")
    console.print(f"Logs: {stack.home / 'logs'}    Stop: Ctrl-C")


def run(home: Path, simulate: bool, rate: float, ready_timeout_s: float = 90) -> int:
    started = time.monotonic()
    stack = prepare(home)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if simulate:  # the simulated chain sells in four currencies: insights counts spend in CNY at its rates
        stack.env.setdefault("INSIGHTS_SCORING__EXCHANGE_RATES", json.dumps(CNY_PER_UNIT))
    try:
        for name in SERVICE_PORTS:
            start_service(stack, name)
        ready = wait_ready(stack, list(SERVICE_PORTS), ready_timeout_s)
        stack.replay_since = None  # a service restarted later must not re-publish again
        if not all(ready.values()):
            console.print(f"[red]not ready after {ready_timeout_s}s: {[n for n, ok in ready.items() if not ok]}")
            return 1
        print_banner(stack, time.monotonic() - started)
        if simulate:
            stack.children["simulator"] = spawn(
                [sys.executable, "-m", "hub", "simulate", "--rate", str(rate),
                 "--identity-url", stack.url("identity"), "--booking-url", stack.url("booking"),
                 "--loyalty-url", stack.url("loyalty"), "--feedback-url", stack.url("feedback"),
                 "--insights-url", stack.url("insights"),
                 "--api-key", stack.demo_key],
                env=stack.env, log_path=home / "logs" / "simulator.log")
            console.print(f"Simulated chain: ~{rate:g} touchpoints/s (log: {home / 'logs' / 'simulator.log'})")
        while not stopping:
            supervise(stack)
            time.sleep(0.5)
        return 0
    finally:
        shutdown(stack)


def supervise(stack: Stack) -> None:
    """Restart a child that died, with a growing pause, so the platform heals by itself."""
    if stack.postgres is not None:
        recover_postgres(stack)
    if stack.broker and stack.broker.process.poll() is not None:
        recover_broker(stack)
    for name, proc in list(stack.children.items()):
        if proc.poll() is None:
            continue
        count = stack.restarts.get(name, 0) + 1
        stack.restarts[name] = count
        console.print(f"[yellow]{name} exited ({proc.returncode}); restarting (#{count})")
        time.sleep(min(10, count))
        if name == "simulator":
            stack.children[name] = spawn(proc.args, env=stack.env, log_path=stack.home / "logs" / "simulator.log")
        else:
            start_service(stack, name)


def recover_postgres(stack: Stack, grace_s: float = 5) -> None:
    """Start the embedded Postgres again if it stays down for `grace_s` (a restart someone else runs,
    `pg_ctl restart`, gets that long to finish); the services reconnect by themselves."""
    if embedded_postgres_running(stack.postgres.pgdata):
        stack.postgres_down_since = None
        return
    if stack.postgres_down_since is None:
        stack.postgres_down_since = time.monotonic()
    elif time.monotonic() - stack.postgres_down_since >= grace_s:
        console.print("[yellow]the embedded Postgres is down; starting it again (the services reconnect)")
        try:
            stack.postgres.ensure_postgres_running()
        except Exception as exc:  # e.g. a restart racing us: look again on the next round
            console.print(f"[red]could not start Postgres yet: {exc!r}")
        stack.postgres_down_since = None


def recover_broker(stack: Stack) -> None:
    """The embedded broker keeps messages in memory, so a new one starts empty: topics, consumer
    offsets and faust changelogs are gone. Start it again on the same port and restart the services
    with their outboxes re-publishing everything they published to the lost broker (the consumers are
    idempotent), so every accepted event still reaches the end of the pipeline.

    The services stop before the new broker starts: a client of the lost broker that reached the new
    one would create the topics with the broker's default partition count (its metadata requests
    auto-create them), and a consumer holding a batch of the lost broker would commit that batch's
    offsets into the new broker's group, where they skip messages that were never read."""
    lost_since = stack.broker_started_at - timedelta(seconds=5)  # margin for clock reads across processes
    console.print(f"[yellow]the embedded broker exited ({stack.broker.process.returncode}); starting a new "
                  f"one and replaying the outboxes since {lost_since.isoformat()}")
    services = [name for name in SERVICE_PORTS if name in stack.children]
    for name in services:  # at once: with no broker to flush to, each may wait out its timeouts
        stack.children[name].terminate()
    for name in services:
        stop_process(stack.children[name], 10)
    start_embedded_broker(stack, stack.broker.port)
    stack.replay_since = lost_since.isoformat()
    try:
        for name in services:
            start_service(stack, name)
    finally:
        stack.replay_since = None
    write_state(stack)
