"""The pieces every service's composition root assembles: database + migrations, producer, outbox
relay, consumer loops, and the readiness checks over all of them. Nothing here runs at import."""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer

from shared.auth import KeyVerifier
from shared.bus.consumer import BatchHandler, ConsumerLoop
from shared.bus.outbox import OUTBOX_MIGRATION, OutboxRelay
from shared.bus.worker import BackgroundWorker
from shared.bus.producer import ensure_topics, make_producer
from shared.db import Database, migrate, sql_files
from shared.http import create_service_app
from shared.settings import ServiceSettings
from shared.telemetry import setup_tracing
from shared.topics import TopicSpec, all_topics

log = logging.getLogger(__name__)


def broker_reachable(bootstrap_servers: str, timeout: float = 1.0) -> bool:
    """Some bootstrap server accepts a TCP connection (the clients handle the protocol-level retries)."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def warn_without_autovacuum(db: Database) -> bool:
    """Whether the server runs autovacuum; a warning when it does not. Its ANALYZE keeps the planner's
    statistics in step with tables that grow from empty: without it the book, the identifiers and the
    outbox are planned as if still empty, and reads scan far more than they need (measured: a booking
    hold took 14.6 ms instead of 4.3 ms a few thousand appointments later)."""
    with db.transaction() as cur:
        cur.execute("show autovacuum")
        on = cur.fetchone()[0] == "on"
    if not on:
        log.warning("Postgres runs with autovacuum off: run ANALYZE regularly (or turn autovacuum on), or "
                    "queries will be planned on statistics of empty tables")
    return on


@dataclass
class ConsumerSpec:
    spec: TopicSpec
    group: str
    handler: BatchHandler
    max_records: int = 500
    wanted: Callable[[], bool] | None = None  # see ConsumerLoop


@dataclass
class ServiceRuntime:
    settings: ServiceSettings
    schema: str
    migrations_dir: Path
    db: Database | None = None
    producer: KafkaProducer | None = None
    relay: OutboxRelay | None = None
    consumers: list[ConsumerLoop] = field(default_factory=list)
    workers: list[BackgroundWorker] = field(default_factory=list)

    def start_database(self) -> Database:
        self.db = Database(self.settings.database_url, maxconn=16, application_name=self.settings.service_name,
                           search_path=self.schema)
        migrate(self.db, self.schema, [OUTBOX_MIGRATION] + sql_files(self.migrations_dir))
        warn_without_autovacuum(self.db)
        return self.db

    def start_messaging(self, consumer_specs: list[ConsumerSpec] = (), workers: list[BackgroundWorker] = ()) -> None:
        s = self.settings
        ensure_topics(s.kafka_bootstrap_servers, all_topics(), prefix=s.topic_prefix,
                      replication_factor=s.kafka_replication_factor)
        self.producer = make_producer(s.kafka_bootstrap_servers, client_id=s.service_name)
        if not s.run_workers:
            return
        self.relay = OutboxRelay(self.db, self.schema, self.producer, topic_prefix=s.topic_prefix,
                                 replay_since=s.outbox_replay_since, service=s.service_name)
        self.relay.start()
        for c in consumer_specs:
            loop = ConsumerLoop(
                spec=c.spec, group_id=f"{s.topic_prefix}{c.group}", handler=c.handler,
                bootstrap_servers=s.kafka_bootstrap_servers, dlq_producer=self.producer,
                service=s.service_name, topic_prefix=s.topic_prefix, max_records=c.max_records,
                session_timeout_ms=s.consumer_session_timeout_ms, wanted=c.wanted,
            )
            loop.start()
            self.consumers.append(loop)
        for worker in workers:
            worker.start()
            self.workers.append(worker)

    def stop(self) -> None:
        workers = [*self.workers, *self.consumers]
        for worker in workers:  # all at once: each consumer takes a while to leave its group
            worker.signal_stop()
        for worker in workers:
            worker.join(15)
        if self.relay:
            self.relay.stop()
        if self.producer:
            self.producer.close(timeout=10)
        if self.db:
            self.db.close()

    def readiness_checks(self) -> dict:
        def database():
            return (self.db is not None and self.db.ping()), "postgres"

        def kafka():
            return broker_reachable(self.settings.kafka_bootstrap_servers), "broker"

        def workers():
            threads = [t for t in [self.relay, *self.consumers, *self.workers] if t is not None]
            dead = [t.name for t in threads if not t.is_alive()]
            stale = [c.name for c in self.consumers if c.last_poll_at and time.monotonic() - c.last_poll_at > 60]
            errors = {t.name: t.last_error for t in threads if t.last_error}
            ok = not dead and not stale and not errors
            return ok, ("ok" if ok else f"dead={dead} stale={stale} errors={errors}")

        return {"postgres": database, "kafka": kafka, "workers": workers}


def runtime_lifespan(runtime: ServiceRuntime, consumers: Callable[[Database], list[ConsumerSpec]] = lambda db: [],
                     workers: Callable[[Database], list[BackgroundWorker]] = lambda db: []):
    """FastAPI lifespan: migrate and start workers before serving, stop them after."""

    @asynccontextmanager
    async def lifespan(app):
        def start():
            app.state.db = runtime.start_database()
            runtime.start_messaging(consumers(app.state.db), workers(app.state.db))

        await asyncio.to_thread(start)
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.stop)

    return lifespan


def service_app(*, settings: ServiceSettings, title: str, description: str, routers=(),
                consumers: Callable[[Database], list[ConsumerSpec]] = lambda db: [], migrations_dir: Path,
                workers: Callable[[Database], list[BackgroundWorker]] = lambda db: []):
    """The HTTP app of a Postgres-backed service: its schema (named after it), outbox relay, consumers,
    background workers, API keys, ops routes."""
    setup_tracing(settings.service_name)
    runtime = ServiceRuntime(settings, schema=settings.service_name, migrations_dir=migrations_dir)
    app = create_service_app(
        title=f"Customer hub — {title}", description=description, settings=settings,
        key_verifier=KeyVerifier.from_settings(settings), readiness=runtime.readiness_checks(),
        routers=list(routers), lifespan=runtime_lifespan(runtime, consumers, workers),
    )
    app.state.runtime = runtime
    return app
