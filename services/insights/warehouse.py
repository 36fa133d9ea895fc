"""ClickHouse access for insights: a server over HTTP when CLICKHOUSE_URL is set, otherwise the real
ClickHouse engine in-process (chdb). The embedded engine allows one owning process, so that process
both writes (the faust agent) and serves reads (the API); a lock serialises calls into it."""
from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from uuid import UUID

import clickhouse_connect
import orjson

from services.insights.schema import (
    CASE_EVENTS, CUSTOMER_SCORES, CUSTOMER_STATE, LIFECYCLE_TRANSITIONS, STORES, SURVEY_ANSWERS, TOUCHPOINTS, Table,
)
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

    @classmethod
    def open(cls, settings) -> "Warehouse":
        """The warehouse an InsightsSettings names, migrated: what the app, the CLI and tests start from."""
        warehouse = cls(url=settings.clickhouse_url, path=settings.clickhouse_path,
                        database=settings.clickhouse_database)
        warehouse.migrate()
        return warehouse

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
        self.insert_many({TOUCHPOINTS: rows})

    def insert_many(self, rows_by_table: dict[Table, list[list]]) -> None:
        """One insert per table, in the given order (facts before the state that says they were applied)."""
        with self._lock:
            for table, rows in rows_by_table.items():
                if rows:
                    self.client.insert(f"{self.database}.{table.name}", rows, column_names=table.column_names)

    def query(self, sql: str, parameters: dict | None = None) -> tuple[list[str], list[tuple]]:
        """A read with `{db}` standing for the database; returns column names and rows."""
        with self._lock:
            result = self.client.query(sql.replace("{db}", self.database), parameters=parameters)
        return list(result.column_names), result.result_rows

    def load_states(self, tenant_id: str, customer_ids: Sequence[str]) -> dict[str, str]:
        """Latest stored digest of each of these customers that has one (and was not merged away or erased)."""
        if not customer_ids:
            return {}
        _, rows = self.query(
            f"SELECT customer_id, state FROM {{db}}.{CUSTOMER_STATE.name} FINAL WHERE tenant_id = {{tenant:String}} "
            "AND customer_id IN {ids:Array(UUID)} AND deleted = 0",
            {"tenant": tenant_id, "ids": list(customer_ids)})
        return {str(c): state for c, state in rows}

    def state_pages(self, tenant_id: str | None = None, page: int = 5000):
        """Every live digest, a page at a time (the daily re-scoring walks them)."""
        after = "00000000-0000-0000-0000-000000000000"
        tenant_filter = "AND tenant_id = {tenant:String}" if tenant_id else ""
        last_tenant = ""
        while True:
            _, rows = self.query(
                f"SELECT tenant_id, customer_id, state FROM {{db}}.{CUSTOMER_STATE.name} FINAL "
                f"WHERE (tenant_id, customer_id) > ({{lt:String}}, {{after:UUID}}) AND deleted = 0 {tenant_filter} "
                f"ORDER BY tenant_id, customer_id LIMIT {page}", {"lt": last_tenant, "after": after, "tenant": tenant_id})
            if not rows:
                return
            yield rows
            last_tenant, after = rows[-1][0], str(rows[-1][1])

    def reattribute(self, tenant_id: str, moves: Mapping[str, str], event_ids: Sequence[str] | None = None) -> None:
        """Touchpoints of each customer in `moves` (only `event_ids` of them, for a split) now belong to the
        customer it maps to: rewritten with a higher attribution_version, which ReplacingMergeTree keeps.
        One statement for many merges: each reads the tenant's touchpoints."""
        columns = TOUCHPOINTS.column_names
        new_owner = "toUUID(transform(toString(customer_id), {froms:Array(String)}, {tos:Array(String)}, toString(customer_id)))"
        select = ", ".join(new_owner if c == "customer_id" else
                           "attribution_version + 1" if c == "attribution_version" else c for c in columns)
        only_events = "AND event_id IN {events:Array(UUID)}" if event_ids is not None else ""
        froms = list(moves)
        with self._lock:
            self.client.command(
                f"INSERT INTO {self.database}.{TOUCHPOINTS.name} ({', '.join(columns)}) SELECT {select} "
                f"FROM {self.database}.{TOUCHPOINTS.name} FINAL WHERE tenant_id = {{tenant:String}} "
                f"AND customer_id IN {{ids:Array(UUID)}} {only_events}",
                parameters={"tenant": tenant_id, "ids": froms, "froms": froms, "tos": [moves[f] for f in froms],
                            "events": list(event_ids or [])})

    def learn_intervals(self, tenant_id: str, before: datetime | None = None, min_gaps: int = 30) -> dict[str, float]:
        """Median days between one customer's consecutive paid visits of a service category, per category
        with at least `min_gaps` such gaps — what a chain's customers actually do (groom every 6 weeks …)."""
        before_filter = "AND occurred_at < {before:DateTime64(3)}" if before else ""
        _, rows = self.query(
            "SELECT category, median(gap) AS days, count() AS gaps FROM ("
            " SELECT category, day - lagInFrame(day) OVER (PARTITION BY customer_id, category ORDER BY day "
            "   ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS gap, row_number() OVER "
            "   (PARTITION BY customer_id, category ORDER BY day) AS n"
            " FROM (SELECT DISTINCT customer_id, toDate(occurred_at) AS day, if(type = 'purchase.completed', "
            "   'retail', JSONExtractString(payload, 'service_category')) AS category"
            f"  FROM {{db}}.{TOUCHPOINTS.name} FINAL WHERE tenant_id = {{tenant:String}} {before_filter}"
            "   AND type IN ('booking.completed', 'service.performed', 'purchase.completed')"
            "   AND JSONExtractInt(payload, 'amount_minor') > 0)"
            ") WHERE n > 1 AND gap > 0 GROUP BY category HAVING gaps >= {min_gaps:UInt32}",
            {"tenant": tenant_id, "before": before, "min_gaps": min_gaps})
        return {category: float(days) for category, days, _ in rows}

    def tenants(self) -> list[str]:
        _, rows = self.query(f"SELECT DISTINCT tenant_id FROM {{db}}.{CUSTOMER_STATE.name}")
        return [t for (t,) in rows]

    def save_store(self, tenant_id: str, store_id: str, name: str, timezone: str) -> None:
        self.insert_many({STORES: [[tenant_id, store_id, name, timezone, datetime.now(UTC)]]})

    def stores(self, tenant_id: str | None = None) -> dict[tuple[str, str], tuple[str, str]]:
        """(tenant, store) -> (name, zone) of every configured store."""
        where = "WHERE tenant_id = {tenant:String}" if tenant_id else ""
        _, rows = self.query(f"SELECT tenant_id, store_id, name, timezone FROM {{db}}.{STORES.name} FINAL {where}",
                             {"tenant": tenant_id})
        return {(t, s): (n, z) for t, s, n, z in rows}

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

    def freshness(self, tenant_id: str, since: datetime) -> dict:
        """How long touchpoints recorded since `since` took from identity's acceptance (recorded_at) to
        ClickHouse (stored_at): the pipeline's lag as ops and the benchmark see it. FINAL: a redelivered
        touchpoint waiting for its merge counts once."""
        with self._lock:
            count, p50, p95, p99, worst = self.client.query(
                "SELECT count(), quantile(0.5)(f), quantile(0.95)(f), quantile(0.99)(f), max(f) FROM (SELECT "
                f"dateDiff('millisecond', recorded_at, stored_at) / 1000 AS f FROM {self.database}.{TOUCHPOINTS.name} "
                "FINAL WHERE tenant_id = {tenant:String} AND recorded_at >= {since:DateTime64(3)})",
                parameters={"tenant": tenant_id, "since": since}).result_rows[0]
        seconds = (lambda v: round(v, 3) if count else None)
        return {"count": count, "p50_s": seconds(p50), "p95_s": seconds(p95), "p99_s": seconds(p99),
                "max_s": seconds(worst)}

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
            for derived in (SURVEY_ANSWERS, CASE_EVENTS):  # the answers count on, anonymously
                self.client.command(
                    f"ALTER TABLE {self.database}.{derived.name} UPDATE customer_id = toUUID('{NIL_CUSTOMER_ID}') "
                    f"WHERE {where}", parameters=params, settings={"mutations_sync": 2})
            for derived in (CUSTOMER_STATE, CUSTOMER_SCORES, LIFECYCLE_TRANSITIONS):  # about the person: gone
                self.client.command(f"ALTER TABLE {self.database}.{derived.name} DELETE WHERE {where}",
                                    parameters=params, settings={"mutations_sync": 2})
        return touched

    def close(self) -> None:
        with self._lock:
            self.client.close()
