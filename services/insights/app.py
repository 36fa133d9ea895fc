"""Insights' composition root: ClickHouse (server or embedded engine), the faust processors in this
process's event loop, and the read API."""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from services.insights import api, dashboard, page
from services.insights.processors import build_processor
from services.insights.settings import InsightsSettings
from services.insights.warehouse import Warehouse
from shared.auth import KeyVerifier
from shared.bus.producer import ensure_topics
from shared.http import create_service_app
from shared.telemetry import setup_tracing
from shared.topics import all_topics


def create_app(settings: InsightsSettings | None = None):
    settings = settings or InsightsSettings()
    setup_tracing(settings.service_name)
    @asynccontextmanager
    async def lifespan(app):
        app.state.warehouse = await asyncio.to_thread(Warehouse.open, settings)
        if settings.run_processors:
            await asyncio.to_thread(ensure_topics, settings.kafka_bootstrap_servers, all_topics(),
                                    prefix=settings.topic_prefix,
                                    replication_factor=settings.kafka_replication_factor)
            app.state.processor = build_processor(settings, app.state.warehouse)
            await app.state.processor.start()
        try:
            yield
        finally:
            if app.state.processor is not None:
                await app.state.processor.stop()
            await asyncio.to_thread(app.state.warehouse.close)

    def clickhouse():
        warehouse = app.state.warehouse
        return (warehouse is not None and warehouse.ping()), "clickhouse"

    def processors():
        p = app.state.processor
        if not settings.run_processors:
            return True, "not run in this process"
        if p is None or p.should_stop or p.crashed:
            return False, "faust worker not running"
        stats = p.hub_stats
        if stats["last_error"]:
            return False, f"sink failing: {stats['last_error']}"
        idle = time.monotonic() - stats["last_batch_at"] if stats["last_batch_at"] else None
        return True, f"stored={stats['stored']} erased={stats['erased']} dead_lettered={stats['dead_lettered']} idle_s={idle and round(idle)}"

    app = create_service_app(
        title="Customer hub — insights",
        description="Stream processors (faust) into ClickHouse, and reads over them.",
        settings=settings,
        key_verifier=KeyVerifier.from_settings(settings),
        readiness={"clickhouse": clickhouse, "processors": processors},
        routers=[api.touchpoints, dashboard.routes, dashboard.stores, page.page],
        lifespan=lifespan,
    )
    app.state.warehouse = app.state.processor = None  # set by the lifespan
    app.state.settings = settings
    return app
