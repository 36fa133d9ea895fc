"""ClickHouse access for insights: a server over HTTP when CLICKHOUSE_URL is set, otherwise the real
ClickHouse engine in-process (chdb). The embedded engine allows one owning process, so that process
both writes (the faust agent) and serves reads (the API); a lock serialises calls into it."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from uuid import UUID

import clickhouse_connect
import orjson

from services.insights.schema import TOUCHPOINTS
from shared.erasure import NIL_CUSTOMER_ID
from shared.events import Touchpoint

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"


def touchpoint_row(event: Touchpoint, trace_id: str, attribution_version: int = 0) -> list:
    """One row of the touchpoints table, in TOUCHPOINTS.column_names order."""
    return [
        event.event_id, event.tenant_id, event.store_id or "", event.customer_id, event.type,
        event.schema_version, event.channel.value, event.source, event.occurred_at, event.recorded_at,
        [i.type for i in event.identifiers], orjson.dumps(event.payload.model_dump(mode="json")).decode(),
        trace_id, attribution_version,
    ]


class Warehouse:
    def __init__(self, *, url: str | None, path: str, database: str):
        self.database = database
        self._lock = threading.Lock()
        if url:
            self.client = clickhouse_connect.get_client(dsn=url)
            self.embedded = False
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            self.client = clickhouse_connect.get_client(interface="chdb", path=path)
            self.embedded = True

    def migrate(self, directory: Path = MIGRATIONS_DIR) -> list[str]:
        db = self.database
        applied = []
        with self._lock:
            self.client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
            self.client.command(
                f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (name String, applied_at DateTime DEFAULT now()) "
                "ENGINE = MergeTree ORDER BY name"
            )
            done = {r[0] for r in self.client.query(f"SELECT name FROM {db}.schema_migrations").result_rows}
            for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
                if path.stem in done:
                    continue
                for statement in Template(path.read_text()).substitute(database=db).split(";\n"):
                    if statement.strip() and not all(l.startswith("--") for l in statement.strip().splitlines()):
                        self.client.command(statement)
                self.client.insert(f"{db}.schema_migrations", [[path.stem]], column_names=["name"])
                applied.append(path.stem)
        return applied

    def ping(self) -> bool:
        with self._lock:
            return self.client.command("SELECT 1") == 1

    def insert_touchpoints(self, rows: list[list]) -> None:
        if not rows:
            return
        with self._lock:
            self.client.insert(f"{self.database}.{TOUCHPOINTS.name}", rows, column_names=TOUCHPOINTS.column_names)

    def get_touchpoint(self, tenant_id: str, event_id: UUID) -> dict | None:
        with self._lock:
            result = self.client.query(
                f"SELECT * FROM {self.database}.{TOUCHPOINTS.name} FINAL "
                "WHERE tenant_id = {tenant:String} AND event_id = {event_id:UUID} LIMIT 1",
                parameters={"tenant": tenant_id, "event_id": str(event_id)},
            )
        if not result.result_rows:
            return None
        row = dict(zip(result.column_names, result.result_rows[0]))
        for key in ("occurred_at", "recorded_at", "stored_at"):
            if isinstance(row[key], datetime) and row[key].tzinfo is None:
                row[key] = row[key].replace(tzinfo=UTC)  # stored as UTC instants
        row["payload"] = orjson.loads(row["payload"])
        return row

    def touchpoint_summary(self, tenant_id: str) -> dict:
        """Counts of stored touchpoints by type, channel and store, and the newest event time."""
        table = f"{self.database}.{TOUCHPOINTS.name}"
        out: dict = {}
        with self._lock:
            for dim in ("type", "channel", "store_id"):
                rows = self.client.query(
                    f"SELECT {dim}, count() FROM {table} FINAL WHERE tenant_id = {{tenant:String}} "
                    f"GROUP BY {dim} ORDER BY count() DESC", parameters={"tenant": tenant_id}).result_rows
                out[f"by_{dim.removesuffix('_id')}"] = {k: v for k, v in rows}
            total, customers, newest = self.client.query(
                f"SELECT count(), uniqExact(customer_id), max(occurred_at) FROM {table} FINAL "
                "WHERE tenant_id = {tenant:String}", parameters={"tenant": tenant_id}).result_rows[0]
        out.update(total=total, customers=customers, newest_occurred_at=newest.replace(tzinfo=UTC) if total else None)
        return out

    def count_touchpoints(self, tenant_id: str | None = None) -> int:
        where = "WHERE tenant_id = {tenant:String}" if tenant_id else ""
        with self._lock:
            return self.client.query(
                f"SELECT count() FROM {self.database}.{TOUCHPOINTS.name} FINAL {where}",
                parameters={"tenant": tenant_id} if tenant_id else None,
            ).result_rows[0][0]

    def anonymise_customers(self, tenant_id: str, customer_ids: Sequence[UUID]) -> int:
        """Erasure: every stored row of these customers (in this tenant) gets the nil customer id and an
        empty payload; returns how many touchpoints (distinct event ids) that touched.

        An `ALTER TABLE ... UPDATE` mutation rewrites the parts holding the rows, so the old values are
        gone from the active parts when it returns (`mutations_sync=2`: finished on every replica; a
        lightweight UPDATE would only add patch parts and leave the values on disk until a merge). The
        replaced parts stay on disk, inactive, until `old_parts_lifetime` (8 minutes by default) has passed.
        Count and mutation run under the lock that every insert of this process takes."""
        table = f"{self.database}.{TOUCHPOINTS.name}"
        where = "tenant_id = {tenant:String} AND customer_id IN {customer_ids:Array(UUID)}"
        params = {"tenant": tenant_id, "customer_ids": [str(c) for c in customer_ids]}
        with self._lock:
            touched = self.client.query(f"SELECT uniqExact(event_id) FROM {table} WHERE {where}",
                                        parameters=params).result_rows[0][0]
            if touched:
                self.client.command(
                    f"ALTER TABLE {table} UPDATE customer_id = toUUID('{NIL_CUSTOMER_ID}'), payload = '{{}}' "
                    f"WHERE {where}", parameters=params, settings={"mutations_sync": 2})
        return touched

    def close(self) -> None:
        with self._lock:
            self.client.close()
