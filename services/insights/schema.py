"""ClickHouse tables as one column list each; the DDL in deploy/clickhouse is rendered from these
(`hub docs` writes it, a snapshot test keeps it in step)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from shared.generated import sync_files


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str, str], ...]  # (name, type, comment)
    engine: str
    order_by: str
    partition_by: str | None = None
    indexes: tuple[str, ...] = ()
    comment: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c[0] for c in self.columns if "DEFAULT" not in c[1] and "MATERIALIZED" not in c[1]]


TOUCHPOINTS = Table(
    name="touchpoints",
    comment="Every resolved touchpoint, once: ReplacingMergeTree collapses redeliveries of an event_id "
            "and keeps the latest attribution when a merge or split re-attributes it.",
    columns=(
        ("event_id", "UUID", "the producer's id; deduplication key"),
        ("tenant_id", "LowCardinality(String)", "the chain"),
        ("store_id", "LowCardinality(String)", "empty for online touchpoints"),
        ("customer_id", "UUID", "canonical customer from identity resolution"),
        ("type", "LowCardinality(String)", "event type, e.g. service.performed"),
        ("schema_version", "UInt16", "version the payload was upcast to"),
        ("channel", "LowCardinality(String)", "app, wechat_miniprogram, web, pos, phone, walk_in, social, ads"),
        ("source", "LowCardinality(String)", "producing service or integration"),
        ("occurred_at", "DateTime64(3, 'UTC')", "when it happened (event time)"),
        ("recorded_at", "DateTime64(3, 'UTC')", "when the hub accepted it"),
        ("identifier_types", "Array(LowCardinality(String))", "types only; values stay in identity"),
        ("payload", "String CODEC(ZSTD(3))", "the type's payload as JSON"),
        ("trace_id", "String", "OpenTelemetry trace of this touchpoint"),
        ("attribution_version", "UInt64", "raised when the event is re-attributed to another customer"),
        ("stored_at", "DateTime64(3, 'UTC') DEFAULT now64(3)", "when it reached ClickHouse"),
    ),
    engine="ReplacingMergeTree(attribution_version)",
    partition_by="toYYYYMM(occurred_at)",
    order_by="(tenant_id, toDate(occurred_at), event_id)",
    indexes=(
        "INDEX event_id_bf event_id TYPE bloom_filter GRANULARITY 4",
        "INDEX customer_id_bf customer_id TYPE bloom_filter GRANULARITY 4",
    ),
)

TABLES = (TOUCHPOINTS,)


def render(table: Table) -> str:
    cols = [f"    `{n}` {t} COMMENT '{c.replace(chr(39), chr(92) + chr(39))}'" for n, t, c in table.columns]
    body = ",\n".join(cols + [f"    {i}" for i in table.indexes])
    lines = [
        f"-- {table.comment}",
        f"CREATE TABLE IF NOT EXISTS ${{database}}.{table.name}\n(\n{body}\n)",
        f"ENGINE = {table.engine}",
    ]
    if table.partition_by:
        lines.append(f"PARTITION BY {table.partition_by}")
    lines.append(f"ORDER BY {table.order_by}")
    return "\n".join(lines) + ";\n"


def rendered_migrations() -> dict[str, str]:
    """File name under deploy/clickhouse -> its content."""
    return {f"{i + 1:04d}_{t.name}.sql": render(t) for i, t in enumerate(TABLES)}


if __name__ == "__main__":  # `hub docs` runs this: prints each stale file
    ddl_dir = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
    for stale_path in sync_files(ddl_dir, rendered_migrations(), "--check" in sys.argv):
        print(stale_path)
