"""Real engines for every test that needs one, chosen once per session:

- Docker engine answers  -> testcontainers (Apache Kafka, Postgres, ClickHouse server);
- otherwise               -> the local Postgres (or an embedded pgserver), a fresh embedded tansu broker,
                             and the real ClickHouse engine in-process (chdb).
TEST_DATABASE_URL / TEST_KAFKA_BOOTSTRAP_SERVERS / TEST_CLICKHOUSE_URL point at servers you run yourself.
Each test gets its own database, topic prefix and ClickHouse database, so tests never see each other.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from hypothesis import settings as hypothesis_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import shared.telemetry
from hub.embedded import port_open, start_broker, start_postgres

ROOT = Path(__file__).resolve().parents[1]
SPANS = InMemorySpanExporter()
# Shared, noisy CI machines: judge properties, never per-example wall-clock time.
hypothesis_settings.register_profile("hub", deadline=None)
hypothesis_settings.load_profile("hub")


def pytest_configure(config):
    # One in-memory tracer provider for the whole test process, so tests can read the spans.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)
    shared.telemetry._configured = True


def _docker_engine() -> bool:
    if os.environ.get("HUB_TESTS_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_engine() -> bool:
    return _docker_engine()


@pytest.fixture(scope="session")
def pg_admin_dsn(docker_engine, tmp_path_factory):
    """A DSN with rights to create databases."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
    elif docker_engine:
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()
    elif port_open("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        server, dsn = start_postgres(tmp_path_factory.mktemp("pg"))
        yield dsn
        server.cleanup()


def _with_database(dsn: str, name: str) -> str:
    from psycopg2.extensions import make_dsn, parse_dsn

    return make_dsn(**{**parse_dsn(dsn), "dbname": name})


class DatabaseJanitor:
    """Drops the tests' databases on a thread of its own: DROP DATABASE waits for a checkpoint (seconds
    on a busy machine), which tests need not sit through. The session waits for it at the end."""

    def __init__(self, admin_dsn: str):
        self.admin_dsn, self.names = admin_dsn, queue.Queue()
        self.thread = threading.Thread(target=self._drop_all, name="database-janitor", daemon=True)
        self.thread.start()

    def _drop_all(self) -> None:
        admin = psycopg2.connect(self.admin_dsn)
        admin.autocommit = True
        while (name := self.names.get()) is not None:
            with admin.cursor() as cur:
                cur.execute(f'drop database if exists "{name}" with (force)')
        admin.close()

    def finish(self) -> None:
        self.names.put(None)
        self.thread.join(300)


@pytest.fixture(scope="session")
def database_janitor(pg_admin_dsn):
    janitor = DatabaseJanitor(pg_admin_dsn)
    yield janitor
    janitor.finish()


def serve_in_thread(app, name: str, timeout_s: float = 60):
    """An ASGI app under uvicorn on a free port, in a daemon thread of this process, once it listens:
    (server, thread, port). Stop it with `server.should_exit = True` and join the thread."""
    import uvicorn

    from hub.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during startup"
        assert time.monotonic() < deadline, f"uvicorn did not start in {timeout_s:.0f} s"
        time.sleep(0.05)
    return server, thread, port


def create_database(pg_admin_dsn: str) -> tuple[str, str]:
    """A brand-new, empty database: (its name, its DSN)."""
    name = f"hub_t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}"')
    admin.close()
    return name, _with_database(pg_admin_dsn, name)


@pytest.fixture
def database_url(pg_admin_dsn, database_janitor):
    """A brand-new, empty database for one test."""
    name, url = create_database(pg_admin_dsn)
    yield url
    database_janitor.names.put(name)


@pytest.fixture(scope="session")
def kafka_bootstrap(docker_engine, tmp_path_factory):
    if servers := os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
    elif docker_engine:
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        broker = start_broker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
        yield broker.bootstrap
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture(scope="session")
def clickhouse_target(docker_engine, tmp_path_factory) -> dict:
    """Where ClickHouse lives: a server URL, or one embedded data directory for this process (the
    embedded engine allows one directory per process)."""
    if url := os.environ.get("TEST_CLICKHOUSE_URL"):
        yield {"url": url, "path": ""}
    elif docker_engine:
        from testcontainers.community.clickhouse import ClickHouseContainer

        with ClickHouseContainer() as ch:
            host, port = ch.get_container_host_ip(), ch.get_exposed_port(8123)
            yield {"url": f"http://{ch.username}:{ch.password}@{host}:{port}", "path": ""}
    else:
        yield {"url": None, "path": str(tmp_path_factory.mktemp("clickhouse"))}


@pytest.fixture
def clickhouse_database() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def service_env(database_url, kafka_bootstrap, topic_prefix, clickhouse_target, clickhouse_database, tmp_path):
    """Settings values for building any service against this test's engines."""
    return {
        "database_url": database_url,
        "kafka_bootstrap_servers": kafka_bootstrap,
        "topic_prefix": topic_prefix,
        "demo_api_key": "test-demo-key",
        "auth_secret": "test-secret",
        "clickhouse_url": clickhouse_target["url"],
        "clickhouse_path": clickhouse_target["path"],
        "clickhouse_database": clickhouse_database,
        "data_dir": str(tmp_path / "faust"),
        "consumer_session_timeout_ms": 6000,
    }


@pytest.fixture
def spans():
    SPANS.clear()
    return SPANS
